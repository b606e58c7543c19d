/*
 * fastpath._atomic: 64-bit atomic loads, stores and read-modify-writes on shared memory.
 *
 * Why by hand: cross-process RCU and the shm channel need acquire/release ordering on
 * words in a MAP_SHARED region. Python has no atomics; the `atomics` package goes through
 * cffi at ~4.7 us per load (measured here), slower than taking a lock, which defeats the
 * point. These are the compiler's __atomic builtins behind METH_FASTCALL: one call, one
 * instruction (plus the fence the ordering needs), on x86-64 and arm64 alike.
 *
 * An AtomicView holds a buffer export of a writable, 8-byte-aligned buffer (a memfd
 * mapping) for its lifetime: the mapping cannot be unmapped under it. Offsets are byte
 * offsets, checked for bounds and 8-byte alignment (a misaligned atomic may tear).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include "spin.h"

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int held;
} AtomicView;

static int
av_init(AtomicView *self, PyObject *args, PyObject *kwds)
{
    PyObject *obj;
    if (!PyArg_ParseTuple(args, "O:AtomicView", &obj))
        return -1;
    if (self->held) {
        PyBuffer_Release(&self->view);
        self->held = 0;
    }
    if (PyObject_GetBuffer(obj, &self->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    self->held = 1;
    if (((uintptr_t)self->view.buf) % 8 != 0) {
        PyBuffer_Release(&self->view);
        self->held = 0;
        PyErr_SetString(PyExc_ValueError, "AtomicView: buffer is not 8-byte aligned");
        return -1;
    }
    return 0;
}

static void
av_dealloc(AtomicView *self)
{
    if (self->held)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static inline uint64_t *
av_word(AtomicView *self, PyObject *offobj)
{
    if (!self->held) {
        PyErr_SetString(PyExc_ValueError, "AtomicView is released");
        return NULL;
    }
    Py_ssize_t off = PyLong_AsSsize_t(offobj);
    if (off == -1 && PyErr_Occurred())
        return NULL;
    if (off < 0 || off + 8 > self->view.len || (off & 7) != 0) {
        PyErr_Format(PyExc_IndexError, "offset %zd: out of range or not 8-byte aligned", off);
        return NULL;
    }
    return (uint64_t *)((char *)self->view.buf + off);
}

static inline int
arg_u64(PyObject *o, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = (uint64_t)v;
    return 0;
}

#define NARGS(n, name) \
    if (nargs != (n)) { PyErr_SetString(PyExc_TypeError, name ": wrong number of arguments"); return NULL; }

/* load(off) -> int: acquire load; later reads cannot move before it. */
static PyObject *
av_load(AtomicView *self, PyObject *const *args, Py_ssize_t nargs)
{
    NARGS(1, "load");
    uint64_t *w = av_word(self, args[0]);
    if (!w) return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_load_n(w, __ATOMIC_ACQUIRE));
}

/* store(off, value): release store; earlier writes are visible before it. */
static PyObject *
av_store(AtomicView *self, PyObject *const *args, Py_ssize_t nargs)
{
    NARGS(2, "store");
    uint64_t *w = av_word(self, args[0]);
    uint64_t v;
    if (!w || arg_u64(args[1], &v) < 0) return NULL;
    __atomic_store_n(w, v, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* fetch_add(off, delta) -> old value, sequentially consistent. */
static PyObject *
av_fetch_add(AtomicView *self, PyObject *const *args, Py_ssize_t nargs)
{
    NARGS(2, "fetch_add");
    uint64_t *w = av_word(self, args[0]);
    uint64_t v;
    if (!w || arg_u64(args[1], &v) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_fetch_add(w, v, __ATOMIC_SEQ_CST));
}

/* exchange(off, value) -> old value, sequentially consistent. */
static PyObject *
av_exchange(AtomicView *self, PyObject *const *args, Py_ssize_t nargs)
{
    NARGS(2, "exchange");
    uint64_t *w = av_word(self, args[0]);
    uint64_t v;
    if (!w || arg_u64(args[1], &v) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_exchange_n(w, v, __ATOMIC_SEQ_CST));
}

/* cas(off, expected, new) -> bool, sequentially consistent. */
static PyObject *
av_cas(AtomicView *self, PyObject *const *args, Py_ssize_t nargs)
{
    NARGS(3, "cas");
    uint64_t *w = av_word(self, args[0]);
    uint64_t expected, desired;
    if (!w || arg_u64(args[1], &expected) < 0 || arg_u64(args[2], &desired) < 0) return NULL;
    int ok = __atomic_compare_exchange_n(w, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return PyBool_FromLong(ok);
}

/* wait_change(off, old, max_ns) -> int: spin while the word at `off` equals `old`, for at
 * most max_ns nanoseconds; return the last value loaded (acquire). A Python loop of
 * load() sees a change 0.2-0.5 us late at best; here the change costs one cache-line
 * transfer. The GIL is given up between slices of SPIN_SLICE_NS (spin.h), where signals
 * are checked too. */
static PyObject *
av_wait_change(AtomicView *self, PyObject *const *args, Py_ssize_t nargs)
{
    NARGS(3, "wait_change");
    uint64_t *w = av_word(self, args[0]);
    uint64_t old, v;
    if (!w || arg_u64(args[1], &old) < 0) return NULL;
    long long max_ns = PyLong_AsLongLong(args[2]);
    if (max_ns == -1 && PyErr_Occurred()) return NULL;
    int64_t end = spin_mono_ns() + max_ns;
    for (;;) {
        v = spin_change(w, old, end - spin_mono_ns());
        if (v != old || spin_mono_ns() >= end)
            return PyLong_FromUnsignedLongLong(v);
        Py_BEGIN_ALLOW_THREADS
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0)
            return NULL;
        w = av_word(self, args[0]);  /* another thread may have released the view */
        if (!w) return NULL;
    }
}

/* release(): give the buffer back; the view is unusable afterwards. */
static PyObject *
av_release(AtomicView *self, PyObject *Py_UNUSED(ignored))
{
    if (self->held) {
        PyBuffer_Release(&self->view);
        self->held = 0;
    }
    Py_RETURN_NONE;
}

static PyObject *
av_enter(AtomicView *self, PyObject *Py_UNUSED(ignored))
{
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *
av_exit(AtomicView *self, PyObject *args)
{
    return av_release(self, NULL);
}

static PyObject *
av_len(AtomicView *self, void *closure)
{
    return PyLong_FromSsize_t(self->held ? self->view.len : 0);
}

static PyMethodDef av_methods[] = {
    {"load", (PyCFunction)(void (*)(void))av_load, METH_FASTCALL, "load(off) -> int (acquire)"},
    {"store", (PyCFunction)(void (*)(void))av_store, METH_FASTCALL, "store(off, value) (release)"},
    {"fetch_add", (PyCFunction)(void (*)(void))av_fetch_add, METH_FASTCALL, "fetch_add(off, delta) -> old"},
    {"exchange", (PyCFunction)(void (*)(void))av_exchange, METH_FASTCALL, "exchange(off, value) -> old"},
    {"cas", (PyCFunction)(void (*)(void))av_cas, METH_FASTCALL, "cas(off, expected, new) -> bool"},
    {"wait_change", (PyCFunction)(void (*)(void))av_wait_change, METH_FASTCALL,
     "wait_change(off, old, max_ns) -> int: spin while the word equals old"},
    {"release", (PyCFunction)av_release, METH_NOARGS, "release the buffer"},
    {"__enter__", (PyCFunction)av_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)av_exit, METH_VARARGS, NULL},
    {NULL}
};

static PyGetSetDef av_getset[] = {
    {"nbytes", (getter)av_len, NULL, "size of the viewed buffer", NULL},
    {NULL}
};

static PyTypeObject AtomicViewType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fastpath._atomic.AtomicView",
    .tp_basicsize = sizeof(AtomicView),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Atomic 64-bit operations on an 8-byte-aligned writable buffer.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)av_init,
    .tp_dealloc = (destructor)av_dealloc,
    .tp_methods = av_methods,
    .tp_getset = av_getset,
};

/* fence(): a full (sequentially consistent) memory barrier. */
static PyObject *
mod_fence(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyMethodDef mod_methods[] = {
    {"fence", (PyCFunction)mod_fence, METH_NOARGS, "full memory barrier"},
    {NULL}
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "fastpath._atomic",
    "64-bit atomics with acquire/release ordering on shared memory.", -1, mod_methods,
};

PyMODINIT_FUNC
PyInit__atomic(void)
{
    if (PyType_Ready(&AtomicViewType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m)
        return NULL;
    Py_INCREF(&AtomicViewType);
    if (PyModule_AddObject(m, "AtomicView", (PyObject *)&AtomicViewType) < 0) {
        Py_DECREF(&AtomicViewType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
