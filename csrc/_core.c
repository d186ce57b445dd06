/*
 * _core.c - the one file that sees Python: it parses arguments, converts
 * them to C-contiguous float64 / int64 buffers (copying only when needed,
 * never writing into the caller's arrays), checks shapes again, allocates
 * outputs and scratch, releases the GIL around the kernels and turns a
 * kernel's status into an exception.  Every public check of values (NaN,
 * labels, parameters) lives in the Python layer; what is checked here is
 * what the kernels need in order never to read or write out of bounds.
 */
#define RLHF_CORE_MAIN
#include "_core.h"

#include <stdlib.h>
#ifndef _WIN32
#include <pthread.h>
#endif

#include "rlhf.h"

/* One table from kernel status to exception. */
static PyObject *raise_status(int status, const char *where)
{
    switch (status) {
    case RLHF_ENOMEM:
        PyErr_Format(PyExc_MemoryError,
                     "%s: a scratch buffer the kernel allocates could not "
                     "be had", where);
        return NULL;
    case RLHF_EVALUE:
        PyErr_Format(PyExc_ValueError, "%s: an argument is out of range",
                     where);
        return NULL;
    case RLHF_ENONFINITE:
        PyErr_Format(PyExc_ValueError,
                     "%s: the objective or its gradient is not finite "
                     "(NaN or infinity) at the starting point",
                     where);
        return NULL;
    case RLHF_ECALLBACK:
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_RuntimeError, "%s: the objective failed",
                         where);
        }
        return NULL;
    case RLHF_ENOTPD:
        PyErr_Format(PyExc_ArithmeticError,
                     "%s: the Hessian is not positive definite", where);
        return NULL;
    case RLHF_EINTR:
        /* the interrupt hook left the signal handler's exception set */
        if (!PyErr_Occurred()) {
            PyErr_SetNone(PyExc_KeyboardInterrupt);
        }
        return NULL;
    default:
        PyErr_Format(PyExc_SystemError, "%s: unknown status %d", where,
                     status);
        return NULL;
    }
}

PyObject *core_raise_status(int status, const char *where)
{
    return raise_status(status, where);
}

/* An aligned, C-contiguous array of the given type converted with the
 * given NumPy flags, or NULL. */
static PyArrayObject *as_array_with(PyObject *obj, int typenum, int ndim,
                                    const char *name, int flags)
{
    /* the wrappers convert their arguments one after another and check
     * them together: after a failed conversion (its exception set) the
     * next ones must not run, or NumPy would run with an exception set */
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OTF(obj, typenum,
                                                           flags);
    if (arr == NULL) {
        return NULL;
    }
    if (PyArray_NDIM(arr) != ndim) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be a %d-dimensional array, got %d dimensions",
                     name, ndim, PyArray_NDIM(arr));
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

PyArrayObject *core_as_array_with(PyObject *obj, int typenum, int ndim,
                                  const char *name, int flags)
{
    return as_array_with(obj, typenum, ndim, name, flags);
}

/* A read-only, aligned, C-contiguous array of the given type, or NULL. */
static PyArrayObject *as_array(PyObject *obj, int typenum, int ndim,
                               const char *name)
{
    return as_array_with(obj, typenum, ndim, name, NPY_ARRAY_IN_ARRAY);
}

/*
 * An array the kernels index with: always a private copy, so that the
 * indices checked here are the ones read with the GIL released, whatever
 * another thread writes into the caller's array meanwhile.  (Values that
 * are only computed with, never used as indices or sizes, are read from
 * the caller's buffer: a change there changes numbers, never addresses.)
 */
static PyArrayObject *as_owned_array(PyObject *obj, int typenum, int ndim,
                                     const char *name)
{
    return as_array_with(obj, typenum, ndim, name,
                         NPY_ARRAY_IN_ARRAY | NPY_ARRAY_ENSURECOPY);
}

static int check_length(PyArrayObject *arr, npy_intp expected,
                        const char *name)
{
    if (PyArray_DIM(arr, 0) != expected) {
        PyErr_Format(PyExc_ValueError, "%s must have length %zd, got %zd",
                     name, (Py_ssize_t)expected,
                     (Py_ssize_t)PyArray_DIM(arr, 0));
        return -1;
    }
    return 0;
}

/*
 * Counts the kernels size their buffers from (items, columns) are capped
 * here, so that no size computed from them overflows: real arrays hold at
 * most PY_SSIZE_T_MAX / 8 doubles, and a count a caller passes as a number
 * may not exceed that either.
 */
#define MAX_DOUBLES (PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(double))

/* Whether rows * cols + extra doubles can be addressed, computed without
 * overflow. */
static int fits_doubles(ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t extra)
{
    return rows >= 0 && cols >= 0 && extra >= 0 && extra <= MAX_DOUBLES &&
           (rows == 0 || cols <= (MAX_DOUBLES - extra) / rows);
}

/* A MemoryError that says what could not be had and how large it was
 * (n doubles; n < 0 when the size itself overflows). */
static void no_memory_for(const char *what, ptrdiff_t n)
{
    if (n < 0) {
        PyErr_Format(PyExc_MemoryError,
                     "cannot allocate %s: its size overflows", what);
        return;
    }
    char gib[32]; /* PyErr_Format has no float conversions */
    snprintf(gib, sizeof gib, "%.3g",
             (double)n * sizeof(double) / 1073741824.0);
    PyErr_Format(PyExc_MemoryError,
                 "cannot allocate %s: %zd float64 values (%s GiB)", what,
                 (Py_ssize_t)n, gib);
}

/* n doubles of scratch (at least one) for what, or NULL with a
 * MemoryError naming it. */
static double *alloc_doubles(ptrdiff_t n, const char *what)
{
    double *p = NULL;
    if (n >= 0 && n <= MAX_DOUBLES) {
        p = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    }
    if (p == NULL) {
        no_memory_for(what, n <= MAX_DOUBLES ? n : -1);
    }
    return p;
}

/* Arrays a design matrix holds; all NULL for the parts not used. */
typedef struct {
    PyArrayObject *dense, *data, *indices, *indptr;
} matrix_refs;

/* Idempotent: a second call (a caller's cleanup after a failed parse)
 * releases nothing twice. */
static void release_matrix(matrix_refs *refs)
{
    Py_CLEAR(refs->dense);
    Py_CLEAR(refs->data);
    Py_CLEAR(refs->indices);
    Py_CLEAR(refs->indptr);
}

/*
 * X is either a 2-d dense array, or a tuple (data, indices, indptr,
 * n_cols) describing CSR rows.  CSR structure is checked fully (pointers
 * non-decreasing from 0 to nnz, indices in [0, n_cols)) since a kernel
 * reading it trusts every index.
 */
static int parse_matrix(PyObject *X, rlhf_matrix *m, matrix_refs *refs)
{
    refs->dense = refs->data = refs->indices = refs->indptr = NULL;
    if (!PyTuple_Check(X)) {
        refs->dense = as_array(X, NPY_DOUBLE, 2, "X");
        if (refs->dense == NULL) {
            return -1;
        }
        m->n_rows = PyArray_DIM(refs->dense, 0);
        m->n_cols = PyArray_DIM(refs->dense, 1);
        m->dense = PyArray_DATA(refs->dense);
        m->data = NULL;
        m->indices = m->indptr = NULL;
        return 0;
    }
    PyObject *data, *indices, *indptr;
    Py_ssize_t n_cols;
    if (!PyArg_ParseTuple(X, "OOOn;X as CSR must be (data, indices, indptr, "
                             "n_cols)",
                          &data, &indices, &indptr, &n_cols)) {
        return -1;
    }
    if (n_cols < 0 || n_cols > MAX_DOUBLES / 8) {
        PyErr_Format(PyExc_ValueError,
                     "X: n_cols must be in [0, %zd], got %zd",
                     MAX_DOUBLES / 8, n_cols);
        return -1;
    }
    refs->data = as_array(data, NPY_DOUBLE, 1, "X.data");
    refs->indices = as_owned_array(indices, NPY_INT64, 1, "X.indices");
    refs->indptr = as_owned_array(indptr, NPY_INT64, 1, "X.indptr");
    if (refs->data == NULL || refs->indices == NULL || refs->indptr == NULL) {
        release_matrix(refs);
        return -1;
    }
    npy_intp nnz = PyArray_DIM(refs->data, 0);
    npy_intp n_ptr = PyArray_DIM(refs->indptr, 0);
    const int64_t *ind = PyArray_DATA(refs->indices);
    const int64_t *ptr = PyArray_DATA(refs->indptr);
    if (PyArray_DIM(refs->indices, 0) != nnz || n_ptr < 1 || ptr[0] != 0 ||
        ptr[n_ptr - 1] != nnz) {
        PyErr_SetString(PyExc_ValueError,
                        "X: CSR arrays are inconsistent (indices and data "
                        "lengths differ, or indptr does not run from 0 to "
                        "nnz)");
        release_matrix(refs);
        return -1;
    }
    for (npy_intp i = 0; i + 1 < n_ptr; i++) {
        if (ptr[i + 1] < ptr[i]) {
            PyErr_SetString(PyExc_ValueError,
                            "X: CSR indptr must be non-decreasing");
            release_matrix(refs);
            return -1;
        }
    }
    for (npy_intp k = 0; k < nnz; k++) {
        if (ind[k] < 0 || ind[k] >= n_cols) {
            PyErr_Format(PyExc_ValueError,
                         "X: CSR column index %lld is outside [0, %zd)",
                         (long long)ind[k], n_cols);
            release_matrix(refs);
            return -1;
        }
    }
    m->n_rows = n_ptr - 1;
    m->n_cols = n_cols;
    m->dense = NULL;
    m->data = PyArray_DATA(refs->data);
    m->indices = ind;
    m->indptr = ptr;
    return 0;
}

/* Everything a logistic objective holds, parsed from Python. */
typedef struct {
    rlhf_logistic problem;
    matrix_refs X;
    PyArrayObject *y, *sample_weight;
    double *scratch;
} logistic_args;

static void release_logistic(logistic_args *a)
{
    release_matrix(&a->X);
    Py_XDECREF(a->y);
    Py_XDECREF(a->sample_weight);
    free(a->scratch);
}

static int parse_logistic(logistic_args *a, PyObject *X, PyObject *y,
                          PyObject *sample_weight, int fit_intercept,
                          double scale, double alpha, int n_threads)
{
    a->y = a->sample_weight = NULL;
    a->scratch = NULL;
    if (parse_matrix(X, &a->problem.X, &a->X) < 0) {
        return -1;
    }
    a->y = as_array(y, NPY_DOUBLE, 1, "y");
    if (a->y == NULL || check_length(a->y, a->problem.X.n_rows, "y") < 0) {
        return -1;
    }
    a->sample_weight = as_array(sample_weight, NPY_DOUBLE, 1,
                                "sample_weight");
    if (a->sample_weight == NULL ||
        check_length(a->sample_weight, a->problem.X.n_rows,
                     "sample_weight") < 0) {
        return -1;
    }
    a->problem.y = PyArray_DATA(a->y);
    a->problem.sample_weight = PyArray_DATA(a->sample_weight);
    a->problem.fit_intercept = fit_intercept ? 1 : 0;
    a->problem.scale = scale;
    a->problem.alpha = alpha;
    a->problem.n_threads = n_threads;
    a->scratch = alloc_doubles(rlhf_logistic_scratch_size(&a->problem),
                               "the logistic objective's scratch");
    if (a->scratch == NULL) {
        return -1;
    }
    a->problem.scratch = a->scratch;
    return 0;
}

static npy_intp logistic_n_params(const logistic_args *a)
{
    return a->problem.X.n_cols + a->problem.fit_intercept;
}

static PyArrayObject *new_vector(npy_intp n)
{
    return (PyArrayObject *)PyArray_ZEROS(1, &n, NPY_DOUBLE, 0);
}

PyDoc_STRVAR(logistic_loss_grad_doc,
"logistic_loss_grad(X, y, sample_weight, w, fit_intercept, scale, alpha,\n"
"                   n_threads=0)\n--\n\n"
"The logistic objective and its gradient at w: (loss, grad).\n"
"X is a 2-d array or a CSR tuple (data, indices, indptr, n_cols).");

static PyObject *py_logistic_loss_grad(PyObject *Py_UNUSED(self), PyObject *args,
                                       PyObject *kwargs)
{
    static char *kwlist[] = {"X", "y", "sample_weight", "w", "fit_intercept",
                             "scale", "alpha", "n_threads", NULL};
    PyObject *X, *y, *sw, *w_obj;
    int fit_intercept, n_threads = 0, status;
    double scale, alpha, loss = 0.0;
    logistic_args a = {0};
    PyArrayObject *w = NULL, *grad = NULL;
    PyObject *result = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOpdd|i", kwlist, &X,
                                     &y, &sw, &w_obj, &fit_intercept, &scale,
                                     &alpha, &n_threads)) {
        return NULL;
    }
    if (parse_logistic(&a, X, y, sw, fit_intercept, scale, alpha,
                       n_threads) < 0) {
        goto fail;
    }
    w = as_array(w_obj, NPY_DOUBLE, 1, "w");
    if (w == NULL || check_length(w, logistic_n_params(&a), "w") < 0) {
        goto fail;
    }
    grad = new_vector(logistic_n_params(&a));
    if (grad == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_logistic_loss_grad(&a.problem, PyArray_DATA(w), &loss,
                                     PyArray_DATA(grad));
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "logistic_loss_grad");
        goto fail;
    }
    result = Py_BuildValue("dO", loss, grad);
fail:
    release_logistic(&a);
    Py_XDECREF(w);
    Py_XDECREF(grad);
    return result;
}

PyDoc_STRVAR(logistic_hessian_doc,
"logistic_hessian(X, y, sample_weight, w, fit_intercept, scale, alpha)\n--\n\n"
"The Hessian of the logistic objective at w, shape (len(w), len(w)).");

static PyObject *py_logistic_hessian(PyObject *Py_UNUSED(self), PyObject *args,
                                     PyObject *kwargs)
{
    static char *kwlist[] = {"X", "y", "sample_weight", "w", "fit_intercept",
                             "scale", "alpha", NULL};
    PyObject *X, *y, *sw, *w_obj;
    int fit_intercept, status;
    double scale, alpha;
    logistic_args a = {0};
    PyArrayObject *w = NULL, *hessian = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOpdd", kwlist, &X, &y,
                                     &sw, &w_obj, &fit_intercept, &scale,
                                     &alpha)) {
        return NULL;
    }
    if (parse_logistic(&a, X, y, sw, fit_intercept, scale, alpha, 0) < 0) {
        goto fail;
    }
    w = as_array(w_obj, NPY_DOUBLE, 1, "w");
    if (w == NULL || check_length(w, logistic_n_params(&a), "w") < 0) {
        goto fail;
    }
    npy_intp dims[2] = {logistic_n_params(&a), logistic_n_params(&a)};
    hessian = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_DOUBLE, 0);
    if (hessian == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_logistic_hessian(&a.problem, PyArray_DATA(w),
                                   PyArray_DATA(hessian));
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "logistic_hessian");
        goto fail;
    }
    release_logistic(&a);
    Py_DECREF(w);
    return (PyObject *)hessian;
fail:
    release_logistic(&a);
    Py_XDECREF(w);
    Py_XDECREF(hessian);
    return NULL;
}

PyDoc_STRVAR(logistic_fit_doc,
"logistic_fit(X, y, sample_weight, fit_intercept, scale, alpha, solver,\n"
"             gtol, ftol, max_iter, maxls, m=10, n_threads=0)\n--\n\n"
"Minimise the logistic objective from zero with solver 'lbfgs' or\n"
"'newton'.  Returns (w, loss, grad, n_iter, n_fev, status) where status is\n"
"0 (gradient test), 1 (decrease test), 2 (max_iter reached) or 3 (line\n"
"search failure).");

static PyObject *py_logistic_fit(PyObject *Py_UNUSED(self), PyObject *args,
                                 PyObject *kwargs)
{
    static char *kwlist[] = {"X", "y", "sample_weight", "fit_intercept",
                             "scale", "alpha", "solver", "gtol", "ftol",
                             "max_iter", "maxls", "m", "n_threads", NULL};
    PyObject *X, *y, *sw;
    const char *solver;
    int fit_intercept, max_iter, maxls, m = 10, n_threads = 0;
    double scale, alpha, gtol, ftol, loss = 0.0;
    int n_iter = 0, n_fev = 0, status = 0, newton;
    logistic_args a = {0};
    PyArrayObject *w = NULL, *grad = NULL;
    double *work = NULL;
    PyObject *result = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOpddsddii|ii", kwlist,
                                     &X, &y, &sw, &fit_intercept, &scale,
                                     &alpha, &solver, &gtol, &ftol, &max_iter,
                                     &maxls, &m, &n_threads)) {
        return NULL;
    }
    if (strcmp(solver, "lbfgs") == 0) {
        newton = 0;
    } else if (strcmp(solver, "newton") == 0) {
        newton = 1;
    } else {
        PyErr_Format(PyExc_ValueError,
                     "solver must be 'lbfgs' or 'newton', got '%s'", solver);
        return NULL;
    }
    if (m < 1 || maxls < 1) {
        PyErr_SetString(PyExc_ValueError, "m and maxls must be >= 1");
        return NULL;
    }
    if (parse_logistic(&a, X, y, sw, fit_intercept, scale, alpha,
                       n_threads) < 0) {
        goto fail;
    }
    npy_intp np = logistic_n_params(&a);
    w = new_vector(np);
    grad = new_vector(np);
    if (w == NULL || grad == NULL) {
        goto fail;
    }
    /* newton: np * (np + 3); lbfgs: np * (2m + 3) + 2m doubles */
    const char *work_name = newton ? "Newton's work space (the Hessian "
                                     "and its factor)"
                                   : "L-BFGS's work space";
    if (newton ? !fits_doubles(np, np + 3, 0)
               : !fits_doubles(np, 2 * (ptrdiff_t)m + 3, 2 * (ptrdiff_t)m)) {
        no_memory_for(work_name, -1);
        goto fail;
    }
    work = alloc_doubles(newton ? rlhf_newton_work_size(np)
                                : rlhf_lbfgs_work_size(np, m), work_name);
    if (work == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    if (newton) {
        status = rlhf_newton_logistic(&a.problem, PyArray_DATA(w), &loss,
                                      PyArray_DATA(grad), gtol, max_iter,
                                      work, &n_iter, &n_fev);
    } else {
        status = rlhf_lbfgs_minimize(rlhf_logistic_loss_grad, &a.problem, np,
                                     PyArray_DATA(w), &loss,
                                     PyArray_DATA(grad), m, gtol, ftol,
                                     max_iter, maxls, work, &n_iter, &n_fev);
    }
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "logistic_fit");
        goto fail;
    }
    result = Py_BuildValue("OdOiii", w, loss, grad, n_iter, n_fev, status);
fail:
    release_logistic(&a);
    free(work);
    Py_XDECREF(w);
    Py_XDECREF(grad);
    return result;
}

/* A Python callable as an rlhf_objective; the GIL is held throughout. */
typedef struct {
    PyObject *fun;
    npy_intp n;
} py_objective;

static int call_python_objective(void *ctx, const double *x, double *f,
                                 double *g)
{
    py_objective *p = ctx;
    PyArrayObject *x_arr = new_vector(p->n);
    PyObject *out = NULL, *g_obj = NULL;
    PyArrayObject *g_arr = NULL;
    int status = -1;

    if (x_arr == NULL) {
        return -1;
    }
    memcpy(PyArray_DATA(x_arr), x, (size_t)p->n * sizeof(double));
    out = PyObject_CallOneArg(p->fun, (PyObject *)x_arr);
    if (out == NULL) {
        goto done;
    }
    if (!PyTuple_Check(out) || PyTuple_GET_SIZE(out) != 2) {
        PyErr_SetString(PyExc_TypeError,
                        "fun must return a tuple (f, gradient)");
        goto done;
    }
    *f = PyFloat_AsDouble(PyTuple_GET_ITEM(out, 0));
    if (*f == -1.0 && PyErr_Occurred()) {
        goto done;
    }
    g_obj = PyTuple_GET_ITEM(out, 1);
    g_arr = as_array(g_obj, NPY_DOUBLE, 1, "the gradient fun returns");
    if (g_arr == NULL ||
        check_length(g_arr, p->n, "the gradient fun returns") < 0) {
        goto done;
    }
    memcpy(g, PyArray_DATA(g_arr), (size_t)p->n * sizeof(double));
    status = 0;
done:
    Py_DECREF(x_arr);
    Py_XDECREF(out);
    Py_XDECREF(g_arr);
    return status;
}

PyDoc_STRVAR(lbfgs_minimize_doc,
"lbfgs_minimize(fun, x0, m=10, gtol=1e-5, ftol=2.220446049250313e-09,\n"
"               max_iter=15000, maxls=20)\n--\n\n"
"Minimise fun(x) -> (f, gradient) from x0 with the L-BFGS kernel.\n"
"Returns (x, f, g, n_iter, n_fev, status).");

static PyObject *py_lbfgs_minimize(PyObject *Py_UNUSED(self), PyObject *args,
                                   PyObject *kwargs)
{
    static char *kwlist[] = {"fun", "x0", "m", "gtol", "ftol", "max_iter",
                             "maxls", NULL};
    PyObject *fun, *x0_obj;
    int m = 10, max_iter = 15000, maxls = 20;
    double gtol = 1e-5, ftol = 2.220446049250313e-09, f = 0.0;
    int n_iter = 0, n_fev = 0, status;
    PyArrayObject *x0 = NULL, *x = NULL, *g = NULL;
    double *work = NULL;
    PyObject *result = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|iddii", kwlist, &fun,
                                     &x0_obj, &m, &gtol, &ftol, &max_iter,
                                     &maxls)) {
        return NULL;
    }
    if (!PyCallable_Check(fun)) {
        PyErr_SetString(PyExc_TypeError, "fun must be callable");
        return NULL;
    }
    if (m < 1 || maxls < 1) {
        PyErr_SetString(PyExc_ValueError, "m and maxls must be >= 1");
        return NULL;
    }
    x0 = as_array(x0_obj, NPY_DOUBLE, 1, "x0");
    if (x0 == NULL) {
        return NULL;
    }
    npy_intp n = PyArray_DIM(x0, 0);
    x = new_vector(n);
    g = new_vector(n);
    if (x == NULL || g == NULL) {
        goto fail;
    }
    if (!fits_doubles(n, 2 * (ptrdiff_t)m + 3, 2 * (ptrdiff_t)m)) {
        no_memory_for("L-BFGS's work space", -1);
        goto fail;
    }
    work = alloc_doubles(rlhf_lbfgs_work_size(n, m), "L-BFGS's work space");
    if (work == NULL) {
        goto fail;
    }
    memcpy(PyArray_DATA(x), PyArray_DATA(x0), (size_t)n * sizeof(double));
    py_objective ctx = {fun, n};
    status = rlhf_lbfgs_minimize(call_python_objective, &ctx, n,
                                 PyArray_DATA(x), &f, PyArray_DATA(g), m,
                                 gtol, ftol, max_iter, maxls, work, &n_iter,
                                 &n_fev);
    if (status < 0) {
        raise_status(status, "lbfgs_minimize");
        goto fail;
    }
    result = Py_BuildValue("OdOiii", x, f, g, n_iter, n_fev, status);
fail:
    free(work);
    Py_XDECREF(x0);
    Py_XDECREF(x);
    Py_XDECREF(g);
    return result;
}

PyDoc_STRVAR(reweight_doc,
"reweight(policy, rewards, eta, eps)\n--\n\n"
"softmax(log(policy + eps) + eta * (rewards - mean(rewards))) along the\n"
"last axis of two (n_rows, n_actions) arrays; returns a new array.");

static PyObject *py_reweight(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *policy_obj, *rewards_obj;
    double eta, eps;
    PyArrayObject *policy = NULL, *rewards = NULL, *out = NULL;
    int status;

    if (!PyArg_ParseTuple(args, "OOdd", &policy_obj, &rewards_obj, &eta,
                          &eps)) {
        return NULL;
    }
    /* a NaN eta or a negative eps would give NaN weights, not an error */
    if (!isfinite(eta) || !isfinite(eps) || !(eps >= 0.0)) {
        PyErr_Format(PyExc_ValueError,
                     "reweight: eta must be finite and eps finite and >= 0, "
                     "got eta=%R and eps=%R", PyTuple_GET_ITEM(args, 2),
                     PyTuple_GET_ITEM(args, 3));
        return NULL;
    }
    policy = as_array(policy_obj, NPY_DOUBLE, 2, "policy");
    rewards = as_array(rewards_obj, NPY_DOUBLE, 2, "rewards");
    if (policy == NULL || rewards == NULL) {
        goto fail;
    }
    if (!PyArray_SAMESHAPE(policy, rewards)) {
        PyErr_SetString(PyExc_ValueError,
                        "policy and rewards must have the same shape");
        goto fail;
    }
    out = (PyArrayObject *)PyArray_ZEROS(2, PyArray_DIMS(policy), NPY_DOUBLE,
                                         0);
    if (out == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_reweight(PyArray_DATA(policy), PyArray_DATA(rewards),
                           PyArray_DIM(policy, 0), PyArray_DIM(policy, 1),
                           eta, eps, PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    if (status == RLHF_EVALUE || status == RLHF_ENONFINITE) {
        PyErr_SetString(PyExc_ValueError,
                        "reweight: policy must be finite and non-negative "
                        "and rewards finite");
        goto fail;
    }
    if (status < 0) {
        raise_status(status, "reweight");
        goto fail;
    }
    Py_DECREF(policy);
    Py_DECREF(rewards);
    return (PyObject *)out;
fail:
    Py_XDECREF(policy);
    Py_XDECREF(rewards);
    Py_XDECREF(out);
    return NULL;
}

PyDoc_STRVAR(constrained_policy_doc,
"constrained_policy(reference_policy, rewards, costs, budget, beta)\n--\n\n"
"The maximiser of E_pi[r] - beta KL(pi || pi_ref) subject to\n"
"E_pi[c] <= budget, row by row, for three (n_rows, n_actions) arrays and\n"
"n_rows budgets.  Returns (policy, multiplier), new arrays.");

static PyObject *py_constrained_policy(PyObject *Py_UNUSED(self),
                                       PyObject *args)
{
    PyObject *reference_obj, *rewards_obj, *costs_obj, *budget_obj;
    double beta;
    PyArrayObject *reference = NULL, *rewards = NULL, *costs = NULL;
    PyArrayObject *budget = NULL, *policy = NULL, *multiplier = NULL;
    PyObject *result = NULL;
    ptrdiff_t bad_row = -1;
    int status;

    if (!PyArg_ParseTuple(args, "OOOOd", &reference_obj, &rewards_obj,
                          &costs_obj, &budget_obj, &beta)) {
        return NULL;
    }
    reference = as_array(reference_obj, NPY_DOUBLE, 2, "reference_policy");
    rewards = as_array(rewards_obj, NPY_DOUBLE, 2, "rewards");
    costs = as_array(costs_obj, NPY_DOUBLE, 2, "costs");
    budget = as_array(budget_obj, NPY_DOUBLE, 1, "budget");
    if (reference == NULL || rewards == NULL || costs == NULL ||
        budget == NULL) {
        goto fail;
    }
    if (!PyArray_SAMESHAPE(reference, rewards) ||
        !PyArray_SAMESHAPE(reference, costs)) {
        PyErr_SetString(PyExc_ValueError,
                        "reference_policy, rewards and costs must have the "
                        "same shape");
        goto fail;
    }
    if (check_length(budget, PyArray_DIM(reference, 0), "budget") < 0) {
        goto fail;
    }
    policy = (PyArrayObject *)PyArray_ZEROS(2, PyArray_DIMS(reference),
                                            NPY_DOUBLE, 0);
    multiplier = new_vector(PyArray_DIM(reference, 0));
    if (policy == NULL || multiplier == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_constrained_policy(
        PyArray_DATA(reference), PyArray_DATA(rewards), PyArray_DATA(costs),
        PyArray_DATA(budget), PyArray_DIM(reference, 0),
        PyArray_DIM(reference, 1), beta, PyArray_DATA(policy),
        PyArray_DATA(multiplier), &bad_row);
    Py_END_ALLOW_THREADS
    if (status == RLHF_EVALUE || status == RLHF_ENONFINITE) {
        PyErr_Format(PyExc_ValueError,
                     "constrained_policy: row %zd is invalid (beta must be "
                     "in (0, inf), inputs finite, the reference "
                     "non-negative with some mass, the budget at least the "
                     "least achievable cost and the multiplier below "
                     "DBL_MAX)",
                     (Py_ssize_t)bad_row);
        goto fail;
    }
    if (status == RLHF_MAX_ITER) {
        PyErr_Format(PyExc_ArithmeticError,
                     "constrained_policy: the multiplier of row %zd did "
                     "not converge",
                     (Py_ssize_t)bad_row);
        goto fail;
    }
    if (status < 0) {
        raise_status(status, "constrained_policy");
        goto fail;
    }
    result = Py_BuildValue("OO", policy, multiplier);
fail:
    Py_XDECREF(reference);
    Py_XDECREF(rewards);
    Py_XDECREF(costs);
    Py_XDECREF(budget);
    Py_XDECREF(policy);
    Py_XDECREF(multiplier);
    return result;
}

/* -- policy optimisation (policy_opt.c) ------------------------------- */

static int check_shape_2d(PyArrayObject *arr, npy_intp rows, npy_intp cols,
                          const char *name)
{
    if (PyArray_DIM(arr, 0) != rows || PyArray_DIM(arr, 1) != cols) {
        PyErr_Format(PyExc_ValueError,
                     "%s must have shape (%zd, %zd), got (%zd, %zd)", name,
                     (Py_ssize_t)rows, (Py_ssize_t)cols,
                     (Py_ssize_t)PyArray_DIM(arr, 0),
                     (Py_ssize_t)PyArray_DIM(arr, 1));
        return -1;
    }
    return 0;
}

/* Every index in [0, upper): the kernels trust them. */
static int check_indices(PyArrayObject *arr, npy_intp upper, const char *name)
{
    const int64_t *v = PyArray_DATA(arr);
    npy_intp n = PyArray_SIZE(arr);
    for (npy_intp q = 0; q < n; q++) {
        if (v[q] < 0 || v[q] >= upper) {
            PyErr_Format(PyExc_ValueError,
                         "%s holds the index %lld, outside [0, %zd)", name,
                         (long long)v[q], (Py_ssize_t)upper);
            return -1;
        }
    }
    return 0;
}

static PyArrayObject *new_array_2d(npy_intp rows, npy_intp cols, int typenum)
{
    npy_intp dims[2] = {rows, cols};
    return (PyArrayObject *)PyArray_ZEROS(2, dims, typenum, 0);
}

static int check_kl_kind(int kl_kind)
{
    if (kl_kind != RLHF_KL_K1 && kl_kind != RLHF_KL_K3) {
        PyErr_Format(PyExc_ValueError, "kl_kind must be 1 or 3, got %d",
                     kl_kind);
        return -1;
    }
    return 0;
}

/* An array the caller hands over to be written (the optimiser's state, an
 * out= buffer): a writeable, C-contiguous float64 ndarray of the given
 * shape, used as it is (never a converted copy). */
static int check_state(PyObject *obj, npy_intp rows, npy_intp cols,
                       const char *name)
{
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) !=
                                   NPY_DOUBLE ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)obj) ||
        !PyArray_ISWRITEABLE((PyArrayObject *)obj) ||
        PyArray_NDIM((PyArrayObject *)obj) != 2) {
        PyErr_Format(PyExc_TypeError,
                     "%s must be a writeable, C-contiguous 2-d float64 "
                     "ndarray (it is written in place)",
                     name);
        return -1;
    }
    return check_shape_2d((PyArrayObject *)obj, rows, cols, name);
}

PyDoc_STRVAR(log_softmax_doc,
"log_softmax(logits, out=None)\n--\n\n"
"(logp, p): the log-softmax of each row of a 2-d array and its exp.  With\n"
"out=(logp, p), two writeable C-contiguous float64 arrays of the shape of\n"
"logits that do not overlap it, the results are written there.");

/* Whether the data of two arrays overlap in memory. */
static int overlap(PyArrayObject *a, PyArrayObject *b)
{
    const char *a0 = PyArray_BYTES(a), *b0 = PyArray_BYTES(b);
    const char *a1 = a0 + PyArray_NBYTES(a), *b1 = b0 + PyArray_NBYTES(b);
    return a0 < b1 && b0 < a1;
}

static PyObject *py_log_softmax(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *logits_obj, *out_obj = Py_None;
    PyArrayObject *logits = NULL, *logp = NULL, *p = NULL;
    PyObject *result = NULL;
    int status;

    if (!PyArg_ParseTuple(args, "O|O", &logits_obj, &out_obj)) {
        return NULL;
    }
    logits = as_array(logits_obj, NPY_DOUBLE, 2, "logits");
    if (logits == NULL) {
        goto fail;
    }
    npy_intp n = PyArray_DIM(logits, 0), k = PyArray_DIM(logits, 1);
    if (out_obj == Py_None) {
        logp = new_array_2d(n, k, NPY_DOUBLE);
        p = new_array_2d(n, k, NPY_DOUBLE);
        if (logp == NULL || p == NULL) {
            goto fail;
        }
    } else {
        if (!PyTuple_Check(out_obj) || PyTuple_GET_SIZE(out_obj) != 2) {
            PyErr_SetString(PyExc_TypeError,
                            "out must be a tuple (logp, p) of arrays");
            goto fail;
        }
        PyObject *lp_obj = PyTuple_GET_ITEM(out_obj, 0);
        PyObject *p_obj = PyTuple_GET_ITEM(out_obj, 1);
        if (check_state(lp_obj, n, k, "out[0]") < 0 ||
            check_state(p_obj, n, k, "out[1]") < 0) {
            goto fail;
        }
        logp = (PyArrayObject *)lp_obj;
        p = (PyArrayObject *)p_obj;
        Py_INCREF(logp);
        Py_INCREF(p);
        if (overlap(logp, p) || overlap(logp, logits) || overlap(p, logits)) {
            PyErr_SetString(PyExc_ValueError,
                            "log_softmax: out arrays must not overlap each "
                            "other or logits");
            goto fail;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_log_softmax(PyArray_DATA(logits), n, k, PyArray_DATA(logp),
                              PyArray_DATA(p));
    Py_END_ALLOW_THREADS
    if (status == RLHF_ENONFINITE) {
        PyErr_SetString(PyExc_ValueError,
                        "log_softmax: a row of logits holds NaN or +inf, or "
                        "is all -inf");
        goto fail;
    }
    result = Py_BuildValue("OO", logp, p);
fail:
    Py_XDECREF(logits);
    Py_XDECREF(logp);
    Py_XDECREF(p);
    return result;
}

PyDoc_STRVAR(sample_categorical_doc,
"sample_categorical(policy, n_samples, seed, counter)\n--\n\n"
"Response indices, shape (n_rows, n_samples): sample s of row i inverts\n"
"the row's cumulative sum at output counter + i * n_samples + s of\n"
"SplitMix64 seeded with seed.");

static PyObject *py_sample_categorical(PyObject *Py_UNUSED(self),
                                       PyObject *args)
{
    PyObject *policy_obj;
    Py_ssize_t n_samples;
    unsigned long long seed, counter;
    PyArrayObject *policy = NULL, *out = NULL;
    int status;

    if (!PyArg_ParseTuple(args, "OnKK", &policy_obj, &n_samples, &seed,
                          &counter)) {
        return NULL;
    }
    if (n_samples < 1) {
        PyErr_SetString(PyExc_ValueError, "n_samples must be >= 1");
        return NULL;
    }
    policy = as_array(policy_obj, NPY_DOUBLE, 2, "policy");
    if (policy == NULL) {
        goto fail;
    }
    npy_intp n = PyArray_DIM(policy, 0), k = PyArray_DIM(policy, 1);
    if (k < 1) {
        PyErr_SetString(PyExc_ValueError, "policy must have >= 1 response");
        goto fail;
    }
    out = new_array_2d(n, n_samples, NPY_INT64);
    if (out == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_sample_categorical(PyArray_DATA(policy), n, k, n_samples,
                                     (uint64_t)seed, (uint64_t)counter,
                                     PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    if (status == RLHF_EVALUE) {
        PyErr_SetString(PyExc_ValueError,
                        "sample_categorical: every row of policy must be "
                        "finite, non-negative, with a positive entry");
        goto fail;
    }
    Py_DECREF(policy);
    return (PyObject *)out;
fail:
    Py_XDECREF(policy);
    Py_XDECREF(out);
    return NULL;
}

PyDoc_STRVAR(shape_rewards_doc,
"shape_rewards(rewards, logp, ref_logp, actions, kl_coef, kl_kind)\n--\n\n"
"(shaped, sample_logp), each of the shape of actions: the reward of each\n"
"sampled response minus kl_coef times its k1 or k3 KL estimate, and its\n"
"log-probability.");

static PyObject *py_shape_rewards(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *r_obj, *lp_obj, *ref_obj, *a_obj;
    double kl_coef;
    int kl_kind;
    PyArrayObject *rewards = NULL, *logp = NULL, *ref = NULL, *actions = NULL;
    PyArrayObject *shaped = NULL, *sample_logp = NULL;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "OOOOdi", &r_obj, &lp_obj, &ref_obj, &a_obj,
                          &kl_coef, &kl_kind)) {
        return NULL;
    }
    if (check_kl_kind(kl_kind) < 0) {
        return NULL;
    }
    rewards = as_array(r_obj, NPY_DOUBLE, 2, "rewards");
    logp = as_array(lp_obj, NPY_DOUBLE, 2, "logp");
    ref = as_array(ref_obj, NPY_DOUBLE, 2, "ref_logp");
    actions = as_owned_array(a_obj, NPY_INT64, 2, "actions");
    if (rewards == NULL || logp == NULL || ref == NULL || actions == NULL) {
        goto fail;
    }
    npy_intp n = PyArray_DIM(rewards, 0), k = PyArray_DIM(rewards, 1);
    npy_intp s = PyArray_DIM(actions, 1);
    if (check_shape_2d(logp, n, k, "logp") < 0 ||
        check_shape_2d(ref, n, k, "ref_logp") < 0 ||
        check_length(actions, n, "actions") < 0 ||
        check_indices(actions, k, "actions") < 0) {
        goto fail;
    }
    shaped = new_array_2d(n, s, NPY_DOUBLE);
    sample_logp = new_array_2d(n, s, NPY_DOUBLE);
    if (shaped == NULL || sample_logp == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    rlhf_shape_rewards(PyArray_DATA(rewards), PyArray_DATA(logp),
                       PyArray_DATA(ref), n, k, PyArray_DATA(actions), s,
                       kl_coef, kl_kind, PyArray_DATA(shaped),
                       PyArray_DATA(sample_logp));
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("OO", shaped, sample_logp);
fail:
    Py_XDECREF(rewards);
    Py_XDECREF(logp);
    Py_XDECREF(ref);
    Py_XDECREF(actions);
    Py_XDECREF(shaped);
    Py_XDECREF(sample_logp);
    return result;
}

PyDoc_STRVAR(advantages_doc,
"advantages(rewards, baseline, eps)\n--\n\n"
"Advantages of a (n_groups, group_size) array of rewards; baseline 0:\n"
"group mean, 1: leave-one-out mean (RLOO), 2: GRPO's standardisation.");

static PyObject *py_advantages(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *r_obj;
    int baseline;
    double eps;
    PyArrayObject *rewards = NULL, *out = NULL;
    int status;

    if (!PyArg_ParseTuple(args, "Oid", &r_obj, &baseline, &eps)) {
        return NULL;
    }
    if (baseline < RLHF_BASELINE_MEAN || baseline > RLHF_BASELINE_GRPO) {
        PyErr_Format(PyExc_ValueError, "baseline must be 0, 1 or 2, got %d",
                     baseline);
        return NULL;
    }
    rewards = as_array(r_obj, NPY_DOUBLE, 2, "rewards");
    if (rewards == NULL) {
        return NULL;
    }
    npy_intp n = PyArray_DIM(rewards, 0), s = PyArray_DIM(rewards, 1);
    if (s < 1) {
        PyErr_SetString(PyExc_ValueError, "rewards must have >= 1 column");
        goto fail;
    }
    out = new_array_2d(n, s, NPY_DOUBLE);
    if (out == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_advantages(PyArray_DATA(rewards), n, s, baseline, eps,
                             PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    if (status == RLHF_EVALUE) {
        PyErr_SetString(PyExc_ValueError,
                        "advantages: the leave-one-out and GRPO baselines "
                        "need groups of at least 2 responses");
        goto fail;
    }
    Py_DECREF(rewards);
    return (PyObject *)out;
fail:
    Py_XDECREF(rewards);
    Py_XDECREF(out);
    return NULL;
}

PyDoc_STRVAR(ppo_loss_grad_doc,
"ppo_loss_grad(logits, ref_logp, rows, actions, weights, old_logp,\n"
"              advantages, clip, kl_coef, kl_kind)\n--\n\n"
"(loss, grad, clip_fraction) of PPO's clipped surrogate (plus a KL term)\n"
"over the prompts in rows; grad has the shape of logits.");

static PyObject *py_ppo_loss_grad(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *z_obj, *ref_obj, *rows_obj, *a_obj, *w_obj, *old_obj, *adv_obj;
    double clip, kl_coef, loss = 0.0, clip_fraction = 0.0;
    int kl_kind, status;
    PyArrayObject *logits = NULL, *ref = NULL, *rows = NULL, *actions = NULL;
    PyArrayObject *weights = NULL, *old = NULL, *adv = NULL, *grad = NULL;
    char *seen = NULL;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "OOOOOOOddi", &z_obj, &ref_obj, &rows_obj,
                          &a_obj, &w_obj, &old_obj, &adv_obj, &clip,
                          &kl_coef, &kl_kind)) {
        return NULL;
    }
    if (check_kl_kind(kl_kind) < 0) {
        return NULL;
    }
    logits = as_array(z_obj, NPY_DOUBLE, 2, "logits");
    ref = as_array(ref_obj, NPY_DOUBLE, 2, "ref_logp");
    rows = as_owned_array(rows_obj, NPY_INT64, 1, "rows");
    actions = as_owned_array(a_obj, NPY_INT64, 2, "actions");
    weights = as_array(w_obj, NPY_DOUBLE, 2, "weights");
    old = as_array(old_obj, NPY_DOUBLE, 2, "old_logp");
    adv = as_array(adv_obj, NPY_DOUBLE, 2, "advantages");
    if (logits == NULL || ref == NULL || rows == NULL || actions == NULL ||
        weights == NULL || old == NULL || adv == NULL) {
        goto fail;
    }
    npy_intp n = PyArray_DIM(logits, 0), k = PyArray_DIM(logits, 1);
    npy_intp s = PyArray_DIM(actions, 1), m = PyArray_DIM(rows, 0);
    if (check_shape_2d(ref, n, k, "ref_logp") < 0 ||
        check_length(actions, n, "actions") < 0 ||
        check_shape_2d(weights, n, s, "weights") < 0 ||
        check_shape_2d(old, n, s, "old_logp") < 0 ||
        check_shape_2d(adv, n, s, "advantages") < 0 ||
        check_indices(actions, k, "actions") < 0 ||
        check_indices(rows, n, "rows") < 0) {
        goto fail;
    }
    /* each batch row is written by one thread: rows must be distinct */
    seen = calloc((size_t)(n > 0 ? n : 1), 1);
    if (seen == NULL) {
        PyErr_Format(PyExc_MemoryError,
                     "cannot allocate %zd bytes to check that rows are "
                     "distinct", (Py_ssize_t)n);
        goto fail;
    }
    const int64_t *r = PyArray_DATA(rows);
    for (npy_intp b = 0; b < m; b++) {
        if (seen[r[b]]) {
            PyErr_SetString(PyExc_ValueError, "rows must be distinct");
            goto fail;
        }
        seen[r[b]] = 1;
    }
    grad = new_array_2d(n, k, NPY_DOUBLE);
    if (grad == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_ppo_loss_grad(
        PyArray_DATA(logits), PyArray_DATA(ref), n, k, r, m,
        PyArray_DATA(actions), PyArray_DATA(weights), PyArray_DATA(old),
        PyArray_DATA(adv), s, clip, kl_coef, kl_kind, &loss,
        PyArray_DATA(grad), &clip_fraction);
    Py_END_ALLOW_THREADS
    if (status == RLHF_ENONFINITE) {
        PyErr_SetString(PyExc_ValueError,
                        "ppo_loss_grad: a row of logits holds NaN or +inf, "
                        "or is all -inf");
        goto fail;
    }
    if (status < 0) {
        raise_status(status, "ppo_loss_grad");
        goto fail;
    }
    result = Py_BuildValue("dOd", loss, grad, clip_fraction);
fail:
    free(seen);
    Py_XDECREF(logits);
    Py_XDECREF(ref);
    Py_XDECREF(rows);
    Py_XDECREF(actions);
    Py_XDECREF(weights);
    Py_XDECREF(old);
    Py_XDECREF(adv);
    Py_XDECREF(grad);
    return result;
}

PyDoc_STRVAR(dpo_loss_grad_doc,
"dpo_loss_grad(logits, ref_logp, comparisons, weights, beta, loss_kind,\n"
"              label_smoothing)\n--\n\n"
"(loss, grad, (chosen, rejected, accuracy)) of a DPO-family loss; loss_kind\n"
"0: sigmoid, 1: robust, 2: hinge, 3: ipo.");

static PyObject *py_dpo_loss_grad(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *z_obj, *ref_obj, *c_obj, *w_obj;
    double beta, label_smoothing, loss = 0.0, stats[3] = {0.0, 0.0, 0.0};
    int loss_kind, status;
    PyArrayObject *logits = NULL, *ref = NULL, *comparisons = NULL;
    PyArrayObject *weights = NULL, *grad = NULL;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "OOOOdid", &z_obj, &ref_obj, &c_obj, &w_obj,
                          &beta, &loss_kind, &label_smoothing)) {
        return NULL;
    }
    if (loss_kind < RLHF_DPO_SIGMOID || loss_kind > RLHF_DPO_IPO) {
        PyErr_Format(PyExc_ValueError, "loss_kind must be 0 to 3, got %d",
                     loss_kind);
        return NULL;
    }
    logits = as_array(z_obj, NPY_DOUBLE, 2, "logits");
    ref = as_array(ref_obj, NPY_DOUBLE, 2, "ref_logp");
    comparisons = as_owned_array(c_obj, NPY_INT64, 2, "comparisons");
    weights = as_array(w_obj, NPY_DOUBLE, 1, "weights");
    if (logits == NULL || ref == NULL || comparisons == NULL ||
        weights == NULL) {
        goto fail;
    }
    npy_intp n = PyArray_DIM(logits, 0), k = PyArray_DIM(logits, 1);
    npy_intp m = PyArray_DIM(comparisons, 0);
    if (check_shape_2d(ref, n, k, "ref_logp") < 0 ||
        check_shape_2d(comparisons, m, 3, "comparisons") < 0 ||
        check_length(weights, m, "weights") < 0) {
        goto fail;
    }
    const int64_t *c = PyArray_DATA(comparisons);
    for (npy_intp q = 0; q < m; q++) {
        if (c[3 * q] < 0 || c[3 * q] >= n || c[3 * q + 1] < 0 ||
            c[3 * q + 1] >= k || c[3 * q + 2] < 0 || c[3 * q + 2] >= k) {
            PyErr_Format(PyExc_ValueError,
                         "comparisons row %zd is out of range", (Py_ssize_t)q);
            goto fail;
        }
    }
    grad = new_array_2d(n, k, NPY_DOUBLE);
    if (grad == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_dpo_loss_grad(PyArray_DATA(logits), PyArray_DATA(ref), n, k,
                                c, PyArray_DATA(weights), m, beta, loss_kind,
                                label_smoothing, &loss, PyArray_DATA(grad),
                                stats);
    Py_END_ALLOW_THREADS
    if (status == RLHF_ENONFINITE) {
        PyErr_SetString(PyExc_ValueError,
                        "dpo_loss_grad: a row of logits holds NaN or +inf, "
                        "or is all -inf");
        goto fail;
    }
    if (status < 0) {
        raise_status(status, "dpo_loss_grad");
        goto fail;
    }
    result = Py_BuildValue("dO(ddd)", loss, grad, stats[0], stats[1],
                           stats[2]);
fail:
    Py_XDECREF(logits);
    Py_XDECREF(ref);
    Py_XDECREF(comparisons);
    Py_XDECREF(weights);
    Py_XDECREF(grad);
    return result;
}

PyDoc_STRVAR(policy_stats_doc,
"policy_stats(logp, ref_logp, rewards)\n--\n\n"
"(expected reward, KL to the reference, entropy), each a mean over rows.");

static PyObject *py_policy_stats(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *lp_obj, *ref_obj, *r_obj;
    PyArrayObject *logp = NULL, *ref = NULL, *rewards = NULL;
    double out[3] = {0.0, 0.0, 0.0};
    PyObject *result = NULL;
    int status;

    if (!PyArg_ParseTuple(args, "OOO", &lp_obj, &ref_obj, &r_obj)) {
        return NULL;
    }
    logp = as_array(lp_obj, NPY_DOUBLE, 2, "logp");
    ref = as_array(ref_obj, NPY_DOUBLE, 2, "ref_logp");
    rewards = as_array(r_obj, NPY_DOUBLE, 2, "rewards");
    if (logp == NULL || ref == NULL || rewards == NULL) {
        goto fail;
    }
    npy_intp n = PyArray_DIM(logp, 0), k = PyArray_DIM(logp, 1);
    if (check_shape_2d(ref, n, k, "ref_logp") < 0 ||
        check_shape_2d(rewards, n, k, "rewards") < 0) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_policy_stats(PyArray_DATA(logp), PyArray_DATA(ref),
                               PyArray_DATA(rewards), n, k, out);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "policy_stats");
        goto fail;
    }
    result = Py_BuildValue("ddd", out[0], out[1], out[2]);
fail:
    Py_XDECREF(logp);
    Py_XDECREF(ref);
    Py_XDECREF(rewards);
    return result;
}

PyDoc_STRVAR(adam_step_doc,
"adam_step(theta, grad, m, v, lr, beta1, beta2, eps, t)\n--\n\n"
"One Adam step at step number t >= 1; returns new (theta, m, v) arrays of\n"
"theta's shape and leaves the arguments unchanged.");

static PyObject *py_adam_step(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *objs[4];
    PyArrayObject *in[4] = {NULL, NULL, NULL, NULL};
    PyArrayObject *out[3] = {NULL, NULL, NULL};
    static const char *names[4] = {"theta", "grad", "m", "v"};
    double lr, beta1, beta2, eps;
    long long t;
    PyObject *result = NULL;
    int status;

    if (!PyArg_ParseTuple(args, "OOOOddddL", &objs[0], &objs[1], &objs[2],
                          &objs[3], &lr, &beta1, &beta2, &eps, &t)) {
        return NULL;
    }
    if (t < 1) {
        PyErr_SetString(PyExc_ValueError, "t must be >= 1");
        return NULL;
    }
    for (int q = 0; q < 4; q++) {
        in[q] = (PyArrayObject *)PyArray_FROM_OTF(objs[q], NPY_DOUBLE,
                                                  NPY_ARRAY_IN_ARRAY);
        if (in[q] == NULL) {
            goto fail;
        }
        if (q > 0 && PyArray_SIZE(in[q]) != PyArray_SIZE(in[0])) {
            PyErr_Format(PyExc_ValueError,
                         "%s must have as many values as theta", names[q]);
            goto fail;
        }
    }
    /* copies of theta, m, v: the step updates them in place */
    for (int q = 0; q < 3; q++) {
        out[q] = (PyArrayObject *)PyArray_NewCopy(in[q == 0 ? 0 : q + 1],
                                                  NPY_CORDER);
        if (out[q] == NULL) {
            goto fail;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_adam_step(PyArray_DATA(out[0]), PyArray_DATA(in[1]),
                            PyArray_DATA(out[1]), PyArray_DATA(out[2]),
                            PyArray_SIZE(in[0]), lr, beta1, beta2, eps,
                            (int64_t)t);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "adam_step");
        goto fail;
    }
    result = Py_BuildValue("OOO", out[0], out[1], out[2]);
fail:
    for (int q = 0; q < 4; q++) {
        Py_XDECREF(in[q]);
    }
    for (int q = 0; q < 3; q++) {
        Py_XDECREF(out[q]);
    }
    return result;
}

PyDoc_STRVAR(ppo_adam_step_doc,
"ppo_adam_step(theta, m, v, ref_logp, rows, actions, weights, old_logp,\n"
"              advantages, clip, kl_coef, kl_kind, lr, beta1, beta2, eps,\n"
"              t)\n--\n\n"
"One fused PPO gradient and Adam step of a tabular policy with logits\n"
"ref_logp + theta.  Updates theta, m and v IN PLACE (the optimiser's own\n"
"state) and returns (loss, clip_fraction).");

static PyObject *py_ppo_adam_step(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *th_obj, *m_obj, *v_obj, *ref_obj, *rows_obj, *a_obj, *w_obj;
    PyObject *old_obj, *adv_obj;
    double clip, kl_coef, lr, beta1, beta2, eps;
    double loss = 0.0, clip_fraction = 0.0;
    int kl_kind, status;
    long long t;
    PyArrayObject *ref = NULL, *rows = NULL, *actions = NULL;
    PyArrayObject *weights = NULL, *old = NULL, *adv = NULL;
    char *seen = NULL;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "OOOOOOOOOddiddddL", &th_obj, &m_obj, &v_obj,
                          &ref_obj, &rows_obj, &a_obj, &w_obj, &old_obj,
                          &adv_obj, &clip, &kl_coef, &kl_kind, &lr, &beta1,
                          &beta2, &eps, &t)) {
        return NULL;
    }
    if (check_kl_kind(kl_kind) < 0) {
        return NULL;
    }
    if (t < 1) {
        PyErr_SetString(PyExc_ValueError, "t must be >= 1");
        return NULL;
    }
    ref = as_array(ref_obj, NPY_DOUBLE, 2, "ref_logp");
    rows = as_owned_array(rows_obj, NPY_INT64, 1, "rows");
    actions = as_owned_array(a_obj, NPY_INT64, 2, "actions");
    weights = as_array(w_obj, NPY_DOUBLE, 2, "weights");
    old = as_array(old_obj, NPY_DOUBLE, 2, "old_logp");
    adv = as_array(adv_obj, NPY_DOUBLE, 2, "advantages");
    if (ref == NULL || rows == NULL || actions == NULL || weights == NULL ||
        old == NULL || adv == NULL) {
        goto fail;
    }
    npy_intp n = PyArray_DIM(ref, 0), k = PyArray_DIM(ref, 1);
    npy_intp s = PyArray_DIM(actions, 1), mb = PyArray_DIM(rows, 0);
    if (check_state(th_obj, n, k, "theta") < 0 ||
        check_state(m_obj, n, k, "m") < 0 ||
        check_state(v_obj, n, k, "v") < 0 ||
        check_length(actions, n, "actions") < 0 ||
        check_shape_2d(weights, n, s, "weights") < 0 ||
        check_shape_2d(old, n, s, "old_logp") < 0 ||
        check_shape_2d(adv, n, s, "advantages") < 0 ||
        check_indices(actions, k, "actions") < 0 ||
        check_indices(rows, n, "rows") < 0) {
        goto fail;
    }
    if (th_obj == m_obj || th_obj == v_obj || m_obj == v_obj) {
        PyErr_SetString(PyExc_ValueError,
                        "theta, m and v must be three different arrays");
        goto fail;
    }
    seen = calloc((size_t)(n > 0 ? n : 1), 1);
    if (seen == NULL) {
        PyErr_Format(PyExc_MemoryError,
                     "cannot allocate %zd bytes to check that rows are "
                     "distinct", (Py_ssize_t)n);
        goto fail;
    }
    const int64_t *r = PyArray_DATA(rows);
    for (npy_intp b = 0; b < mb; b++) {
        if (seen[r[b]]) {
            PyErr_SetString(PyExc_ValueError, "rows must be distinct");
            goto fail;
        }
        seen[r[b]] = 1;
    }
    double *theta = PyArray_DATA((PyArrayObject *)th_obj);
    double *m = PyArray_DATA((PyArrayObject *)m_obj);
    double *v = PyArray_DATA((PyArrayObject *)v_obj);
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_ppo_adam_step(
        theta, m, v, PyArray_DATA(ref), n, k, r, mb, PyArray_DATA(actions),
        PyArray_DATA(weights), PyArray_DATA(old), PyArray_DATA(adv), s, clip,
        kl_coef, kl_kind, lr, beta1, beta2, eps, (int64_t)t, &loss,
        &clip_fraction);
    Py_END_ALLOW_THREADS
    if (status == RLHF_ENONFINITE) {
        PyErr_SetString(PyExc_ValueError,
                        "ppo_adam_step: a row of logits holds NaN or +inf, "
                        "or is all -inf");
        goto fail;
    }
    if (status < 0) {
        raise_status(status, "ppo_adam_step");
        goto fail;
    }
    result = Py_BuildValue("dd", loss, clip_fraction);
fail:
    free(seen);
    Py_XDECREF(ref);
    Py_XDECREF(rows);
    Py_XDECREF(actions);
    Py_XDECREF(weights);
    Py_XDECREF(old);
    Py_XDECREF(adv);
    return result;
}

/* -- end of policy optimisation --------------------------------------- */

static PyObject *py_openmp_threads(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused))
{
#ifdef _OPENMP
    return PyLong_FromLong(1);
#else
    return PyLong_FromLong(0);
#endif
}

static PyObject *py_thread_cap(PyObject *Py_UNUSED(self), PyObject *args)
{
    int cap;
    if (!PyArg_ParseTuple(args, "i:thread_cap", &cap)) {
        return NULL;
    }
    if (cap < 0) {
        PyErr_Format(PyExc_ValueError,
                     "thread_cap: cap must be >= 0 (0: no cap); got %d", cap);
        return NULL;
    }
    return PyLong_FromLong(rlhf_set_thread_cap(cap));
}

static PyObject *py_default_threads(PyObject *Py_UNUSED(self),
                                    PyObject *Py_UNUSED(unused))
{
    return PyLong_FromLong(rlhf_default_threads());
}

/* -- Bradley-Terry and Plackett-Luce (bradley_terry.c) ------------------ */

/* Everything an rlhf_bt holds, parsed from Python. */
typedef struct {
    rlhf_bt problem;
    matrix_refs F;
    PyArrayObject *data, *sample_weight, *margin, *tie;
    double *scratch;
    int64_t *FT_indptr;     /* rlhf_bt_transpose, when built */
    int32_t *FT_rows;
    double *FT_data;
} bt_args;

static void release_bt(bt_args *a)
{
    release_matrix(&a->F);
    Py_XDECREF(a->data);
    Py_XDECREF(a->sample_weight);
    Py_XDECREF(a->margin);
    Py_XDECREF(a->tie);
    free(a->scratch);
    free(a->FT_indptr);
    free(a->FT_rows);
    free(a->FT_data);
}

/*
 * Sparse features by columns (rlhf_bt_transpose), for a problem evaluated
 * several times: F^T g is then summed over columns in parallel, to the
 * same bits.  Nothing for dense or no features, or when the memory cannot
 * be had (the serial sum needs none).  0, or -1 with an exception after
 * an interrupt.
 */
static int bt_transpose(bt_args *a, const char *where)
{
    rlhf_bt *p = &a->problem;
    if (!rlhf_bt_has_transpose(p)) {
        return 0;
    }
    const int64_t nnz = p->F.indptr[p->F.n_rows];
    a->FT_indptr = malloc((size_t)(p->F.n_cols + 1) * sizeof(int64_t));
    a->FT_rows = malloc((size_t)(nnz + 1) * sizeof(int32_t));
    a->FT_data = malloc((size_t)(nnz + 1) * sizeof(double));
    if (a->FT_indptr == NULL || a->FT_rows == NULL || a->FT_data == NULL) {
        free(a->FT_indptr);
        free(a->FT_rows);
        free(a->FT_data);
        a->FT_indptr = NULL;
        a->FT_rows = NULL;
        a->FT_data = NULL;
        return 0;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_bt_transpose(p, a->FT_indptr, a->FT_rows, a->FT_data);
    Py_END_ALLOW_THREADS
    if (status != 0) {
        raise_status(status, where);
        return -1;
    }
    p->FT_indptr = a->FT_indptr;
    p->FT_rows = a->FT_rows;
    p->FT_data = a->FT_data;
    return 0;
}

/* An optional 1-d float64 array of the given length, or NULL for None. */
static int optional_vector(PyObject *obj, npy_intp n, const char *name,
                           PyArrayObject **out, const double **ptr)
{
    *out = NULL;
    *ptr = NULL;
    if (obj == Py_None) {
        return 0;
    }
    *out = as_array(obj, NPY_DOUBLE, 1, name);
    if (*out == NULL || check_length(*out, n, name) < 0) {
        return -1;
    }
    *ptr = PyArray_DATA(*out);
    return 0;
}

/*
 * problem = (features, n_items, likelihood, data, sample_weight, margin,
 *            tie, tie_model, alpha): features None (one strength per
 * item), a 2-d array or a CSR tuple; data the (m, 2) comparisons or the
 * (n_groups, K) rankings.  Every index is checked here, since the kernel
 * trusts them.
 */
static int parse_bt(bt_args *a, PyObject *problem, int n_threads)
{
    PyObject *features, *data, *sw, *margin, *tie;
    Py_ssize_t n_items;
    int likelihood, tie_model;
    double alpha;

    memset(a, 0, sizeof(*a));
    if (!PyArg_ParseTuple(problem,
                          "OniOOOOid;problem must be (features, n_items, "
                          "likelihood, data, sample_weight, margin, tie, "
                          "tie_model, alpha)",
                          &features, &n_items, &likelihood, &data, &sw,
                          &margin, &tie, &tie_model, &alpha)) {
        return -1;
    }
    rlhf_bt *p = &a->problem;
    if (n_items < 1 || n_items > MAX_DOUBLES / 8 ||
        (likelihood != RLHF_BRADLEY_TERRY &&
                        likelihood != RLHF_PLACKETT_LUCE) ||
        tie_model < RLHF_TIES_NONE || tie_model > RLHF_TIES_DAVIDSON ||
        !(alpha >= 0.0) || !isfinite(alpha)) {
        PyErr_SetString(PyExc_ValueError,
                        "problem: n_items must be >= 1 (and addressable), "
                        "likelihood 0 or 1, "
                        "tie_model 0, 1 or 2 and alpha finite and >= 0");
        return -1;
    }
    p->n_items = n_items;
    p->likelihood = likelihood;
    p->tie_model = tie_model;
    p->alpha = alpha;
    p->n_threads = n_threads;
    if (features == Py_None) {
        p->F_identity = 1;
    }
    else {
        if (parse_matrix(features, &p->F, &a->F) < 0) {
            return -1;
        }
        if (p->F.n_rows != n_items) {
            PyErr_Format(PyExc_ValueError,
                         "features has %zd rows for %zd items",
                         (Py_ssize_t)p->F.n_rows, n_items);
            return -1;
        }
    }
    a->data = as_owned_array(data, NPY_INT64, 2, "comparisons");
    if (a->data == NULL) {
        return -1;
    }
    const npy_intp n = PyArray_DIM(a->data, 0);
    const npy_intp width = PyArray_DIM(a->data, 1);
    const int64_t *idx = PyArray_DATA(a->data);
    if (likelihood == RLHF_BRADLEY_TERRY) {
        if (width != 2) {
            PyErr_Format(PyExc_ValueError,
                         "comparisons must have 2 columns, got %zd",
                         (Py_ssize_t)width);
            return -1;
        }
        for (npy_intp q = 0; q < 2 * n; q++) {
            if (idx[q] < 0 || idx[q] >= n_items) {
                PyErr_Format(PyExc_ValueError,
                             "comparisons: item index %lld is outside "
                             "[0, %zd)",
                             (long long)idx[q], n_items);
                return -1;
            }
        }
        p->n_comparisons = n;
        p->comparisons = idx;
        p->group_size = 1;
    }
    else {
        if (width < 1) {
            PyErr_SetString(PyExc_ValueError,
                            "rankings must have at least 1 column");
            return -1;
        }
        for (npy_intp g = 0; g < n; g++) {
            int padded = 0;
            for (npy_intp k = 0; k < width; k++) {
                const int64_t i = idx[g * width + k];
                if (i == -1) {
                    padded = 1;
                }
                else if (padded || i < 0 || i >= n_items) {
                    PyErr_Format(PyExc_ValueError,
                                 "rankings: entry %lld of group %zd is not "
                                 "an item index in [0, %zd) (-1 may only "
                                 "pad the end of a ranking)",
                                 (long long)i, (Py_ssize_t)g, n_items);
                    return -1;
                }
            }
        }
        p->n_groups = n;
        p->group_size = width;
        p->rankings = idx;
    }
    if (optional_vector(sw, n, "sample_weight", &a->sample_weight,
                        &p->sample_weight) < 0 ||
        optional_vector(margin, n, "margin", &a->margin, &p->margin) < 0) {
        return -1;
    }
    if (tie != Py_None) {
        a->tie = as_array(tie, NPY_UINT8, 1, "ties");
        if (a->tie == NULL || check_length(a->tie, n, "ties") < 0) {
            return -1;
        }
        p->tie = PyArray_DATA(a->tie);
    }
    if (likelihood == RLHF_PLACKETT_LUCE &&
        (p->margin != NULL || p->tie != NULL || tie_model != 0)) {
        PyErr_SetString(PyExc_ValueError,
                        "margin and ties apply to Bradley-Terry comparisons "
                        "only");
        return -1;
    }
    a->scratch = alloc_doubles(rlhf_bt_scratch_size(p),
                               "the preference objective's scratch "
                               "(scores and gradients per item and "
                               "comparison)");
    if (a->scratch == NULL) {
        return -1;
    }
    p->scratch = a->scratch;
    return 0;
}

/* x as a float64 vector of the problem's parameter count. */
static PyArrayObject *bt_params(PyObject *x, const bt_args *a)
{
    PyArrayObject *arr = as_array(x, NPY_DOUBLE, 1, "x");
    if (arr != NULL &&
        check_length(arr, rlhf_bt_n_params(&a->problem), "x") < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

PyDoc_STRVAR(bt_loss_grad_doc,
"bt_loss_grad(problem, x, n_threads=0)\n--\n\n"
"The preference objective and its gradient at x: (loss, grad).  With a\n"
"2-d x, at each of its rows on one check and copy of the data, as a fit\n"
"evaluates: (losses, grads).");

static PyObject *py_bt_loss_grad(PyObject *Py_UNUSED(self), PyObject *args,
                                 PyObject *kwargs)
{
    static char *kwlist[] = {"problem", "x", "n_threads", NULL};
    PyObject *problem, *x_obj, *result = NULL;
    int n_threads = 0, status = 0;
    bt_args a;
    PyArrayObject *x = NULL, *grad = NULL, *loss = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O|i", kwlist,
                                     &PyTuple_Type, &problem, &x_obj,
                                     &n_threads)) {
        return NULL;
    }
    if (parse_bt(&a, problem, n_threads) < 0) {
        goto fail;
    }
    x = (PyArrayObject *)PyArray_FROM_OTF(x_obj, NPY_DOUBLE,
                                          NPY_ARRAY_IN_ARRAY);
    if (x == NULL) {
        goto fail;
    }
    const int ndim = PyArray_NDIM(x);
    const npy_intp np = rlhf_bt_n_params(&a.problem);
    if (ndim != 1 && ndim != 2) {
        PyErr_Format(PyExc_ValueError,
                     "x must be a 1- or 2-dimensional array, got %d "
                     "dimensions", ndim);
        goto fail;
    }
    if (ndim == 1 ? check_length(x, np, "x") < 0
                  : PyArray_DIM(x, 1) != np) {
        if (ndim == 2) {
            PyErr_Format(PyExc_ValueError,
                         "x must have %zd columns, got %zd", (Py_ssize_t)np,
                         (Py_ssize_t)PyArray_DIM(x, 1));
        }
        goto fail;
    }
    const npy_intp k = ndim == 2 ? PyArray_DIM(x, 0) : 1;
    npy_intp dims[2] = {k, np};
    grad = (PyArrayObject *)PyArray_ZEROS(ndim, dims + 2 - ndim, NPY_DOUBLE,
                                          0);
    loss = (PyArrayObject *)PyArray_ZEROS(1, &k, NPY_DOUBLE, 0);
    if (grad == NULL || loss == NULL) {
        goto fail;
    }
    if (k > 1 && bt_transpose(&a, "bt_loss_grad") < 0) {
        goto fail;
    }
    const double *xs = PyArray_DATA(x);
    double *grads = PyArray_DATA(grad), *losses = PyArray_DATA(loss);
    Py_BEGIN_ALLOW_THREADS
    for (npy_intp i = 0; i < k && status == 0; i++) {
        if (i > 0 && rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        status = rlhf_bt_loss_grad(&a.problem, xs + i * np, losses + i,
                                   grads + i * np);
    }
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "bt_loss_grad");
        goto fail;
    }
    if (ndim == 2) {
        result = Py_BuildValue("OO", loss, grad);
    }
    else {
        result = Py_BuildValue("dO", losses[0], grad);
    }
fail:
    release_bt(&a);
    Py_XDECREF(x);
    Py_XDECREF(grad);
    Py_XDECREF(loss);
    return result;
}

PyDoc_STRVAR(bt_hessian_doc,
"bt_hessian(problem, x)\n--\n\n"
"The Hessian of the preference objective at x (symmetric, n x n); with\n"
"one strength per item and no penalty, plus mean(diag) 1 1^T / n_items.");

static PyObject *py_bt_hessian(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *problem, *x_obj;
    bt_args a;
    PyArrayObject *x = NULL, *H = NULL;
    int status = 0;

    if (!PyArg_ParseTuple(args, "O!O", &PyTuple_Type, &problem, &x_obj)) {
        return NULL;
    }
    if (parse_bt(&a, problem, 0) < 0) {
        goto fail;
    }
    x = bt_params(x_obj, &a);
    if (x == NULL) {
        goto fail;
    }
    npy_intp np = rlhf_bt_n_params(&a.problem);
    npy_intp dims[2] = {np, np};
    H = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_DOUBLE, 0);
    if (H == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_bt_hessian(&a.problem, PyArray_DATA(x), PyArray_DATA(H));
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "bt_hessian");
        Py_CLEAR(H);
        goto fail;
    }
    double *h = PyArray_DATA(H);
    for (npy_intp i = 0; i < np; i++) {
        for (npy_intp j = 0; j < i; j++) {
            h[i * np + j] = h[j * np + i];
        }
    }
fail:
    release_bt(&a);
    Py_XDECREF(x);
    return (PyObject *)H;
}

PyDoc_STRVAR(bt_fit_doc,
"bt_fit(problem, x0, solver, tol, max_iter, n_threads=0)\n--\n\n"
"Minimise the preference objective from x0 with solver 'lbfgs' or\n"
"'newton'.  Returns (x, loss, grad, n_iter, n_fev, status).");

static PyObject *py_bt_fit(PyObject *Py_UNUSED(self), PyObject *args,
                           PyObject *kwargs)
{
    static char *kwlist[] = {"problem", "x0", "solver", "tol", "max_iter",
                             "n_threads", NULL};
    PyObject *problem, *x_obj, *result = NULL;
    const char *solver;
    double tol, loss = 0.0;
    int max_iter, n_threads = 0, newton;
    int n_iter = 0, n_fev = 0, status = 0;
    bt_args a;
    PyArrayObject *x0 = NULL, *x = NULL, *grad = NULL;
    double *work = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!Osdi|i", kwlist,
                                     &PyTuple_Type, &problem, &x_obj, &solver,
                                     &tol, &max_iter, &n_threads)) {
        return NULL;
    }
    if (strcmp(solver, "lbfgs") == 0) {
        newton = 0;
    }
    else if (strcmp(solver, "newton") == 0) {
        newton = 1;
    }
    else {
        PyErr_Format(PyExc_ValueError,
                     "solver must be 'lbfgs' or 'newton', got '%s'", solver);
        return NULL;
    }
    if (!(tol > 0.0) || max_iter < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "tol must be > 0 and max_iter >= 0");
        return NULL;
    }
    if (parse_bt(&a, problem, n_threads) < 0) {
        goto fail;
    }
    x0 = bt_params(x_obj, &a);
    if (x0 == NULL) {
        goto fail;
    }
    npy_intp np = rlhf_bt_n_params(&a.problem);
    x = new_vector(np);
    grad = new_vector(np);
    if (x == NULL || grad == NULL) {
        goto fail;
    }
    memcpy(PyArray_DATA(x), PyArray_DATA(x0), (size_t)np * sizeof(double));
    /* newton: np * (np + 3); lbfgs (m = 10): np * 23 + 20 doubles */
    const char *work_name = newton ? "Newton's work space (the Hessian "
                                     "and its factor)"
                                   : "L-BFGS's work space";
    if (newton ? !fits_doubles(np, np + 3, 0) : !fits_doubles(np, 23, 20)) {
        no_memory_for(work_name, -1);
        goto fail;
    }
    work = alloc_doubles(rlhf_bt_work_size(&a.problem, newton), work_name);
    if (work == NULL) {
        goto fail;
    }
    if (bt_transpose(&a, "bt_fit") < 0) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_bt_fit(&a.problem, newton, PyArray_DATA(x), &loss,
                         PyArray_DATA(grad), tol, max_iter, work, &n_iter,
                         &n_fev);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "bt_fit");
        goto fail;
    }
    result = Py_BuildValue("OdOiii", x, loss, grad, n_iter, n_fev, status);
fail:
    release_bt(&a);
    free(work);
    Py_XDECREF(x0);
    Py_XDECREF(x);
    Py_XDECREF(grad);
    return result;
}

PyDoc_STRVAR(pair_counts_doc,
"pair_counts(rewards, pairs, ties=None, n_threads=0)\n--\n\n"
"Over the (n, 2) int64 pairs not tied: (first item's reward higher,\n"
"rewards equal, pairs counted).  Indices are clamped into range as they\n"
"are read (check them first).");

static PyObject *py_pair_counts(PyObject *Py_UNUSED(self), PyObject *args,
                                PyObject *kwargs)
{
    static char *kwlist[] = {"rewards", "pairs", "ties", "n_threads", NULL};
    PyObject *r_obj, *pairs_obj, *tie_obj = Py_None, *result = NULL;
    PyArrayObject *r = NULL, *pairs = NULL, *tie = NULL;
    int n_threads = 0, status;
    int64_t counts[3] = {0, 0, 0};

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|Oi", kwlist, &r_obj,
                                     &pairs_obj, &tie_obj, &n_threads)) {
        return NULL;
    }
    r = as_array(r_obj, NPY_DOUBLE, 1, "rewards");
    pairs = as_array(pairs_obj, NPY_INT64, 2, "pairs");
    if (tie_obj != Py_None) {
        tie = as_array(tie_obj, NPY_UINT8, 1, "ties");
    }
    if (r == NULL || pairs == NULL || (tie_obj != Py_None && tie == NULL)) {
        goto fail;
    }
    const npy_intp n = PyArray_DIM(pairs, 0);
    if (PyArray_DIM(pairs, 1) != 2) {
        PyErr_Format(PyExc_ValueError, "pairs must have 2 columns, got %zd",
                     (Py_ssize_t)PyArray_DIM(pairs, 1));
        goto fail;
    }
    if (PyArray_DIM(r, 0) < 1 && n > 0) {
        PyErr_SetString(PyExc_ValueError, "rewards must not be empty");
        goto fail;
    }
    if (tie != NULL && check_length(tie, n, "ties") < 0) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_pair_counts(PyArray_DATA(r), PyArray_DIM(r, 0),
                              PyArray_DATA(pairs), n,
                              tie != NULL ? PyArray_DATA(tie) : NULL,
                              n_threads, counts);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "pair_counts");
        goto fail;
    }
    result = Py_BuildValue("LLL", (long long)counts[0], (long long)counts[1],
                           (long long)counts[2]);
fail:
    Py_XDECREF(r);
    Py_XDECREF(pairs);
    Py_XDECREF(tie);
    return result;
}

/* -- sequences (sequences.c) ------------------------------------------ */

/* After a failed conversion of argument name: a TypeError or ValueError
 * of NumPy's says which argument it was about. */
static void name_conversion_error(const char *name)
{
    if (!PyErr_ExceptionMatches(PyExc_TypeError) &&
        !PyErr_ExceptionMatches(PyExc_ValueError)) {
        return;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    PyErr_Format(type, "%s: %S", name, value);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
}

/* An array of the given type and number of dimensions (as_array, or
 * as_owned_array when owned), conversion errors naming the argument;
 * NULL at once when an earlier conversion left an error set. */
static PyArrayObject *sequence_array(PyObject *obj, int typenum, int ndim,
                                     const char *name, int owned)
{
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OTF(
        obj, typenum,
        NPY_ARRAY_IN_ARRAY | (owned ? NPY_ARRAY_ENSURECOPY : 0));
    if (arr == NULL) {
        name_conversion_error(name);
        return NULL;
    }
    if (ndim >= 0 && PyArray_NDIM(arr) != ndim) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be a %d-dimensional array, got %d dimensions",
                     name, ndim, PyArray_NDIM(arr));
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

/* A flat array of tokens: any shape, read raveled (C order). */
static PyArrayObject *token_array(PyObject *obj, int typenum,
                                  const char *name, int owned)
{
    return sequence_array(obj, typenum, -1, name, owned);
}

/* Every per-token array holds as many values as states. */
static int check_token_count(PyArrayObject *arr, npy_intp n, const char *name)
{
    if (PyArray_SIZE(arr) != n) {
        PyErr_Format(PyExc_ValueError,
                     "%s must have as many values as states (%zd), got %zd",
                     name, (Py_ssize_t)n, (Py_ssize_t)PyArray_SIZE(arr));
        return -1;
    }
    return 0;
}

/* The error of the first state at or above n_states, or action outside
 * [0, V) where the state is >= 0 (actions may be NULL), in arrays of n
 * indices known to hold one. */
static void token_index_error(const int64_t *s, const int64_t *a, npy_intp n,
                              npy_intp n_states, npy_intp V)
{
    for (npy_intp q = 0; q < n; q++) {
        if (s[q] >= n_states) {
            PyErr_Format(PyExc_ValueError,
                         "states holds the state %lld at position %zd, "
                         "outside the table's %zd states (a negative state "
                         "marks a position to skip)",
                         (long long)s[q], (Py_ssize_t)q,
                         (Py_ssize_t)n_states);
            return;
        }
        if (a != NULL && s[q] >= 0 && (a[q] < 0 || a[q] >= V)) {
            PyErr_Format(PyExc_ValueError,
                         "actions holds the token %lld at position %zd "
                         "(state %lld), outside [0, %zd)",
                         (long long)a[q], (Py_ssize_t)q, (long long)s[q],
                         (Py_ssize_t)V);
            return;
        }
    }
    PyErr_SetString(PyExc_SystemError, "no bad index found");
}

/*
 * The private copies (see as_owned_array) of the token kernels' index
 * arrays, states and, unless actions is NULL, actions, checked as they are
 * copied (rlhf_copy_token_indices): states below n_states (negative: a
 * position to skip), actions in [0, V) where the state is >= 0.  One pass
 * and one allocation, a (2, n) array (states, then actions) or a (1, n)
 * one, rather than a copy per array and a check after them.  A new
 * reference, or NULL with an error set.
 */
static PyArrayObject *owned_token_indices(PyArrayObject *states,
                                          PyArrayObject *actions,
                                          npy_intp n_states, npy_intp V)
{
    const npy_intp n = PyArray_SIZE(states);
    npy_intp dims[2] = {actions == NULL ? 1 : 2, n};
    PyArrayObject *owned =
        (PyArrayObject *)PyArray_EMPTY(2, dims, NPY_INT64, 0);
    if (owned == NULL) {
        return NULL;
    }
    int64_t *s = PyArray_DATA(owned), *a = actions == NULL ? NULL : s + n;
    if (rlhf_copy_token_indices(
            PyArray_DATA(states),
            actions == NULL ? NULL : PyArray_DATA(actions), n, n_states, V,
            s, a) < 0) {
        token_index_error(s, a, n, n_states, V); /* in what was checked */
        Py_DECREF(owned);
        return NULL;
    }
    return owned;
}

/*
 * A private copy (see as_owned_array) of an int64 index array, checked
 * against [0, upper) as check_indices does while it is copied
 * (rlhf_copy_indices): one pass, and the values checked are the ones the
 * kernel reads.  A new reference, or NULL with an error set.
 */
static PyArrayObject *owned_indices(PyArrayObject *arr, npy_intp upper,
                                    const char *name)
{
    PyArrayObject *owned = (PyArrayObject *)PyArray_EMPTY(
        PyArray_NDIM(arr), PyArray_DIMS(arr), NPY_INT64, 0);
    if (owned == NULL) {
        return NULL;
    }
    if (rlhf_copy_indices(PyArray_DATA(arr), PyArray_SIZE(arr), upper,
                          PyArray_DATA(owned)) < 0) {
        /* the error, found in what was checked */
        if (check_indices(owned, upper, name) == 0) {
            PyErr_SetString(PyExc_SystemError, "no bad index found");
        }
        Py_DECREF(owned);
        return NULL;
    }
    return owned;
}

/* x >= 0 (not NaN), or a ValueError naming it. */
static int check_nonnegative(double x, const char *name)
{
    if (x >= 0.0) {
        return 0;
    }
    PyObject *value = PyFloat_FromDouble(x);
    if (value != NULL) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0, got %R", name,
                     value);
        Py_DECREF(value);
    }
    return -1;
}

/* x in [0, 1], or a ValueError naming it. */
static int check_unit_interval(double x, const char *name)
{
    if (x >= 0.0 && x <= 1.0) {
        return 0;
    }
    PyObject *value = PyFloat_FromDouble(x);
    if (value != NULL) {
        PyErr_Format(PyExc_ValueError, "%s must be in [0, 1], got %R", name,
                     value);
        Py_DECREF(value);
    }
    return -1;
}

/* The vocabulary of a table with V columns: V >= 2 (the end token and at
 * least one word), end_token in [0, V). */
static int check_vocabulary(npy_intp V, long long end_token,
                            const char *table)
{
    if (V < 2) {
        PyErr_Format(PyExc_ValueError,
                     "%s must have at least 2 columns (the end token and a "
                     "word), got %zd",
                     table, (Py_ssize_t)V);
        return -1;
    }
    if (end_token < 0 || end_token >= V) {
        PyErr_Format(PyExc_ValueError,
                     "end_token must be in [0, %zd) (the columns of %s), "
                     "got %lld",
                     (Py_ssize_t)V, table, end_token);
        return -1;
    }
    return 0;
}

/* A table of context depth has offsets[depth + 1] rows; check it. */
static int check_table_depth(PyArrayObject *table, long long depth,
                             const char *name)
{
    const npy_intp V = PyArray_DIM(table, 1);
    if (depth < 0) {
        PyErr_Format(PyExc_ValueError, "depth must be >= 0, got %lld",
                     depth);
        return -1;
    }
    const ptrdiff_t rows = depth < INT64_MAX
                               ? rlhf_n_prefixes(V - 1, (int64_t)depth + 1)
                               : -1;
    if (rows < 0) {
        PyErr_Format(PyExc_ValueError,
                     "depth %lld with %zd words makes more states than can "
                     "be addressed; %s cannot be its table",
                     depth, (Py_ssize_t)(V - 1), name);
        return -1;
    }
    if (PyArray_DIM(table, 0) != rows) {
        PyErr_Format(PyExc_ValueError,
                     "%s must have shape (%zd, %zd): one row per state of "
                     "contexts of up to depth = %lld words, got (%zd, %zd)",
                     name, (Py_ssize_t)rows, (Py_ssize_t)V, depth,
                     (Py_ssize_t)PyArray_DIM(table, 0), (Py_ssize_t)V);
        return -1;
    }
    return 0;
}

/* A 1-d array the caller hands over to be written in place (as
 * check_state for 2-d ones). */
static int check_state_1d(PyObject *obj, npy_intp n, const char *name)
{
    if (!PyArray_Check(obj) ||
        PyArray_TYPE((PyArrayObject *)obj) != NPY_DOUBLE ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)obj) ||
        !PyArray_ISWRITEABLE((PyArrayObject *)obj) ||
        PyArray_NDIM((PyArrayObject *)obj) != 1) {
        PyErr_Format(PyExc_TypeError,
                     "%s must be a writeable, C-contiguous 1-d float64 "
                     "ndarray (it is written in place)",
                     name);
        return -1;
    }
    return check_length((PyArrayObject *)obj, n, name);
}

/*
 * The optimiser's state (names[0..3), written in place) shares no memory
 * within itself nor with the n_inputs arrays the kernel reads
 * (names[3..)): a thread's row must not be another's input.
 */
static int check_disjoint(PyArrayObject **state, PyArrayObject **inputs,
                          int n_inputs, const char *const *names)
{
    for (int a = 0; a < 3; a++) {
        for (int b = a + 1; b < 3; b++) {
            if (overlap(state[a], state[b])) {
                PyErr_Format(PyExc_ValueError,
                             "%s, %s and %s must be three different arrays "
                             "that do not overlap",
                             names[0], names[1], names[2]);
                return -1;
            }
        }
    }
    for (int q = 0; q < n_inputs; q++) {
        for (int a = 0; a < 3; a++) {
            if (overlap(inputs[q], state[a])) {
                PyErr_Format(PyExc_ValueError,
                             "%s must not share memory with %s, %s or %s "
                             "(they are updated in place)",
                             names[3 + q], names[0], names[1], names[2]);
                return -1;
            }
        }
    }
    return 0;
}

PyDoc_STRVAR(sample_sequences_doc,
"sample_sequences(probs, n, max_length, seed, end_token, depth)\n--\n\n"
"(tokens (n, max_length) int64, lengths (n,) int64): n sequences drawn\n"
"token by token from the rows of probs (one per state of contexts of up\n"
"to depth words), token t of sequence i by inverse CDF with output\n"
"i * max_length + t of SplitMix64 seeded with seed.");

static PyObject *py_sample_sequences(PyObject *Py_UNUSED(self),
                                     PyObject *args)
{
    PyObject *probs_obj;
    Py_ssize_t n, T;
    unsigned long long seed;
    long long end_token, depth;
    PyArrayObject *probs = NULL, *tokens = NULL, *lengths = NULL;
    PyObject *result = NULL;
    int status;

    if (!PyArg_ParseTuple(args, "OnnKLL", &probs_obj, &n, &T, &seed,
                          &end_token, &depth)) {
        return NULL;
    }
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "n must be >= 0, got %zd", n);
        return NULL;
    }
    if (T < 1) {
        PyErr_Format(PyExc_ValueError, "max_length must be >= 1, got %zd",
                     T);
        return NULL;
    }
    probs = sequence_array(probs_obj, NPY_DOUBLE, 2, "probs", 0);
    if (probs == NULL) {
        goto fail;
    }
    npy_intp S = PyArray_DIM(probs, 0), V = PyArray_DIM(probs, 1);
    if (check_vocabulary(V, end_token, "probs") < 0 ||
        check_table_depth(probs, depth, "probs") < 0) {
        goto fail;
    }
    /* every entry is written (the arrays are dropped on an error) */
    npy_intp n_sequences = n, dims[2] = {n, T};
    tokens = (PyArrayObject *)PyArray_EMPTY(2, dims, NPY_INT64, 0);
    lengths = (PyArrayObject *)PyArray_EMPTY(1, &n_sequences, NPY_INT64, 0);
    if (tokens == NULL || lengths == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_sample_sequences(PyArray_DATA(probs), S, V, n, T,
                                   (uint64_t)seed, (int64_t)end_token,
                                   (int64_t)depth, PyArray_DATA(tokens),
                                   PyArray_DATA(lengths));
    Py_END_ALLOW_THREADS
    if (status == RLHF_EVALUE) {
        PyErr_SetString(PyExc_ValueError,
                        "sample_sequences: every row of probs must be "
                        "finite, non-negative, with a positive entry");
        goto fail;
    }
    if (status < 0) {
        raise_status(status, "sample_sequences");
        goto fail;
    }
    result = Py_BuildValue("OO", tokens, lengths);
fail:
    Py_XDECREF(probs);
    Py_XDECREF(tokens);
    Py_XDECREF(lengths);
    return result;
}

PyDoc_STRVAR(sequence_log_probs_doc,
"sequence_log_probs(log_probs, tokens, lengths, end_token, depth)\n--\n\n"
"(states (n, T) int64, logp (n, T)): the state of every position of the\n"
"sequences (-1 where it is not a choice) and log_probs[state, token]\n"
"there (0 elsewhere).");

static PyObject *py_sequence_log_probs(PyObject *Py_UNUSED(self),
                                       PyObject *args)
{
    PyObject *lp_obj, *tokens_obj, *lengths_obj;
    long long end_token, depth;
    PyArrayObject *log_probs = NULL, *tokens = NULL, *lengths = NULL;
    PyArrayObject *owned = NULL, *states = NULL, *logp = NULL;
    PyObject *result = NULL;
    int status;

    if (!PyArg_ParseTuple(args, "OOOLL", &lp_obj, &tokens_obj, &lengths_obj,
                          &end_token, &depth)) {
        return NULL;
    }
    log_probs = sequence_array(lp_obj, NPY_DOUBLE, 2, "log_probs", 0);
    tokens = sequence_array(tokens_obj, NPY_INT64, 2, "tokens", 0);
    lengths = sequence_array(lengths_obj, NPY_INT64, 1, "lengths", 1);
    if (log_probs == NULL || tokens == NULL || lengths == NULL) {
        goto fail;
    }
    npy_intp S = PyArray_DIM(log_probs, 0), V = PyArray_DIM(log_probs, 1);
    npy_intp n = PyArray_DIM(tokens, 0), T = PyArray_DIM(tokens, 1);
    if (check_vocabulary(V, end_token, "log_probs") < 0 ||
        check_table_depth(log_probs, depth, "log_probs") < 0 ||
        check_length(lengths, n, "lengths") < 0) {
        goto fail;
    }
    /* the tokens the kernel reads: copied and checked in one pass */
    owned = owned_indices(tokens, V, "tokens");
    if (owned == NULL) {
        goto fail;
    }
    const int64_t *len = PyArray_DATA(lengths);
    for (npy_intp i = 0; i < n; i++) {
        if (len[i] < 1 || len[i] > T) {
            PyErr_Format(PyExc_ValueError,
                         "lengths holds %lld at position %zd, outside "
                         "[1, %zd] (the columns of tokens)",
                         (long long)len[i], (Py_ssize_t)i, (Py_ssize_t)T);
            goto fail;
        }
    }
    /* every entry is written (the arrays are dropped on an error) */
    npy_intp dims[2] = {n, T};
    states = (PyArrayObject *)PyArray_EMPTY(2, dims, NPY_INT64, 0);
    logp = (PyArrayObject *)PyArray_EMPTY(2, dims, NPY_DOUBLE, 0);
    if (states == NULL || logp == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_sequence_log_probs(
        PyArray_DATA(log_probs), S, V, PyArray_DATA(owned), len, n, T,
        (int64_t)end_token, (int64_t)depth, PyArray_DATA(states),
        PyArray_DATA(logp));
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "sequence_log_probs");
        goto fail;
    }
    result = Py_BuildValue("OO", states, logp);
fail:
    Py_XDECREF(log_probs);
    Py_XDECREF(tokens);
    Py_XDECREF(owned);
    Py_XDECREF(lengths);
    Py_XDECREF(states);
    Py_XDECREF(logp);
    return result;
}

PyDoc_STRVAR(soft_backup_doc,
"soft_backup(ref_log_probs, scaled_rewards, max_length, end_token)\n--\n\n"
"(optimum (P, V), values (N,)): the soft Bellman backup over the whole-\n"
"prefix trie, in units of beta; ref_log_probs has one row per prefix of\n"
"0 .. max_length - 2 words (P of them), scaled_rewards r / beta one value\n"
"per prefix of 0 .. max_length - 1 words (N).");

static PyObject *py_soft_backup(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *ref_obj, *r_obj;
    Py_ssize_t T;
    long long end_token;
    PyArrayObject *ref = NULL, *rewards = NULL, *optimum = NULL;
    PyArrayObject *values = NULL;
    PyObject *result = NULL;
    int status;

    if (!PyArg_ParseTuple(args, "OOnL", &ref_obj, &r_obj, &T, &end_token)) {
        return NULL;
    }
    if (T < 1) {
        PyErr_Format(PyExc_ValueError, "max_length must be >= 1, got %zd",
                     T);
        return NULL;
    }
    ref = sequence_array(ref_obj, NPY_DOUBLE, 2, "ref_log_probs", 0);
    rewards = sequence_array(r_obj, NPY_DOUBLE, 1, "scaled_rewards", 0);
    if (ref == NULL || rewards == NULL) {
        goto fail;
    }
    npy_intp V = PyArray_DIM(ref, 1);
    if (check_vocabulary(V, end_token, "ref_log_probs") < 0) {
        goto fail;
    }
    const ptrdiff_t P = rlhf_n_prefixes(V - 1, T - 1);
    const ptrdiff_t N = rlhf_n_prefixes(V - 1, T);
    if (N < 0) {
        PyErr_Format(PyExc_ValueError,
                     "max_length %zd with %zd words makes more prefixes "
                     "than can be addressed",
                     T, (Py_ssize_t)(V - 1));
        goto fail;
    }
    if (check_shape_2d(ref, P, V, "ref_log_probs") < 0 ||
        check_length(rewards, N, "scaled_rewards") < 0) {
        goto fail;
    }
    optimum = new_array_2d(P, V, NPY_DOUBLE);
    values = new_vector(N);
    if (optimum == NULL || values == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_soft_backup(PyArray_DATA(ref), PyArray_DATA(rewards), V, T,
                              (int64_t)end_token, PyArray_DATA(optimum),
                              PyArray_DATA(values));
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "soft_backup");
        goto fail;
    }
    result = Py_BuildValue("OO", optimum, values);
fail:
    Py_XDECREF(ref);
    Py_XDECREF(rewards);
    Py_XDECREF(optimum);
    Py_XDECREF(values);
    return result;
}

PyDoc_STRVAR(gae_doc,
"gae(rewards, values, n_steps, gamma, lam)\n--\n\n"
"(advantages, returns), each (n, T): generalised advantage estimation\n"
"over the first n_steps[i] positions of row i, 0 beyond.");

static PyObject *py_gae(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *r_obj, *v_obj, *steps_obj;
    double gamma, lam;
    PyArrayObject *rewards = NULL, *values = NULL, *steps = NULL;
    PyArrayObject *adv = NULL, *returns = NULL;
    PyObject *result = NULL;
    int status;

    if (!PyArg_ParseTuple(args, "OOOdd", &r_obj, &v_obj, &steps_obj, &gamma,
                          &lam)) {
        return NULL;
    }
    if (check_unit_interval(gamma, "gamma") < 0 ||
        check_unit_interval(lam, "lam") < 0) {
        return NULL;
    }
    rewards = sequence_array(r_obj, NPY_DOUBLE, 2, "rewards", 0);
    values = sequence_array(v_obj, NPY_DOUBLE, 2, "values", 0);
    steps = sequence_array(steps_obj, NPY_INT64, 1, "n_steps", 1);
    if (rewards == NULL || values == NULL || steps == NULL) {
        goto fail;
    }
    npy_intp n = PyArray_DIM(rewards, 0), T = PyArray_DIM(rewards, 1);
    if (check_shape_2d(values, n, T, "values") < 0 ||
        check_length(steps, n, "n_steps") < 0) {
        goto fail;
    }
    const int64_t *s = PyArray_DATA(steps);
    for (npy_intp i = 0; i < n; i++) {
        if (s[i] < 0 || s[i] > T) {
            PyErr_Format(PyExc_ValueError,
                         "n_steps holds %lld at position %zd, outside "
                         "[0, %zd] (the columns of rewards)",
                         (long long)s[i], (Py_ssize_t)i, (Py_ssize_t)T);
            goto fail;
        }
    }
    adv = new_array_2d(n, T, NPY_DOUBLE);
    returns = new_array_2d(n, T, NPY_DOUBLE);
    if (adv == NULL || returns == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_gae(PyArray_DATA(rewards), PyArray_DATA(values), s, n, T,
                      gamma, lam, PyArray_DATA(adv), PyArray_DATA(returns));
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "gae");
        goto fail;
    }
    result = Py_BuildValue("OO", adv, returns);
fail:
    Py_XDECREF(rewards);
    Py_XDECREF(values);
    Py_XDECREF(steps);
    Py_XDECREF(adv);
    Py_XDECREF(returns);
    return result;
}

PyDoc_STRVAR(token_grad_doc,
"token_grad(log_probs, states, actions, coefs)\n--\n\n"
"The (S, V) gradient in logits of sum_i coefs_i log pi(a_i | s_i),\n"
"pi = exp(log_probs): coefs_i (e_{a_i} - pi(. | s_i)) added into row s_i;\n"
"states, actions and coefs are read raveled, negative states skipped.");

static PyObject *py_token_grad(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *lp_obj, *s_obj, *a_obj, *c_obj;
    PyArrayObject *log_probs = NULL, *states = NULL, *actions = NULL;
    PyArrayObject *coefs = NULL, *indices = NULL, *grad = NULL;
    int status;

    if (!PyArg_ParseTuple(args, "OOOO", &lp_obj, &s_obj, &a_obj, &c_obj)) {
        return NULL;
    }
    log_probs = sequence_array(lp_obj, NPY_DOUBLE, 2, "log_probs", 0);
    states = token_array(s_obj, NPY_INT64, "states", 0);
    actions = token_array(a_obj, NPY_INT64, "actions", 0);
    coefs = token_array(c_obj, NPY_DOUBLE, "coefs", 0);
    if (log_probs == NULL || states == NULL || actions == NULL ||
        coefs == NULL) {
        goto fail;
    }
    npy_intp S = PyArray_DIM(log_probs, 0), V = PyArray_DIM(log_probs, 1);
    npy_intp n = PyArray_SIZE(states);
    if (check_token_count(actions, n, "actions") < 0 ||
        check_token_count(coefs, n, "coefs") < 0) {
        goto fail;
    }
    indices = owned_token_indices(states, actions, S, V);
    grad = new_array_2d(S, V, NPY_DOUBLE);
    if (indices == NULL || grad == NULL) {
        goto fail;
    }
    const int64_t *own = PyArray_DATA(indices);
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_token_grad(PyArray_DATA(log_probs), S, V, own, own + n,
                             PyArray_DATA(coefs), n, PyArray_DATA(grad));
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "token_grad");
        goto fail;
    }
    Py_DECREF(log_probs);
    Py_DECREF(states);
    Py_DECREF(actions);
    Py_DECREF(coefs);
    Py_DECREF(indices);
    return (PyObject *)grad;
fail:
    Py_XDECREF(log_probs);
    Py_XDECREF(states);
    Py_XDECREF(actions);
    Py_XDECREF(coefs);
    Py_XDECREF(indices);
    Py_XDECREF(grad);
    return NULL;
}

PyDoc_STRVAR(token_ppo_adam_step_doc,
"token_ppo_adam_step(theta, m, v, ref_log_probs, states, actions, weights,\n"
"                    old_logp, advantages, clip, kl_coef, kl_kind, scale,\n"
"                    lr, beta1, beta2, eps, t)\n--\n\n"
"PPO's clipped surrogate summed over tokens (scale times the weighted\n"
"sum) of a tabular policy with logits ref_log_probs + theta, then one\n"
"Adam step on the whole (S, V) table.  Updates theta, m and v IN PLACE\n"
"and returns (loss, clip_fraction).  The per-token arrays are read\n"
"raveled; negative states and zero weights are skipped.");

static PyObject *py_token_ppo_adam_step(PyObject *Py_UNUSED(self),
                                        PyObject *args)
{
    PyObject *th_obj, *m_obj, *v_obj, *ref_obj, *s_obj, *a_obj, *w_obj;
    PyObject *old_obj, *adv_obj;
    double clip, kl_coef, scale, lr, beta1, beta2, eps;
    double loss = 0.0, clip_fraction = 0.0;
    int kl_kind, status;
    long long t;
    PyArrayObject *ref = NULL, *states = NULL, *actions = NULL;
    PyArrayObject *weights = NULL, *old = NULL, *adv = NULL;
    PyArrayObject *indices = NULL;
    static const char *const names[] = {
        "theta", "m", "v", "ref_log_probs", "weights", "old_logp",
        "advantages"};
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "OOOOOOOOOddidddddL", &th_obj, &m_obj,
                          &v_obj, &ref_obj, &s_obj, &a_obj, &w_obj, &old_obj,
                          &adv_obj, &clip, &kl_coef, &kl_kind, &scale, &lr,
                          &beta1, &beta2, &eps, &t)) {
        return NULL;
    }
    if (check_kl_kind(kl_kind) < 0 || check_nonnegative(clip, "clip") < 0) {
        return NULL;
    }
    if (t < 1) {
        PyErr_SetString(PyExc_ValueError, "t must be >= 1");
        return NULL;
    }
    ref = sequence_array(ref_obj, NPY_DOUBLE, 2, "ref_log_probs", 0);
    states = token_array(s_obj, NPY_INT64, "states", 0);
    actions = token_array(a_obj, NPY_INT64, "actions", 0);
    weights = token_array(w_obj, NPY_DOUBLE, "weights", 0);
    old = token_array(old_obj, NPY_DOUBLE, "old_logp", 0);
    adv = token_array(adv_obj, NPY_DOUBLE, "advantages", 0);
    if (ref == NULL || states == NULL || actions == NULL || weights == NULL ||
        old == NULL || adv == NULL) {
        goto fail;
    }
    npy_intp S = PyArray_DIM(ref, 0), V = PyArray_DIM(ref, 1);
    npy_intp n = PyArray_SIZE(states);
    if (check_state(th_obj, S, V, "theta") < 0 ||
        check_state(m_obj, S, V, "m") < 0 ||
        check_state(v_obj, S, V, "v") < 0 ||
        check_token_count(actions, n, "actions") < 0 ||
        check_token_count(weights, n, "weights") < 0 ||
        check_token_count(old, n, "old_logp") < 0 ||
        check_token_count(adv, n, "advantages") < 0) {
        goto fail;
    }
    indices = owned_token_indices(states, actions, S, V);
    if (indices == NULL) {
        goto fail;
    }
    PyArrayObject *state[3] = {(PyArrayObject *)th_obj, (PyArrayObject *)m_obj,
                               (PyArrayObject *)v_obj};
    PyArrayObject *inputs[4] = {ref, weights, old, adv};
    if (check_disjoint(state, inputs, 4, names) < 0) {
        goto fail;
    }
    const int64_t *own = PyArray_DATA(indices);
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_token_ppo_adam_step(
        PyArray_DATA(state[0]), PyArray_DATA(state[1]),
        PyArray_DATA(state[2]), PyArray_DATA(ref), S, V, own, own + n,
        PyArray_DATA(weights), PyArray_DATA(old), PyArray_DATA(adv), n,
        clip, kl_coef, kl_kind, scale, lr, beta1, beta2, eps, (int64_t)t,
        &loss, &clip_fraction);
    Py_END_ALLOW_THREADS
    if (status == RLHF_ENONFINITE) {
        PyErr_SetString(PyExc_ValueError,
                        "token_ppo_adam_step: a row of the logits "
                        "ref_log_probs + theta holds NaN or +inf, or is all "
                        "-inf");
        goto fail;
    }
    if (status < 0) {
        raise_status(status, "token_ppo_adam_step");
        goto fail;
    }
    result = Py_BuildValue("dd", loss, clip_fraction);
fail:
    Py_XDECREF(ref);
    Py_XDECREF(states);
    Py_XDECREF(actions);
    Py_XDECREF(weights);
    Py_XDECREF(old);
    Py_XDECREF(adv);
    Py_XDECREF(indices);
    return result;
}

PyDoc_STRVAR(value_adam_step_doc,
"value_adam_step(values, m, v, states, weights, returns, old_values,\n"
"                value_clip, scale, lr, beta1, beta2, eps, t)\n--\n\n"
"PPO's clipped value loss over tokens, scale * sum_i w_i max((V(s_i) -\n"
"R_i)^2, (V_clip - R_i)^2) / 2, then one Adam step on the (S,) table of\n"
"values.  Updates values, m and v IN PLACE and returns the loss.  The\n"
"per-token arrays are read raveled; negative states are skipped.");

static PyObject *py_value_adam_step(PyObject *Py_UNUSED(self),
                                    PyObject *args)
{
    PyObject *values_obj, *m_obj, *v_obj, *s_obj, *w_obj, *r_obj, *old_obj;
    double value_clip, scale, lr, beta1, beta2, eps, loss = 0.0;
    long long t;
    int status;
    PyArrayObject *states = NULL, *weights = NULL, *returns = NULL;
    PyArrayObject *old = NULL, *indices = NULL;
    static const char *const names[] = {"values", "m", "v", "weights",
                                        "returns", "old_values"};
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "OOOOOOOddddddL", &values_obj, &m_obj,
                          &v_obj, &s_obj, &w_obj, &r_obj, &old_obj,
                          &value_clip, &scale, &lr, &beta1, &beta2, &eps,
                          &t)) {
        return NULL;
    }
    if (check_nonnegative(value_clip, "value_clip") < 0) {
        return NULL;
    }
    if (t < 1) {
        PyErr_SetString(PyExc_ValueError, "t must be >= 1");
        return NULL;
    }
    if (!PyArray_Check(values_obj)) {
        PyErr_SetString(PyExc_TypeError,
                        "values must be a writeable, C-contiguous 1-d "
                        "float64 ndarray (it is written in place)");
        return NULL;
    }
    const npy_intp S = PyArray_SIZE((PyArrayObject *)values_obj);
    if (check_state_1d(values_obj, S, "values") < 0 ||
        check_state_1d(m_obj, S, "m") < 0 ||
        check_state_1d(v_obj, S, "v") < 0) {
        return NULL;
    }
    states = token_array(s_obj, NPY_INT64, "states", 0);
    weights = token_array(w_obj, NPY_DOUBLE, "weights", 0);
    returns = token_array(r_obj, NPY_DOUBLE, "returns", 0);
    old = token_array(old_obj, NPY_DOUBLE, "old_values", 0);
    if (states == NULL || weights == NULL || returns == NULL || old == NULL) {
        goto fail;
    }
    npy_intp n = PyArray_SIZE(states);
    if (check_token_count(weights, n, "weights") < 0 ||
        check_token_count(returns, n, "returns") < 0 ||
        check_token_count(old, n, "old_values") < 0) {
        goto fail;
    }
    indices = owned_token_indices(states, NULL, S, 0);
    if (indices == NULL) {
        goto fail;
    }
    PyArrayObject *state[3] = {(PyArrayObject *)values_obj,
                               (PyArrayObject *)m_obj,
                               (PyArrayObject *)v_obj};
    PyArrayObject *inputs[3] = {weights, returns, old};
    if (check_disjoint(state, inputs, 3, names) < 0) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_value_adam_step(
        PyArray_DATA(state[0]), PyArray_DATA(state[1]),
        PyArray_DATA(state[2]), S, PyArray_DATA(indices),
        PyArray_DATA(weights), PyArray_DATA(returns), PyArray_DATA(old), n,
        value_clip, scale, lr, beta1, beta2, eps, (int64_t)t, &loss);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        raise_status(status, "value_adam_step");
        goto fail;
    }
    result = PyFloat_FromDouble(loss);
fail:
    Py_XDECREF(states);
    Py_XDECREF(weights);
    Py_XDECREF(returns);
    Py_XDECREF(old);
    Py_XDECREF(indices);
    return result;
}

/* -- end of sequences -------------------------------------------------- */

static PyMethodDef core_methods[] = {
    {"logistic_loss_grad", (PyCFunction)(void (*)(void))py_logistic_loss_grad,
     METH_VARARGS | METH_KEYWORDS, logistic_loss_grad_doc},
    {"logistic_hessian", (PyCFunction)(void (*)(void))py_logistic_hessian,
     METH_VARARGS | METH_KEYWORDS, logistic_hessian_doc},
    {"logistic_fit", (PyCFunction)(void (*)(void))py_logistic_fit,
     METH_VARARGS | METH_KEYWORDS, logistic_fit_doc},
    {"lbfgs_minimize", (PyCFunction)(void (*)(void))py_lbfgs_minimize,
     METH_VARARGS | METH_KEYWORDS, lbfgs_minimize_doc},
    {"reweight", py_reweight, METH_VARARGS, reweight_doc},
    {"bt_loss_grad", (PyCFunction)(void (*)(void))py_bt_loss_grad,
     METH_VARARGS | METH_KEYWORDS, bt_loss_grad_doc},
    {"bt_hessian", py_bt_hessian, METH_VARARGS, bt_hessian_doc},
    {"pair_counts", (PyCFunction)(void (*)(void))py_pair_counts,
     METH_VARARGS | METH_KEYWORDS, pair_counts_doc},
    {"bt_fit", (PyCFunction)(void (*)(void))py_bt_fit,
     METH_VARARGS | METH_KEYWORDS, bt_fit_doc},
    {"constrained_policy", py_constrained_policy, METH_VARARGS,
     constrained_policy_doc},
    {"log_softmax", py_log_softmax, METH_VARARGS, log_softmax_doc},
    {"sample_categorical", py_sample_categorical, METH_VARARGS,
     sample_categorical_doc},
    {"shape_rewards", py_shape_rewards, METH_VARARGS, shape_rewards_doc},
    {"advantages", py_advantages, METH_VARARGS, advantages_doc},
    {"ppo_loss_grad", py_ppo_loss_grad, METH_VARARGS, ppo_loss_grad_doc},
    {"dpo_loss_grad", py_dpo_loss_grad, METH_VARARGS, dpo_loss_grad_doc},
    {"policy_stats", py_policy_stats, METH_VARARGS, policy_stats_doc},
    {"adam_step", py_adam_step, METH_VARARGS, adam_step_doc},
    {"ppo_adam_step", py_ppo_adam_step, METH_VARARGS, ppo_adam_step_doc},
    {"sample_sequences", py_sample_sequences, METH_VARARGS,
     sample_sequences_doc},
    {"sequence_log_probs", py_sequence_log_probs, METH_VARARGS,
     sequence_log_probs_doc},
    {"soft_backup", py_soft_backup, METH_VARARGS, soft_backup_doc},
    {"gae", py_gae, METH_VARARGS, gae_doc},
    {"token_grad", py_token_grad, METH_VARARGS, token_grad_doc},
    {"token_ppo_adam_step", py_token_ppo_adam_step, METH_VARARGS,
     token_ppo_adam_step_doc},
    {"value_adam_step", py_value_adam_step, METH_VARARGS,
     value_adam_step_doc},
    {"thread_cap", py_thread_cap, METH_VARARGS,
     "thread_cap(cap)\n--\n\nCap the threads of the kernels this thread "
     "calls from now on\n(0: no cap); returns the previous cap."},
    {"default_threads", py_default_threads, METH_NOARGS,
     "default_threads()\n--\n\nThe threads a kernel called from this "
     "thread uses by default."},
    {"has_openmp", py_openmp_threads, METH_NOARGS,
     "has_openmp()\n--\n\n1 when the kernels were built with OpenMP."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "rlhf._core",
    "The compiled kernels of rlhf (private; use the rlhf package).", -1,
    core_methods, NULL, NULL, NULL, NULL,
};

/*
 * The kernels' interrupt hook: with the GIL taken back for a moment, run
 * Python's pending signal handlers.  Ctrl-C's raises KeyboardInterrupt,
 * which stays set for the wrapper to return once the kernel has stopped.
 * Handlers run in the main thread only, so a kernel in another thread is
 * never stopped this way (as Python code in that thread is not).
 */
static unsigned long main_thread_ident = 0;

static int python_signal_pending(void)
{
    /* only the main thread runs handlers: elsewhere the GIL would be taken
     * for nothing */
    if (PyThread_get_thread_ident() != main_thread_ident) {
        return 0;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    const int pending = PyErr_CheckSignals() < 0;
    PyGILState_Release(gil);
    return pending;
}

#ifndef _WIN32
/* A child made by fork() runs every kernel on one thread (see rlhf.h). */
static void after_fork_in_child(void)
{
    rlhf_set_serial();
}
#endif

PyMODINIT_FUNC PyInit__core(void)
{
    if (PyArray_ImportNumPyAPI() < 0) {
        return NULL;
    }
#ifndef _WIN32
    if (pthread_atfork(NULL, NULL, after_fork_in_child) != 0) {
        PyErr_SetString(PyExc_ImportError,
                        "rlhf._core: could not register its fork handler");
        return NULL;
    }
#endif
    /* the interpreter's main thread, even when this module is first
     * imported in another one */
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *main_thread = threading == NULL ? NULL
        : PyObject_CallMethod(threading, "main_thread", NULL);
    PyObject *ident = main_thread == NULL ? NULL
        : PyObject_GetAttrString(main_thread, "ident");
    Py_XDECREF(threading);
    Py_XDECREF(main_thread);
    if (ident == NULL) {
        return NULL;
    }
    main_thread_ident = PyLong_AsUnsignedLong(ident);
    Py_DECREF(ident);
    if (PyErr_Occurred()) {
        return NULL;
    }
    rlhf_set_interrupt_hook(python_signal_pending);
    PyObject *module = PyModule_Create(&core_module);
    if (module != NULL &&
        PyModule_AddFunctions(module, core_gpt_methods) < 0) {
        Py_CLEAR(module);
    }
    return module;
}
