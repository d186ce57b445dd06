/*
 * _core.h - what the files that see Python share: NumPy's API table (one
 * per extension module, imported in _core.c), the mapping from a kernel's
 * status to an exception, and each family's method table, added to the
 * module rlhf._core when it is created.
 */
#ifndef RLHF_CORE_H
#define RLHF_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Keep in sync with the oldest numpy in pyproject.toml's dependencies. */
#define NPY_NO_DEPRECATED_API NPY_1_25_API_VERSION
#define NPY_TARGET_VERSION NPY_1_25_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL rlhf_core_ARRAY_API
#ifndef RLHF_CORE_MAIN
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

/* Sets the exception for a kernel's negative status; returns NULL. */
PyObject *core_raise_status(int status, const char *where);

/* obj as an array of typenum converted with NumPy's flags, checked to have
 * ndim dimensions (a ValueError naming it otherwise), or NULL; NULL at
 * once when an exception is already set. */
PyArrayObject *core_as_array_with(PyObject *obj, int typenum, int ndim,
                                  const char *name, int flags);

/* _core_gpt.c: rlhf.TinyLM's kernels */
extern PyMethodDef core_gpt_methods[];

#endif /* RLHF_CORE_H */
