/*
 * fastpath.rcu._lookup: the SharedTable reader's hot path in C.
 *
 * Why: a lookup written in Python (hash, probe, unpack a bucket, compare, slice) costs
 * 1-2 us, an order of magnitude more than the synchronization it is meant to avoid. Here it
 * is one call: acquire-load CURRENT, CRC32 the key, probe, compare, copy the value out.
 *
 * The layout is rcu/layout.py's, and only there: the constructor takes the header size,
 * the offset of nbuckets, the bucket stride, the offsets of the bucket's fields and the
 * tombstone value from it (table.lookup_layout()). The field widths (u32 hash, u32 entry,
 * u16 klen, u32 vlen, little-endian) are fixed here and asserted against layout.BUCKET on
 * the Python side. layout.lookup stays the reference; the tests check the two agree.
 *
 * Memory ordering (table.py's docstring has the argument): CURRENT is loaded with acquire,
 * so every later read of the version sees what the writer stored before publishing it.
 * Header and bucket words are read with relaxed atomic loads: one load each, so a bounds
 * check and the use of the same field cannot see two different values even if a broken
 * writer (the torture test's) rewrites the version under us; key and value bytes are then
 * read inside bounds already checked. Under RCU nothing changes under a reader; if it did,
 * the reader raises TornRead or returns bytes the torture test's checksum rejects, never
 * reads outside the versions area.
 *
 * A Lookup holds a buffer export of the mapping for its lifetime (release() before
 * closing the Region). It never releases the GIL: a lookup costs less than a GIL hand-off.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "SharedTable's layout is little-endian; this reader reads it natively"
#endif

/* CRC-32 (IEEE 802.3, reflected, as zlib.crc32), byte-wise with a table built at import:
 * keys are short (~10-40 bytes), so slicing-by-8 would not pay for its cache lines. */
static uint32_t crc_table[256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static inline uint32_t
crc32_ieee(const unsigned char *p, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int held;
    Py_ssize_t current_off;         /* the u64 holding the published version's offset */
    Py_ssize_t versions_off;
    Py_ssize_t nversions;
    Py_ssize_t vsize;
    Py_ssize_t header, nb_off, bsize, f_hash, f_entry, f_klen, f_vlen;
    uint32_t tomb;
    PyObject *torn;                 /* exception class raised on a corrupt version */
} Lookup;

static int
lk_init(Lookup *self, PyObject *args, PyObject *kwds)
{
    PyObject *obj, *torn;
    Py_ssize_t cur, voff, nver, vsize, header, nb_off, bsize, fh, fe, fk, fv;
    unsigned long tomb;
    if (!PyArg_ParseTuple(args, "Onnnn(nnnnnnnk)O:Lookup", &obj, &cur, &voff, &nver, &vsize,
                          &header, &nb_off, &bsize, &fh, &fe, &fk, &fv, &tomb, &torn))
        return -1;
    if (!PyExceptionClass_Check(torn)) {
        PyErr_SetString(PyExc_TypeError, "Lookup: the last argument is an exception class");
        return -1;
    }
    if (self->held) {
        PyBuffer_Release(&self->view);
        self->held = 0;
    }
    if (PyObject_GetBuffer(obj, &self->view, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    self->held = 1;
    const char *bad = NULL;
    Py_ssize_t len = self->view.len;
    if (((uintptr_t)self->view.buf) % 8)
        bad = "buffer is not 8-byte aligned";
    else if (cur < 0 || cur % 8 || cur > len - 8)
        bad = "CURRENT word out of range or misaligned";
    else if (voff < 0 || voff % 8 || vsize <= 0 || vsize % 8 || nver <= 0
             || nver > (len - voff) / vsize)
        bad = "versions area exceeds the buffer";
    else if (header < 0 || header % 8 || nb_off < 0 || nb_off % 4 || nb_off + 4 > header
             || header > vsize)
        bad = "bad version header geometry";
    else if (bsize <= 0 || bsize % 8 || fh < 0 || fh % 4 || fh + 4 > bsize || fe < 0 || fe % 4
             || fe + 4 > bsize || fk < 0 || fk % 2 || fk + 2 > bsize || fv < 0 || fv % 4
             || fv + 4 > bsize)
        bad = "bad bucket geometry";
    if (bad) {
        PyBuffer_Release(&self->view);
        self->held = 0;
        PyErr_Format(PyExc_ValueError, "Lookup: %s", bad);
        return -1;
    }
    self->current_off = cur;
    self->versions_off = voff;
    self->nversions = nver;
    self->vsize = vsize;
    self->header = header;
    self->nb_off = nb_off;
    self->bsize = bsize;
    self->f_hash = fh;
    self->f_entry = fe;
    self->f_klen = fk;
    self->f_vlen = fv;
    self->tomb = (uint32_t)tomb;
    Py_INCREF(torn);
    Py_XSETREF(self->torn, torn);
    return 0;
}

static void
lk_dealloc(Lookup *self)
{
    if (self->held)
        PyBuffer_Release(&self->view);
    Py_XDECREF(self->torn);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define LOAD32(p) __atomic_load_n((const uint32_t *)(p), __ATOMIC_RELAXED)
#define LOAD16(p) __atomic_load_n((const uint16_t *)(p), __ATOMIC_RELAXED)

/* The value of key in the version at base (a new bytes), Py_None (new ref) or NULL with
 * TornRead set. base has been checked to be the start of a version buffer. */
static PyObject *
lookup_in(Lookup *self, Py_ssize_t base, const unsigned char *key, Py_ssize_t klen)
{
    const unsigned char *v = (const unsigned char *)self->view.buf + base;
    uint64_t vsize = (uint64_t)self->vsize;
    uint32_t nb = LOAD32(v + self->nb_off);
    if (nb == 0 || (nb & (nb - 1)) || (uint64_t)self->header + (uint64_t)self->bsize * nb > vsize)
        return PyErr_Format(self->torn, "version at %zd: bad bucket count %#x", base, nb);
    uint32_t h = crc32_ieee(key, klen);
    uint32_t mask = nb - 1, i = h & mask;
    const unsigned char *b = v + self->header;
    for (uint32_t n = 0; n < nb; n++, i = (i + 1) & mask) {
        const unsigned char *e = b + (size_t)self->bsize * i;
        uint32_t eo = LOAD32(e + self->f_entry);
        if (eo == 0)
            Py_RETURN_NONE;
        if (eo == self->tomb || LOAD32(e + self->f_hash) != h)
            continue;
        uint32_t kl = LOAD16(e + self->f_klen);
        uint32_t vl = LOAD32(e + self->f_vlen);
        if ((uint64_t)eo + kl + vl > vsize)
            return PyErr_Format(self->torn, "version at %zd: entry at %#x overruns it", base, eo);
        if ((Py_ssize_t)kl == klen && memcmp(v + eo, key, (size_t)klen) == 0)
            return PyBytes_FromStringAndSize((const char *)v + eo + kl, (Py_ssize_t)vl);
    }
    return PyErr_Format(self->torn, "version at %zd: no empty bucket in %u", base, nb);
}

static int
check_base(Lookup *self, Py_ssize_t base)
{
    Py_ssize_t rel = base - self->versions_off;
    if (rel < 0 || rel % self->vsize || rel / self->vsize >= self->nversions) {
        PyErr_Format(self->torn, "version offset %zd is not a version buffer", base);
        return -1;
    }
    return 0;
}

static PyObject *
lookup_key(Lookup *self, Py_ssize_t base, PyObject *key)
{
    if (PyBytes_CheckExact(key))
        return lookup_in(self, base, (const unsigned char *)PyBytes_AS_STRING(key),
                         PyBytes_GET_SIZE(key));
    Py_buffer kb;
    if (PyObject_GetBuffer(key, &kb, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    PyObject *r = lookup_in(self, base, kb.buf, kb.len);
    PyBuffer_Release(&kb);
    return r;
}

static inline int
need_held(Lookup *self)
{
    if (!self->held) {
        PyErr_SetString(PyExc_ValueError, "Lookup is released");
        return -1;
    }
    return 0;
}

/* lookup(key) -> bytes | None: in the version CURRENT points at (acquire load). */
static PyObject *
lk_lookup(Lookup *self, PyObject *key)
{
    if (need_held(self) < 0)
        return NULL;
    uint64_t base = __atomic_load_n((uint64_t *)((char *)self->view.buf + self->current_off),
                                    __ATOMIC_ACQUIRE);
    if (base == 0)
        Py_RETURN_NONE;
    if (base > PY_SSIZE_T_MAX || check_base(self, (Py_ssize_t)base) < 0)
        return NULL;
    return lookup_key(self, (Py_ssize_t)base, key);
}

/* lookup_at(base, key) -> bytes | None: in the version at base (a snapshot). */
static PyObject *
lk_lookup_at(Lookup *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "lookup_at(base, key)");
        return NULL;
    }
    if (need_held(self) < 0)
        return NULL;
    Py_ssize_t base = PyLong_AsSsize_t(args[0]);
    if (base == -1 && PyErr_Occurred())
        return NULL;
    if (check_base(self, base) < 0)
        return NULL;
    return lookup_key(self, base, args[1]);
}

/* current() -> int: acquire load of CURRENT. */
static PyObject *
lk_current(Lookup *self, PyObject *Py_UNUSED(ignored))
{
    if (need_held(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(
        __atomic_load_n((uint64_t *)((char *)self->view.buf + self->current_off), __ATOMIC_ACQUIRE));
}

static PyObject *
lk_release(Lookup *self, PyObject *Py_UNUSED(ignored))
{
    if (self->held) {
        PyBuffer_Release(&self->view);
        self->held = 0;
    }
    Py_RETURN_NONE;
}

/* crc32(data) -> int: the hash the lookups use (tests check it equals zlib.crc32). */
static PyObject *
mod_crc32(PyObject *m, PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    uint32_t c = crc32_ieee(b.buf, b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef lk_methods[] = {
    {"lookup", (PyCFunction)lk_lookup, METH_O, "lookup(key) -> bytes | None, in CURRENT's version"},
    {"lookup_at", (PyCFunction)(void (*)(void))lk_lookup_at, METH_FASTCALL,
     "lookup_at(base, key) -> bytes | None, in the version at base"},
    {"current", (PyCFunction)lk_current, METH_NOARGS, "acquire load of CURRENT"},
    {"release", (PyCFunction)lk_release, METH_NOARGS, "release the buffer"},
    {NULL}
};

static PyTypeObject LookupType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fastpath.rcu._lookup.Lookup",
    .tp_basicsize = sizeof(Lookup),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Lookup(buf, current_off, versions_off, nversions, version_size, layout, TornRead)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)lk_init,
    .tp_dealloc = (destructor)lk_dealloc,
    .tp_methods = lk_methods,
};

static PyMethodDef mod_methods[] = {
    {"crc32", (PyCFunction)mod_crc32, METH_O, "CRC-32 as zlib.crc32"},
    {NULL}
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "fastpath.rcu._lookup",
    "SharedTable lookups in C (layout from fastpath.rcu.layout).", -1, mod_methods,
};

PyMODINIT_FUNC
PyInit__lookup(void)
{
    crc_init();
    if (PyType_Ready(&LookupType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m)
        return NULL;
    Py_INCREF(&LookupType);
    if (PyModule_AddObject(m, "Lookup", (PyObject *)&LookupType) < 0) {
        Py_DECREF(&LookupType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
