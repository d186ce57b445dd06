/*
 * _core.c - the one file that sees Python: it parses arguments, converts
 * them to C-contiguous float64 / int64 buffers (copying only when needed,
 * never writing into the caller's arrays), checks shapes again, allocates
 * outputs and scratch, releases the GIL around the kernels and turns a
 * kernel's status into an exception.  Every public check of values (NaN,
 * labels, parameters) lives in the Python layer; what is checked here is
 * what the kernels need in order never to read or write out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Keep in sync with the oldest numpy in pyproject.toml's dependencies. */
#define NPY_NO_DEPRECATED_API NPY_1_25_API_VERSION
#define NPY_TARGET_VERSION NPY_1_25_API_VERSION
#include <numpy/arrayobject.h>

#include <stdlib.h>

#include "rlhf.h"

/* One table from kernel status to exception. */
static PyObject *raise_status(int status, const char *where)
{
    switch (status) {
    case RLHF_ENOMEM:
        return PyErr_NoMemory();
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
    default:
        PyErr_Format(PyExc_SystemError, "%s: unknown status %d", where,
                     status);
        return NULL;
    }
}

/* A read-only, aligned, C-contiguous array of the given type, or NULL. */
static PyArrayObject *as_array(PyObject *obj, int typenum, int ndim,
                               const char *name)
{
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OTF(
        obj, typenum, NPY_ARRAY_IN_ARRAY);
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
    if (n_cols < 0) {
        PyErr_SetString(PyExc_ValueError, "X: n_cols must be >= 0");
        return -1;
    }
    refs->data = as_array(data, NPY_DOUBLE, 1, "X.data");
    refs->indices = as_array(indices, NPY_INT64, 1, "X.indices");
    refs->indptr = as_array(indptr, NPY_INT64, 1, "X.indptr");
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
    ptrdiff_t size = rlhf_logistic_scratch_size(&a->problem);
    a->scratch = malloc((size_t)(size > 0 ? size : 1) * sizeof(double));
    if (a->scratch == NULL) {
        PyErr_NoMemory();
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
    int fit_intercept, n_threads = 0;
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
    rlhf_logistic_loss_grad(&a.problem, PyArray_DATA(w), &loss,
                            PyArray_DATA(grad));
    Py_END_ALLOW_THREADS
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
    int fit_intercept;
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
    rlhf_logistic_hessian(&a.problem, PyArray_DATA(w), PyArray_DATA(hessian));
    Py_END_ALLOW_THREADS
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
    ptrdiff_t size = newton ? rlhf_newton_work_size(np)
                            : rlhf_lbfgs_work_size(np, m);
    work = malloc((size_t)(size > 0 ? size : 1) * sizeof(double));
    if (work == NULL) {
        PyErr_NoMemory();
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
    ptrdiff_t size = rlhf_lbfgs_work_size(n, m);
    work = malloc((size_t)(size > 0 ? size : 1) * sizeof(double));
    if (x == NULL || g == NULL || work == NULL) {
        if (work == NULL) {
            PyErr_NoMemory();
        }
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

static PyObject *py_openmp_threads(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused))
{
#ifdef _OPENMP
    return PyLong_FromLong(1);
#else
    return PyLong_FromLong(0);
#endif
}

/* -- Bradley-Terry and Plackett-Luce (bradley_terry.c) ------------------ */

/* Everything an rlhf_bt holds, parsed from Python. */
typedef struct {
    rlhf_bt problem;
    matrix_refs F;
    PyArrayObject *data, *sample_weight, *margin, *tie;
    double *scratch;
} bt_args;

static void release_bt(bt_args *a)
{
    release_matrix(&a->F);
    Py_XDECREF(a->data);
    Py_XDECREF(a->sample_weight);
    Py_XDECREF(a->margin);
    Py_XDECREF(a->tie);
    free(a->scratch);
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
    if (n_items < 1 || (likelihood != RLHF_BRADLEY_TERRY &&
                        likelihood != RLHF_PLACKETT_LUCE) ||
        tie_model < RLHF_TIES_NONE || tie_model > RLHF_TIES_DAVIDSON ||
        !(alpha >= 0.0) || !isfinite(alpha)) {
        PyErr_SetString(PyExc_ValueError,
                        "problem: n_items must be >= 1, likelihood 0 or 1, "
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
    a->data = as_array(data, NPY_INT64, 2, "comparisons");
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
    ptrdiff_t size = rlhf_bt_scratch_size(p);
    a->scratch = malloc((size_t)(size > 0 ? size : 1) * sizeof(double));
    if (a->scratch == NULL) {
        PyErr_NoMemory();
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
"The preference objective and its gradient at x: (loss, grad).");

static PyObject *py_bt_loss_grad(PyObject *Py_UNUSED(self), PyObject *args,
                                 PyObject *kwargs)
{
    static char *kwlist[] = {"problem", "x", "n_threads", NULL};
    PyObject *problem, *x_obj, *result = NULL;
    int n_threads = 0;
    double loss = 0.0;
    bt_args a;
    PyArrayObject *x = NULL, *grad = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O|i", kwlist,
                                     &PyTuple_Type, &problem, &x_obj,
                                     &n_threads)) {
        return NULL;
    }
    if (parse_bt(&a, problem, n_threads) < 0) {
        goto fail;
    }
    x = bt_params(x_obj, &a);
    if (x == NULL) {
        goto fail;
    }
    grad = new_vector(rlhf_bt_n_params(&a.problem));
    if (grad == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    rlhf_bt_loss_grad(&a.problem, PyArray_DATA(x), &loss, PyArray_DATA(grad));
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("dO", loss, grad);
fail:
    release_bt(&a);
    Py_XDECREF(x);
    Py_XDECREF(grad);
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
    ptrdiff_t size = rlhf_bt_work_size(&a.problem, newton);
    work = malloc((size_t)(size > 0 ? size : 1) * sizeof(double));
    if (work == NULL) {
        PyErr_NoMemory();
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
    {"bt_fit", (PyCFunction)(void (*)(void))py_bt_fit,
     METH_VARARGS | METH_KEYWORDS, bt_fit_doc},
    {"constrained_policy", py_constrained_policy, METH_VARARGS,
     constrained_policy_doc},
    {"has_openmp", py_openmp_threads, METH_NOARGS,
     "has_openmp()\n--\n\n1 when the kernels were built with OpenMP."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "rlhf._core",
    "The compiled kernels of rlhf (private; use the rlhf package).", -1,
    core_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
    if (PyArray_ImportNumPyAPI() < 0) {
        return NULL;
    }
    return PyModule_Create(&core_module);
}
