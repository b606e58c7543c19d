/*
 * fastpath.shm._ring: the per-message path of a Channel end (loan/commit, read/release).
 *
 * Why by hand: in Python these four calls cost ~1.3 us per message (attribute loads, two
 * atomics calls, index arithmetic, two memoryview slices), several times the cache-line
 * transfer a round trip needs. Here each is one C call that does the atomics, the checks
 * and one slice of a memoryview.
 *
 * The layout (offsets, slot geometry) comes from fastpath/shm/ring.py through the
 * constructor, so it is written down once. The Python side (channel.py) keeps everything
 * that is not the fast case: every method here *declines* (returns None) when it cannot
 * finish (a ring full or empty, a peer's closed flag, counters or a length that make no
 * sense, a view still out), and channel.py then says why, waits or raises.
 *
 * loan() and read() take an optional spin budget: on a full or empty ring they spin on the
 * peer's counter (spin.h) before declining, so a spinning side returns one cache-line
 * transfer after the peer's commit or release, without going back to Python first.
 *
 * The api_* methods are a Producer's / Consumer's public loan, commit, read and release
 * themselves (channel.py binds them on the instance, so a call runs no Python frame):
 * they finish the fast case here, wake a sleeping peer through its eventfd, and call the
 * owner's Python slow path (through a weak reference: no cycle) for everything else.
 *
 * Views are slices of memoryviews the caller passes in (writable for a producer,
 * read-only for a consumer), never raw pointers: the mmap refuses to close while one is
 * alive, as it does for views made in Python. The ordering is channel.py's: payload and
 * length with plain stores, head/tail published with a seq_cst exchange (release plus the
 * Dekker check), the peer's counter read with an acquire load.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <unistd.h>
#include "../spin.h"

typedef struct {
    PyObject_HEAD
    Py_buffer buf;          /* the whole region, for the atomics and the length words */
    int held;
    PyObject *base;         /* the memoryview slots are sliced from */
    PyObject *out;          /* the view on loan / being read, or NULL */
    int producer;
    uint64_t slots, capacity, stride, control, slot_header;
    Py_ssize_t off_head, off_tail, off_peer_waiting, off_peer_closed;
    uint64_t head, tail;    /* our cached copies; ours is authoritative, the peer's is a snapshot */
    PyObject *owner;        /* weakref to the Producer/Consumer, for the slow paths */
    int wake_efd;           /* the peer's eventfd; -1 once closed */
    int64_t spin_ns;        /* the owner's spin budget */
    double spin_s;
} RingEnd;

static inline uint64_t *
word(RingEnd *r, Py_ssize_t off)
{
    return (uint64_t *)((char *)r->buf.buf + off);
}

static int
re_init(RingEnd *r, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"region", "base", "producer", "slots", "capacity", "stride", "control",
                         "slot_header", "off_head", "off_tail", "off_peer_waiting",
                         "off_peer_closed", NULL};
    PyObject *region, *base;
    int producer;
    unsigned long long slots, capacity, stride, control, slot_header;
    Py_ssize_t oh, ot, ow, oc;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOpKKKKKnnnn:RingEnd", kw, &region, &base,
                                     &producer, &slots, &capacity, &stride, &control,
                                     &slot_header, &oh, &ot, &ow, &oc))
        return -1;
    if (r->held) {
        PyErr_SetString(PyExc_RuntimeError, "RingEnd: already initialised");
        return -1;
    }
    if (!PyMemoryView_Check(base)) {
        PyErr_SetString(PyExc_TypeError, "RingEnd: base must be a memoryview");
        return -1;
    }
    if (PyObject_GetBuffer(region, &r->buf, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    r->held = 1;
    Py_ssize_t len = r->buf.len;
    Py_ssize_t offs[] = {oh, ot, ow, oc};
    for (int i = 0; i < 4; i++) {
        if (offs[i] < 0 || offs[i] + 8 > len || (offs[i] & 7) != 0) {
            PyErr_Format(PyExc_ValueError, "RingEnd: control offset %zd out of range", offs[i]);
            return -1;
        }
    }
    if (slots == 0 || ((uintptr_t)r->buf.buf) % 8 != 0 || stride % 8 != 0 ||
        control + slots * stride > (unsigned long long)len || slot_header + capacity > stride) {
        PyErr_SetString(PyExc_ValueError, "RingEnd: geometry does not fit the region");
        return -1;
    }
    Py_INCREF(base);
    r->base = base;
    r->producer = producer;
    r->slots = slots; r->capacity = capacity; r->stride = stride; r->control = control;
    r->slot_header = slot_header;
    r->off_head = oh; r->off_tail = ot; r->off_peer_waiting = ow; r->off_peer_closed = oc;
    r->wake_efd = -1;
    r->head = __atomic_load_n(word(r, oh), __ATOMIC_ACQUIRE);
    r->tail = __atomic_load_n(word(r, ot), __ATOMIC_ACQUIRE);
    return 0;
}

static PyObject *str_release;  /* "release", interned once */

static int
drop_out(RingEnd *r)
{
    if (r->out) {
        PyObject *v = r->out;
        r->out = NULL;
        PyObject *res = PyObject_CallMethodNoArgs(v, str_release);
        Py_DECREF(v);
        if (!res)
            return -1;
        Py_DECREF(res);
    }
    return 0;
}

static void
re_dealloc(RingEnd *r)
{
    Py_CLEAR(r->owner);
    Py_CLEAR(r->out);
    Py_CLEAR(r->base);
    if (r->held)
        PyBuffer_Release(&r->buf);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

#define DECLINE Py_RETURN_NONE
#define LIVE(r) if (!(r)->held) { DECLINE; }

static PyObject *
slice(RingEnd *r, uint64_t seq, uint64_t length)
{
    Py_ssize_t off = (Py_ssize_t)(r->control + (seq % r->slots) * r->stride + r->slot_header);
    return PySequence_GetSlice(r->base, off, off + (Py_ssize_t)length);
}

/* The optional spin budget of loan() and read(), in nanoseconds. */
static int
spin_arg(PyObject *const *args, Py_ssize_t nargs, int64_t *ns)
{
    *ns = 0;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "expected at most one argument, spin_ns");
        return -1;
    }
    if (nargs == 1) {
        long long v = PyLong_AsLongLong(args[0]);
        if (v == -1 && PyErr_Occurred())
            return -1;
        *ns = v;
    }
    return 0;
}

/* Spin until the word at `off` moves away from `old` or spin_ns pass: 1 moved (*now holds
 * the value), 0 not, -1 error (a signal handler raised). */
static int
spin_on(RingEnd *r, Py_ssize_t off, uint64_t old, int64_t spin_ns, uint64_t *now)
{
    int64_t end = spin_mono_ns() + spin_ns;
    for (;;) {
        uint64_t v = spin_change(word(r, off), old, end - spin_mono_ns());
        if (v != old) {
            *now = v;
            return 1;
        }
        if (spin_mono_ns() >= end)
            return 0;
        Py_BEGIN_ALLOW_THREADS
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0)
            return -1;
        if (!r->held)
            return 0;  /* closed by another thread meanwhile */
    }
}

/* The writable view of the next free slot, or None (see the top comment). */
static PyObject *
loan_fast(RingEnd *r, int64_t spin_ns)
{
    LIVE(r);
    if (!r->producer || r->out || __atomic_load_n(word(r, r->off_peer_closed), __ATOMIC_ACQUIRE))
        DECLINE;
    if (r->head - r->tail >= r->slots) {
        r->tail = __atomic_load_n(word(r, r->off_tail), __ATOMIC_ACQUIRE);
        if (r->tail == r->head - r->slots && spin_ns > 0) {
            uint64_t t;
            int got = spin_on(r, r->off_tail, r->tail, spin_ns, &t);
            if (got < 0)
                return NULL;
            if (got)
                r->tail = t;
        }
        if (!r->held || r->tail > r->head || r->head - r->tail >= r->slots)
            DECLINE;  /* full, or impossible counters: channel.py tells which */
    }
    PyObject *v = slice(r, r->head, r->capacity);
    if (!v)
        return NULL;
    Py_INCREF(v);
    r->out = v;
    return v;
}

/* Move our own counter (head of a producer, tail of a consumer) one on and publish it:
 * seq_cst, the release plus the Dekker check against the peer's waiting flag, which is
 * read next. -> True when the peer sleeps (the caller wakes it). */
static PyObject *
advance(RingEnd *r, uint64_t *counter, Py_ssize_t off)
{
    (*counter)++;
    __atomic_exchange_n(word(r, off), *counter, __ATOMIC_SEQ_CST);
    return PyBool_FromLong(__atomic_load_n(word(r, r->off_peer_waiting), __ATOMIC_ACQUIRE) != 0);
}

/* commit(length) -> True when the consumer sleeps (wake it), or None (nothing on loan,
 * length out of range). */
static PyObject *
re_commit(RingEnd *r, PyObject *arg)
{
    LIVE(r);
    unsigned long long length = PyLong_AsUnsignedLongLong(arg);
    if (length == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        DECLINE;
    }
    if (!r->producer || !r->out || length > r->capacity)
        DECLINE;
    if (drop_out(r) < 0)
        return NULL;
    *word(r, (Py_ssize_t)(r->control + (r->head % r->slots) * r->stride)) = length;
    return advance(r, &r->head, r->off_head);
}

/* The read-only view of the next message, or None (empty, a view still out, impossible
 * counters or length: channel.py tells which). */
static PyObject *
read_fast(RingEnd *r, int64_t spin_ns)
{
    LIVE(r);
    if (r->producer || r->out)
        DECLINE;
    if (r->head == r->tail) {
        r->head = __atomic_load_n(word(r, r->off_head), __ATOMIC_ACQUIRE);
        if (r->head == r->tail && spin_ns > 0) {
            uint64_t h;
            int got = spin_on(r, r->off_head, r->tail, spin_ns, &h);
            if (got < 0)
                return NULL;
            if (got)
                r->head = h;
        }
        if (!r->held || r->head == r->tail)
            DECLINE;
    }
    if (r->head < r->tail || r->head - r->tail > r->slots)
        DECLINE;
    uint64_t length = __atomic_load_n(
        word(r, (Py_ssize_t)(r->control + (r->tail % r->slots) * r->stride)), __ATOMIC_RELAXED);
    if (length > r->capacity)
        DECLINE;
    PyObject *v = slice(r, r->tail, length);
    if (!v)
        return NULL;
    Py_INCREF(v);
    r->out = v;
    return v;
}

/* loan([spin_ns]) and read([spin_ns]): the fast paths alone, for tests and tools. */
static PyObject *
re_loan(RingEnd *r, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t spin_ns;
    return spin_arg(args, nargs, &spin_ns) < 0 ? NULL : loan_fast(r, spin_ns);
}

static PyObject *
re_read(RingEnd *r, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t spin_ns;
    return spin_arg(args, nargs, &spin_ns) < 0 ? NULL : read_fast(r, spin_ns);
}

/* release() -> True when the producer sleeps (wake it), or None (no message out). */
static PyObject *
re_release(RingEnd *r, PyObject *Py_UNUSED(ignored))
{
    LIVE(r);
    if (r->producer || !r->out)
        DECLINE;
    if (drop_out(r) < 0)
        return NULL;
    return advance(r, &r->tail, r->off_tail);
}

/* refresh() -> the peer's counter, loaded (acquire) into the cache: tail for a producer,
 * head for a consumer. */
static PyObject *
re_refresh(RingEnd *r, PyObject *Py_UNUSED(ignored))
{
    if (!r->held) {
        PyErr_SetString(PyExc_ValueError, "RingEnd is closed");
        return NULL;
    }
    if (r->producer)
        return PyLong_FromUnsignedLongLong(
            r->tail = __atomic_load_n(word(r, r->off_tail), __ATOMIC_ACQUIRE));
    return PyLong_FromUnsignedLongLong(
        r->head = __atomic_load_n(word(r, r->off_head), __ATOMIC_ACQUIRE));
}

/* bind(owner, wake_efd, spin_s): what the api_* methods need. */
static PyObject *
re_bind(RingEnd *r, PyObject *args)
{
    PyObject *owner;
    int efd;
    double spin;
    if (!PyArg_ParseTuple(args, "Oid:bind", &owner, &efd, &spin))
        return NULL;
    PyObject *ref = PyWeakref_NewRef(owner, NULL);
    if (!ref)
        return NULL;
    Py_XSETREF(r->owner, ref);
    r->wake_efd = efd;
    r->spin_s = spin > 0 ? spin : 0;
    r->spin_ns = (int64_t)(r->spin_s * 1e9);
    Py_RETURN_NONE;
}

/* Call owner.<name>(*args) for a slow path; the owner is alive while its method runs. */
static PyObject *
slow(RingEnd *r, const char *name, PyObject *args)
{
    PyObject *owner = r->owner ? PyWeakref_GetObject(r->owner) : Py_None;
    if (owner == Py_None) {
        PyErr_SetString(PyExc_ValueError, "channel end is gone");
        return NULL;
    }
    PyObject *fn = PyObject_GetAttrString(owner, name);
    if (!fn)
        return NULL;
    PyObject *res = PyObject_Call(fn, args, NULL);
    Py_DECREF(fn);
    return res;
}

static int
wake(RingEnd *r)
{
    uint64_t one = 1;
    if (r->wake_efd < 0)
        return 0;
    if (write(r->wake_efd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;  /* EAGAIN: the counter is at its maximum, the peer has wakeups pending */
}

/* The optional `timeout` of api_loan/api_read (positional or keyword); *spin is the spin
 * budget it allows: all of it, unless the timeout is shorter. */
static int
timeout_arg(RingEnd *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
            PyObject **timeout, int64_t *spin)
{
    *timeout = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_SetString(PyExc_TypeError, "expected at most one argument, timeout");
        return -1;
    }
    if (nargs == 1)
        *timeout = args[0];
    else if (nkw == 1) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0)) ||
            PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "timeout") != 0) {
            PyErr_SetString(PyExc_TypeError, "the only keyword is timeout");
            return -1;
        }
        *timeout = args[0];
    }
    *spin = r->spin_ns;
    if (*timeout != Py_None) {
        double t = PyFloat_AsDouble(*timeout);
        if (t == -1.0 && PyErr_Occurred())
            return -1;
        if (t < r->spin_s)
            *spin = 0;
    }
    return 0;
}

/* Producer.loan(timeout=None) and Consumer.read(timeout=None): the fast path, with the
 * spin the timeout allows, else the owner's slow path (timeout, spin) in Python. */
static PyObject *
api_take(RingEnd *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
         PyObject *(*fast)(RingEnd *, int64_t), const char *slow_name)
{
    PyObject *timeout;
    int64_t spin;
    if (timeout_arg(r, args, nargs, kwnames, &timeout, &spin) < 0)
        return NULL;
    PyObject *v = fast(r, spin);
    if (v != Py_None)
        return v;
    Py_DECREF(v);
    PyObject *a = Py_BuildValue("(OO)", timeout, spin == 0 ? Py_True : Py_False);
    if (!a)
        return NULL;
    v = slow(r, slow_name, a);
    Py_DECREF(a);
    return v;
}

static PyObject *
re_api_loan(RingEnd *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return api_take(r, args, nargs, kwnames, loan_fast, "_loan_slow");
}

static PyObject *
re_api_read(RingEnd *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return api_take(r, args, nargs, kwnames, read_fast, "_read_slow");
}

/* Producer.commit(length) and Consumer.release(): `w` is what re_commit/re_release said:
 * wake a sleeping peer, or let the owner's slow path (with `args`) raise. */
static PyObject *
api_give(RingEnd *r, PyObject *w, const char *slow_name, PyObject *args)
{
    if (!w)
        return NULL;
    if (w == Py_None) {
        Py_DECREF(w);
        return slow(r, slow_name, args);
    }
    int waiting = w == Py_True;
    Py_DECREF(w);
    if (waiting && wake(r) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
re_api_commit(RingEnd *r, PyObject *arg)
{
    PyObject *w = re_commit(r, arg);
    if (w != Py_None)
        return api_give(r, w, NULL, NULL);
    PyObject *a = PyTuple_Pack(1, arg);
    PyObject *res = a ? api_give(r, w, "_commit_refused", a) : NULL;
    Py_XDECREF(a);
    if (!a)
        Py_DECREF(w);
    return res;
}

static PyObject *
re_api_release(RingEnd *r, PyObject *Py_UNUSED(ignored))
{
    PyObject *w = re_release(r, NULL);
    if (w != Py_None)
        return api_give(r, w, NULL, NULL);
    PyObject *a = PyTuple_New(0);
    PyObject *res = a ? api_give(r, w, "_release_refused", a) : NULL;
    Py_XDECREF(a);
    if (!a)
        Py_DECREF(w);
    return res;
}

/* close(): release the view out (if any), the base and the region; later calls decline. */
static PyObject *
re_close(RingEnd *r, PyObject *Py_UNUSED(ignored))
{
    r->wake_efd = -1;  /* the owner closes it next */
    int err = drop_out(r);
    Py_CLEAR(r->base);
    if (r->held) {
        PyBuffer_Release(&r->buf);
        r->held = 0;
    }
    if (err < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
re_get_out(RingEnd *r, void *closure)
{
    return PyBool_FromLong(r->out != NULL);
}

static PyObject *
re_get_head(RingEnd *r, void *closure)
{
    return PyLong_FromUnsignedLongLong(r->head);
}

static PyObject *
re_get_tail(RingEnd *r, void *closure)
{
    return PyLong_FromUnsignedLongLong(r->tail);
}

static PyMethodDef re_methods[] = {
    {"loan", (PyCFunction)(void (*)(void))re_loan, METH_FASTCALL,
     "loan([spin_ns]) -> memoryview | None"},
    {"commit", (PyCFunction)re_commit, METH_O, "commit(length) -> bool | None"},
    {"read", (PyCFunction)(void (*)(void))re_read, METH_FASTCALL,
     "read([spin_ns]) -> memoryview | None"},
    {"release", (PyCFunction)re_release, METH_NOARGS, "release() -> bool | None"},
    {"refresh", (PyCFunction)re_refresh, METH_NOARGS, "refresh() -> the peer's counter"},
    {"close", (PyCFunction)re_close, METH_NOARGS, "release views and buffers"},
    {"bind", (PyCFunction)re_bind, METH_VARARGS, "bind(owner, wake_efd, spin_s)"},
    {"api_loan", (PyCFunction)(void (*)(void))re_api_loan, METH_FASTCALL | METH_KEYWORDS,
     "Producer.loan(timeout=None)"},
    {"api_commit", (PyCFunction)re_api_commit, METH_O, "Producer.commit(length)"},
    {"api_read", (PyCFunction)(void (*)(void))re_api_read, METH_FASTCALL | METH_KEYWORDS,
     "Consumer.read(timeout=None)"},
    {"api_release", (PyCFunction)re_api_release, METH_NOARGS, "Consumer.release()"},
    {NULL}
};

static PyGetSetDef re_getset[] = {
    {"head", (getter)re_get_head, NULL, "messages committed (as this end last saw)", NULL},
    {"tail", (getter)re_get_tail, NULL, "messages released (as this end last saw)", NULL},
    {"out", (getter)re_get_out, NULL, "a view is on loan / being read", NULL},
    {NULL}
};

static PyTypeObject RingEndType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fastpath.shm._ring.RingEnd",
    .tp_basicsize = sizeof(RingEnd),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The per-message path of one end of a Channel ring.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)re_init,
    .tp_dealloc = (destructor)re_dealloc,
    .tp_methods = re_methods,
    .tp_getset = re_getset,
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "fastpath.shm._ring",
    "The per-message path of a Channel end, in C.", -1, NULL,
};

PyMODINIT_FUNC
PyInit__ring(void)
{
    if (PyType_Ready(&RingEndType) < 0)
        return NULL;
    str_release = PyUnicode_InternFromString("release");
    if (!str_release)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m)
        return NULL;
    Py_INCREF(&RingEndType);
    if (PyModule_AddObject(m, "RingEnd", (PyObject *)&RingEndType) < 0) {
        Py_DECREF(&RingEndType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
