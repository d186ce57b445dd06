/*
 * _core_gpt.c - the Python side of gpt.c, rlhf.TinyLM's kernels.
 *
 * The model's own buffers (parameters, gradients, AdamW's moments and the
 * activations) belong to the TinyLM object and are passed in to be read or
 * written in place: they must be C-contiguous float32 arrays of exactly
 * the size the model's shape gives, and are never converted.  Token arrays
 * are always copied first, so the indices checked are the ones used
 * whatever another thread writes into the caller's array meanwhile.
 */
#include "_core.h"

#include <math.h>

#include "rlhf.h"

/* the largest count of floats any buffer here may hold */
#define MAX_FLOATS ((double)(PY_SSIZE_T_MAX / 8))

/* A model's shape from (n_layer, n_head, n_embd, vocab_size, block_size),
 * checked so that every size the kernels compute from it fits. */
static int parse_config(PyObject *obj, rlhf_gpt_config *g)
{
    Py_ssize_t v[5];
    if (!PyTuple_Check(obj)) {
        PyErr_SetString(PyExc_TypeError,
                        "config must be a tuple (n_layer, n_head, n_embd, "
                        "vocab_size, block_size)");
        return -1;
    }
    if (!PyArg_ParseTuple(obj, "nnnnn;config must be (n_layer, n_head, "
                          "n_embd, vocab_size, block_size)", &v[0], &v[1],
                          &v[2], &v[3], &v[4])) {
        return -1;
    }
    for (int i = 0; i < 5; i++) {
        if (v[i] < 1) {
            PyErr_SetString(PyExc_ValueError,
                            "config: every size must be >= 1");
            return -1;
        }
    }
    if (v[2] % v[1] != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "config: n_embd must be a multiple of n_head");
        return -1;
    }
    const double C = (double)v[2];
    if ((double)v[0] * 13.0 * C * C + ((double)v[3] + (double)v[4]) * C >
        MAX_FLOATS || C * C * 4.0 > MAX_FLOATS) {
        PyErr_SetString(PyExc_ValueError, "config: the model is too large");
        return -1;
    }
    g->n_layer = v[0];
    g->n_head = v[1];
    g->n_embd = v[2];
    g->vocab_size = v[3];
    g->block_size = v[4];
    return 0;
}

/* Whether a batch of B sequences of T tokens fits the model and memory. */
static int check_batch(const rlhf_gpt_config *g, Py_ssize_t B, Py_ssize_t T)
{
    if (T < 1 || T > g->block_size) {
        PyErr_Format(PyExc_ValueError,
                     "tokens: a sequence has %zd positions; it must have 1 "
                     "to block_size = %zd", T, (Py_ssize_t)g->block_size);
        return -1;
    }
    const double N = (double)B * (double)T, C = (double)g->n_embd;
    const double acts = (double)(g->n_layer + 1) * N * (16.0 * C + 4.0)
        + (double)g->n_layer * (double)B * (double)g->n_head * T * T
        + N * (C + 3.0 + (double)g->vocab_size);
    if (acts > MAX_FLOATS || N * (4.0 * C + (double)g->vocab_size) >
        MAX_FLOATS) {
        PyErr_SetString(PyExc_MemoryError,
                        "tokens: the batch is too large to hold");
        return -1;
    }
    return 0;
}

/* One of the model's own float32 buffers: exactly n floats, C-contiguous,
 * aligned, writable when it is to be written. */
static float *model_buffer(PyObject *obj, Py_ssize_t n, int writable,
                           const char *name)
{
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a NumPy array", name);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    const int flags = NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED
        | (writable ? NPY_ARRAY_WRITEABLE : 0);
    if (PyArray_TYPE(arr) != NPY_FLOAT32 ||
        !PyArray_CHKFLAGS(arr, flags) || PyArray_SIZE(arr) != n) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be a C-contiguous%s float32 array of %zd "
                     "entries", name, writable ? ", writable" : "", n);
        return NULL;
    }
    return (float *)PyArray_DATA(arr);
}

/* A private int64 copy of an array of ndim dimensions (floats cast). */
static PyArrayObject *owned_int64(PyObject *obj, int ndim, const char *name)
{
    return core_as_array_with(obj, NPY_INT64, ndim, name,
                              NPY_ARRAY_IN_ARRAY | NPY_ARRAY_ENSURECOPY |
                              NPY_ARRAY_FORCECAST);
}

static PyObject *token_error(const char *where, Py_ssize_t V)
{
    PyErr_Format(PyExc_ValueError,
                 "%s: every token must be in [0, vocab_size = %zd)", where, V);
    return NULL;
}

PyDoc_STRVAR(gpt_sizes_doc,
"gpt_sizes(config, B, T)\n--\n\n"
"(n_params, n_acts, hidden, lse, logits): the floats of the parameters and\n"
"of the activations of a batch of B sequences of T tokens, and where the\n"
"last hidden state (B*T, C), the log-normalisers (B*T,) and the logits\n"
"(B*T, V) start in the activations.");

static PyObject *py_gpt_sizes(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *config;
    Py_ssize_t B, T;
    rlhf_gpt_config g;
    if (!PyArg_ParseTuple(args, "Onn", &config, &B, &T) ||
        parse_config(config, &g) < 0) {
        return NULL;
    }
    if (B < 1) {
        PyErr_Format(PyExc_ValueError, "B must be >= 1, got %zd", B);
        return NULL;
    }
    if (check_batch(&g, B, T) < 0) {
        return NULL;
    }
    ptrdiff_t hidden, lse, logits;
    rlhf_gpt_tail_offsets(&g, B, T, &hidden, &lse, &logits);
    return Py_BuildValue("nnnnn", (Py_ssize_t)rlhf_gpt_n_params(&g),
                         (Py_ssize_t)rlhf_gpt_n_acts(&g, B, T),
                         (Py_ssize_t)hidden, (Py_ssize_t)lse,
                         (Py_ssize_t)logits);
}

/* The parsed arguments every pass shares. */
typedef struct {
    rlhf_gpt_config g;
    float *params, *acts;
    PyArrayObject *tokens;
    Py_ssize_t B, T;
} pass_args;

static int parse_pass(pass_args *a, PyObject *config, PyObject *params,
                      PyObject *tokens, PyObject *acts)
{
    a->tokens = NULL;
    if (parse_config(config, &a->g) < 0) {
        return -1;
    }
    a->params = model_buffer(params, rlhf_gpt_n_params(&a->g), 0, "params");
    if (a->params == NULL) {
        return -1;
    }
    a->tokens = owned_int64(tokens, 2, "tokens");
    if (a->tokens == NULL) {
        return -1;
    }
    a->B = PyArray_DIM(a->tokens, 0);
    a->T = PyArray_DIM(a->tokens, 1);
    if (a->B < 1) {
        PyErr_SetString(PyExc_ValueError, "tokens: the batch is empty");
        return -1;
    }
    if (check_batch(&a->g, a->B, a->T) < 0) {
        return -1;
    }
    a->acts = model_buffer(acts, rlhf_gpt_n_acts(&a->g, a->B, a->T), 1,
                           "acts");
    return a->acts == NULL ? -1 : 0;
}

PyDoc_STRVAR(gpt_forward_doc,
"gpt_forward(config, params, tokens, acts)\n--\n\n"
"The forward pass of tokens (B, T) into acts (see gpt_sizes).");

static PyObject *py_gpt_forward(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *config, *params, *tokens, *acts;
    pass_args a;
    int status;
    if (!PyArg_ParseTuple(args, "OOOO", &config, &params, &tokens, &acts)) {
        return NULL;
    }
    if (parse_pass(&a, config, params, tokens, acts) < 0) {
        Py_XDECREF(a.tokens);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_gpt_forward(&a.g, a.params, PyArray_DATA(a.tokens), a.B,
                              a.T, a.acts);
    Py_END_ALLOW_THREADS
    Py_DECREF(a.tokens);
    if (status == RLHF_EVALUE) {
        return token_error("tokens", a.g.vocab_size);
    }
    if (status < 0) {
        return core_raise_status(status, "gpt_forward");
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(gpt_token_stats_doc,
"gpt_token_stats(config, acts, targets, entropy)\n--\n\n"
"(logp (B, T) float32, entropy (B, T) float32 or None) after a forward\n"
"pass: log p(targets) at each position, and the entropy of each\n"
"position's distribution when entropy is true.");

static PyObject *py_gpt_token_stats(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *config, *acts_obj, *targets_obj;
    int want_entropy;
    rlhf_gpt_config g;
    PyArrayObject *targets = NULL, *logp = NULL, *entropy = NULL;
    PyObject *result = NULL;
    int status;
    if (!PyArg_ParseTuple(args, "OOOp", &config, &acts_obj, &targets_obj,
                          &want_entropy) ||
        parse_config(config, &g) < 0) {
        return NULL;
    }
    targets = owned_int64(targets_obj, 2, "targets");
    if (targets == NULL) {
        return NULL;
    }
    const Py_ssize_t B = PyArray_DIM(targets, 0), T = PyArray_DIM(targets, 1);
    if (B < 1 || check_batch(&g, B, T) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "targets: the batch is empty");
        }
        goto fail;
    }
    float *acts = model_buffer(acts_obj, rlhf_gpt_n_acts(&g, B, T), 0,
                               "acts");
    if (acts == NULL) {
        goto fail;
    }
    npy_intp dims[2] = {B, T};
    logp = (PyArrayObject *)PyArray_EMPTY(2, dims, NPY_FLOAT32, 0);
    if (want_entropy) {
        entropy = (PyArrayObject *)PyArray_EMPTY(2, dims, NPY_FLOAT32, 0);
    }
    if (logp == NULL || (want_entropy && entropy == NULL)) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_gpt_token_stats(&g, acts, B, T, PyArray_DATA(targets),
                                  PyArray_DATA(logp),
                                  entropy != NULL ? PyArray_DATA(entropy)
                                  : NULL);
    Py_END_ALLOW_THREADS
    if (status == RLHF_EVALUE) {
        token_error("targets", g.vocab_size);
        goto fail;
    }
    if (status < 0) {
        core_raise_status(status, "gpt_token_stats");
        goto fail;
    }
    result = Py_BuildValue("OO", logp,
                           entropy != NULL ? (PyObject *)entropy : Py_None);
fail:
    Py_XDECREF(targets);
    Py_XDECREF(logp);
    Py_XDECREF(entropy);
    return result;
}

PyDoc_STRVAR(gpt_backward_doc,
"gpt_backward(config, params, tokens, acts, targets, coef, grads)\n--\n\n"
"grads = the gradient of -sum coef * log p(targets | tokens) after\n"
"gpt_forward(config, params, tokens, acts); coef is (B, T).");

static PyObject *py_gpt_backward(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *config, *params, *tokens, *acts, *targets_obj, *coef_obj,
             *grads_obj;
    pass_args a;
    PyArrayObject *targets = NULL, *coef = NULL;
    PyObject *result = NULL;
    int status;
    if (!PyArg_ParseTuple(args, "OOOOOOO", &config, &params, &tokens, &acts,
                          &targets_obj, &coef_obj, &grads_obj)) {
        return NULL;
    }
    if (parse_pass(&a, config, params, tokens, acts) < 0) {
        goto fail;
    }
    float *grads = model_buffer(grads_obj, rlhf_gpt_n_params(&a.g), 1,
                                "grads");
    if (grads == NULL) {
        goto fail;
    }
    targets = owned_int64(targets_obj, 2, "targets");
    coef = targets == NULL ? NULL : (PyArrayObject *)PyArray_FROM_OTF(
        coef_obj, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (coef == NULL) {
        goto fail;
    }
    if (PyArray_NDIM(targets) != 2 || PyArray_DIM(targets, 0) != a.B ||
        PyArray_DIM(targets, 1) != a.T || PyArray_NDIM(coef) != 2 ||
        PyArray_DIM(coef, 0) != a.B || PyArray_DIM(coef, 1) != a.T) {
        PyErr_SetString(PyExc_ValueError,
                        "targets and coef must have the shape of tokens");
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_gpt_backward(&a.g, a.params, PyArray_DATA(a.tokens), a.B,
                               a.T, a.acts, PyArray_DATA(targets),
                               PyArray_DATA(coef), grads);
    Py_END_ALLOW_THREADS
    if (status == RLHF_EVALUE) {
        token_error("tokens and targets", a.g.vocab_size);
        goto fail;
    }
    if (status < 0) {
        core_raise_status(status, "gpt_backward");
        goto fail;
    }
    Py_INCREF(Py_None);  /* Py_NewRef is 3.10+; 3.9 is supported */
    result = Py_None;
fail:
    Py_XDECREF(a.tokens);
    Py_XDECREF(targets);
    Py_XDECREF(coef);
    return result;
}

PyDoc_STRVAR(gpt_adamw_doc,
"gpt_adamw(params, grads, m, v, decay, lr, beta1, beta2, eps,\n"
"          weight_decay, step, max_norm)\n--\n\n"
"One AdamW step in place on params, m and v (float32), the gradient first\n"
"clipped to norm max_norm (<= 0: never); decay (uint8) marks the entries\n"
"whose weight decays.  Returns the gradient's norm before clipping.");

static PyObject *py_gpt_adamw(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *p_obj, *g_obj, *m_obj, *v_obj, *d_obj;
    double lr, b1, b2, eps, wd, max_norm, norm = 0.0;
    long long step;
    int status;
    if (!PyArg_ParseTuple(args, "OOOOOdddddLd", &p_obj, &g_obj, &m_obj,
                          &v_obj, &d_obj, &lr, &b1, &b2, &eps, &wd, &step,
                          &max_norm)) {
        return NULL;
    }
    if (!PyArray_Check(p_obj)) {
        PyErr_SetString(PyExc_TypeError, "params must be a NumPy array");
        return NULL;
    }
    const Py_ssize_t n = PyArray_SIZE((PyArrayObject *)p_obj);
    float *p = model_buffer(p_obj, n, 1, "params");
    float *g = p == NULL ? NULL : model_buffer(g_obj, n, 0, "grads");
    float *m = g == NULL ? NULL : model_buffer(m_obj, n, 1, "m");
    float *v = m == NULL ? NULL : model_buffer(v_obj, n, 1, "v");
    if (v == NULL) {
        return NULL;
    }
    if (!PyArray_Check(d_obj) ||
        PyArray_TYPE((PyArrayObject *)d_obj) != NPY_UINT8 ||
        !PyArray_CHKFLAGS((PyArrayObject *)d_obj, NPY_ARRAY_C_CONTIGUOUS) ||
        PyArray_SIZE((PyArrayObject *)d_obj) != n) {
        PyErr_Format(PyExc_ValueError,
                     "decay must be a C-contiguous uint8 array of %zd "
                     "entries", n);
        return NULL;
    }
    if (step < 1 || !(b1 >= 0.0 && b1 < 1.0) || !(b2 >= 0.0 && b2 < 1.0)) {
        PyErr_SetString(PyExc_ValueError,
                        "gpt_adamw: step must be >= 1 and the betas in "
                        "[0, 1)");
        return NULL;
    }
    const uint8_t *d = PyArray_DATA((PyArrayObject *)d_obj);
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_gpt_adamw(p, g, m, v, d, n, lr, b1, b2, eps, wd,
                            (int64_t)step, max_norm, &norm);
    Py_END_ALLOW_THREADS
    if (status == RLHF_ENONFINITE) {
        PyErr_SetString(PyExc_FloatingPointError,
                        "gpt_adamw: the gradient is not finite; the "
                        "parameters were left as they were");
        return NULL;
    }
    if (status < 0) {
        return core_raise_status(status, "gpt_adamw");
    }
    return PyFloat_FromDouble(norm);
}

PyDoc_STRVAR(gpt_generate_doc,
"gpt_generate(config, params, prompts, lengths, max_new, temperature,\n"
"             top_k, n_allowed, seed, eot)\n--\n\n"
"(tokens (n, block_size) int64, logp (n, block_size) float32, lengths (n,)\n"
"int64): each prompt (the first lengths[i] tokens of row i of prompts)\n"
"continued by up to max_new sampled tokens, with a key-value cache; only\n"
"tokens below n_allowed are drawn.");

static PyObject *py_gpt_generate(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *config, *params_obj, *prompts_obj, *lengths_obj;
    Py_ssize_t max_new, top_k, n_allowed;
    double temperature;
    unsigned long long seed;
    long long eot;
    rlhf_gpt_config g;
    PyArrayObject *prompts = NULL, *lengths = NULL, *tokens = NULL,
                  *logp = NULL, *out_lengths = NULL;
    PyObject *result = NULL;
    int status;
    if (!PyArg_ParseTuple(args, "OOOOndnnKL", &config, &params_obj,
                          &prompts_obj, &lengths_obj, &max_new, &temperature,
                          &top_k, &n_allowed, &seed, &eot) ||
        parse_config(config, &g) < 0) {
        return NULL;
    }
    float *params = model_buffer(params_obj, rlhf_gpt_n_params(&g), 0,
                                 "params");
    if (params == NULL) {
        return NULL;
    }
    if (max_new < 0 || !(temperature >= 0.0) || isinf(temperature) ||
        eot < 0 || eot >= g.vocab_size || n_allowed < 1 ||
        n_allowed > g.vocab_size || eot >= n_allowed) {
        PyErr_SetString(PyExc_ValueError,
                        "gpt_generate: max_new must be >= 0, temperature "
                        "finite and >= 0, n_allowed in [1, vocab_size] and "
                        "eot an allowed token");
        return NULL;
    }
    prompts = owned_int64(prompts_obj, 2, "prompts");
    lengths = prompts == NULL ? NULL : owned_int64(lengths_obj, 1, "lengths");
    if (lengths == NULL) {
        goto fail;
    }
    const Py_ssize_t n = PyArray_DIM(prompts, 0), P = PyArray_DIM(prompts, 1);
    if (PyArray_DIM(lengths, 0) != n) {
        PyErr_SetString(PyExc_ValueError,
                        "lengths must have one entry per prompt");
        goto fail;
    }
    if ((double)n * (double)g.block_size > MAX_FLOATS) {
        PyErr_SetString(PyExc_MemoryError, "prompts: too many to hold");
        goto fail;
    }
    npy_intp dims[2] = {n, g.block_size}, count = n;
    tokens = (PyArrayObject *)PyArray_EMPTY(2, dims, NPY_INT64, 0);
    logp = (PyArrayObject *)PyArray_EMPTY(2, dims, NPY_FLOAT32, 0);
    out_lengths = (PyArrayObject *)PyArray_EMPTY(1, &count, NPY_INT64, 0);
    if (tokens == NULL || logp == NULL || out_lengths == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    status = rlhf_gpt_generate(&g, params, PyArray_DATA(prompts), n, P,
                               PyArray_DATA(lengths), max_new, temperature,
                               top_k, n_allowed, (uint64_t)seed,
                               (int64_t)eot,
                               PyArray_DATA(tokens), PyArray_DATA(logp),
                               PyArray_DATA(out_lengths));
    Py_END_ALLOW_THREADS
    if (status == RLHF_EVALUE) {
        PyErr_Format(PyExc_ValueError,
                     "prompts: every prompt needs 1 to block_size = %zd "
                     "tokens, each in [0, vocab_size = %zd)",
                     (Py_ssize_t)g.block_size, (Py_ssize_t)g.vocab_size);
        goto fail;
    }
    if (status < 0) {
        core_raise_status(status, "gpt_generate");
        goto fail;
    }
    result = Py_BuildValue("OOO", tokens, logp, out_lengths);
fail:
    Py_XDECREF(prompts);
    Py_XDECREF(lengths);
    Py_XDECREF(tokens);
    Py_XDECREF(logp);
    Py_XDECREF(out_lengths);
    return result;
}

PyMethodDef core_gpt_methods[] = {
    {"gpt_sizes", py_gpt_sizes, METH_VARARGS, gpt_sizes_doc},
    {"gpt_forward", py_gpt_forward, METH_VARARGS, gpt_forward_doc},
    {"gpt_token_stats", py_gpt_token_stats, METH_VARARGS,
     gpt_token_stats_doc},
    {"gpt_backward", py_gpt_backward, METH_VARARGS, gpt_backward_doc},
    {"gpt_adamw", py_gpt_adamw, METH_VARARGS, gpt_adamw_doc},
    {"gpt_generate", py_gpt_generate, METH_VARARGS, gpt_generate_doc},
    {NULL, NULL, 0, NULL},
};
