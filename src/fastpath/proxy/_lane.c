/*
 * fastpath.proxy._lane: the copy path of established connections, and the epoll wait.
 *
 * Why by hand: at ten thousand short connections a second a worker spent ~18 us of Python
 * per connection (event dispatch, two Direction objects, read/write wrappers, an exception
 * per EAGAIN) on top of ~75 us in the kernel, where HAProxy spends ~7 us of user time.
 * The Lane takes the part that runs per event: it owns epoll_wait, forwards the bytes of
 * the connections handed to it (recv/send through one shared buffer), and hands every
 * other event back to the worker, which keeps accept, connect, balancing, health checks,
 * timers, splicing and every decision about closing.
 *
 * The state machine is forward.py's, for copy mode, with the same invariants:
 * - before reading src, everything read earlier has been written to dst: bytes leave
 *   in the order they came, once;
 * - a direction ends (shut) when src said EOF and nothing is pending; its FIN is held
 *   for one round of events (worker.py says why) and then sent with shutdown(SHUT_WR),
 *   unless the other direction ended meanwhile: then the worker closes both sockets;
 * - bytes a blocked dst cannot take move from the shared buffer into one of the
 *   direction's own, freed once flushed (an idle connection holds no buffer);
 * - a read of at least `splice_min` bytes in an auto direction (a bulk transfer) is
 *   forwarded, and then the connection goes back to the worker, which splices.
 * - a read shorter than the buffer drained the socket; when the event that woke us had
 *   no RDHUP/HUP/ERR, no FIN was queued behind it, and anything arriving later raises a
 *   new edge (epoll(7): every arrival calls the wakeup). So the read that would only say
 *   EAGAIN is skipped, as nginx and HAProxy skip it: one syscall per request.
 * Errnos that mean "the peer is gone" come from proxy/errnos.py through the constructor.
 *
 * poll() reports, besides the events it did not handle, each connection it is done
 * with: (cfd, r_c2b, r_b2c, bytes_c2b, bytes_b2c, errno, pending_c2b, pending_b2c,
 * flags) where r_* are forward.py's results (DONE both ways, a reset, or BULK / ERROR).
 * A reported connection is no longer in the lane; its fds stay open and in the epoll
 * set: they are the worker's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

/* forward.py's results, and two of the lane's own */
enum { WANT_READ = 1, WANT_WRITE = 2, DONE = 3, YIELD = 4, SRC_RESET = 5, DST_RESET = 6,
       BULK = 7, FAILED = 8 };

#define BUDGET 16
#define IN_EV (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)
#define OUT_EV (EPOLLOUT | EPOLLHUP | EPOLLERR)
#define MAX_GONE 32

typedef struct {
    int src, dst;
    char *own;              /* this direction's buffer while dst blocks, else NULL */
    char *buf;              /* where pending bytes are: the lane's buffer or own */
    size_t start, end;
    unsigned long long bytes;
    int result;
    uint8_t eof, shut, fin_sent, autom, bulk;
} Dir;

typedef struct {
    long long id;
    int cfd, bfd;
    Dir c2b, b2c;
    int64_t last_ns;
    int err;
    uint8_t in_ready, fin_held;
} Pair;

typedef struct {
    PyObject_HEAD
    int epfd;
    char *buf;
    size_t bufsize, splice_min;
    Pair **byfd;
    int nfd;
    int gone[MAX_GONE];
    int ngone;
    /* fds of pairs to pump again (budget spent) and of pairs holding a FIN, each with
     * the pair id seen when queued: a pair removed meanwhile is skipped */
    long long *ready, *held;
    Py_ssize_t nready, cready, nheld, cheld;
    struct epoll_event *events;
    int maxevents;
    long long next_id;
} Lane;

static int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
is_gone(Lane *L, int e)
{
    for (int i = 0; i < L->ngone; i++)
        if (L->gone[i] == e)
            return 1;
    return 0;
}

static int
queue(long long **arr, Py_ssize_t *n, Py_ssize_t *cap, int fd, long long id)
{
    if (*n + 2 > *cap) {
        Py_ssize_t nc = *cap ? *cap * 2 : 64;
        long long *a = realloc(*arr, nc * sizeof(long long));
        if (!a)
            return -1;
        *arr = a;
        *cap = nc;
    }
    (*arr)[(*n)++] = fd;
    (*arr)[(*n)++] = id;
    return 0;
}

/* Keep the bytes dst could not take in the direction's own buffer (the lane's is shared). */
static int
keep_pending(Dir *d)
{
    if (d->buf == d->own)
        return 0;
    size_t n = d->end - d->start;
    d->own = malloc(n ? n : 1);
    if (!d->own)
        return -1;
    memcpy(d->own, d->buf + d->start, n);
    d->buf = d->own;
    d->start = 0;
    d->end = n;
    return 0;
}

static void
drop_pending(Dir *d, char *shared)
{
    free(d->own);
    d->own = NULL;
    d->buf = shared;
    d->start = d->end = 0;
}

/* forward.Direction.pump, copy mode. Sets p->err for FAILED. stop_short: the wakeup
 * for src said no FIN (see the top comment). */
static int
pump(Lane *L, Pair *p, Dir *d, int stop_short)
{
    int drained = 0;
    for (int i = 0; i < BUDGET; i++) {
        if (d->end > d->start) {
            ssize_t n = send(d->dst, d->buf + d->start, d->end - d->start,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    if (keep_pending(d) < 0) {
                        p->err = ENOMEM;
                        return FAILED;
                    }
                    return WANT_WRITE;
                }
                if (is_gone(L, errno))
                    return DST_RESET;
                p->err = errno;
                return FAILED;
            }
            d->start += n;
            d->bytes += n;
            if (d->start == d->end)
                drop_pending(d, L->buf);
            continue;
        }
        if (d->eof) {
            d->shut = 1;
            return DONE;
        }
        if (d->bulk)
            return BULK;  /* flushed: the worker splices from here on */
        if (drained)
            return WANT_READ;
        ssize_t n = recv(d->src, L->buf, L->bufsize, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return WANT_READ;
            if (is_gone(L, errno))
                return SRC_RESET;
            p->err = errno;
            return FAILED;
        }
        if (n == 0) {
            d->eof = 1;
            continue;
        }
        d->buf = L->buf;
        d->start = 0;
        d->end = (size_t)n;
        drained = stop_short && (size_t)n < L->bufsize;
        if (d->autom && L->splice_min && (size_t)n >= L->splice_min)
            d->bulk = 1;
    }
    if (d->end > d->start && keep_pending(d) < 0) {
        p->err = ENOMEM;
        return FAILED;
    }
    return YIELD;
}

static void
forget(Lane *L, Pair *p)
{
    if (p->cfd < L->nfd && L->byfd[p->cfd] == p)
        L->byfd[p->cfd] = NULL;
    if (p->bfd < L->nfd && L->byfd[p->bfd] == p)
        L->byfd[p->bfd] = NULL;
    free(p->c2b.own);
    free(p->b2c.own);
    free(p);
}

static PyObject *
pending_bytes(Dir *d)
{
    return PyBytes_FromStringAndSize(d->buf + d->start, (Py_ssize_t)(d->end - d->start));
}

/* Report p as done (appended to `done`) and drop it from the lane. */
static int
report(Lane *L, Pair *p, PyObject *done)
{
    int flags = p->c2b.eof | p->c2b.shut << 1 | p->c2b.fin_sent << 2 |
                p->b2c.eof << 3 | p->b2c.shut << 4 | p->b2c.fin_sent << 5 |
                p->c2b.bulk << 6 | p->b2c.bulk << 7;
    PyObject *pc = pending_bytes(&p->c2b), *pb = pending_bytes(&p->b2c);
    PyObject *t = NULL;
    if (pc && pb)
        t = Py_BuildValue("(iiiKKiOOi)", p->cfd, p->c2b.result, p->b2c.result, p->c2b.bytes,
                          p->b2c.bytes, p->err, pc, pb, flags);
    Py_XDECREF(pc);
    Py_XDECREF(pb);
    forget(L, p);
    if (!t)
        return -1;
    int rc = PyList_Append(done, t);
    Py_DECREF(t);
    return rc;
}

static int
send_fin(Lane *L, Pair *p, Dir *d)
{
    if (!d->shut || d->fin_sent)
        return 0;
    d->fin_sent = 1;
    if (shutdown(d->dst, SHUT_WR) < 0 && !is_gone(L, errno)) {
        p->err = errno;
        return -1;
    }
    return 0;
}

/* After pumping: decide what becomes of p. */
static int
settle(Lane *L, Pair *p, PyObject *done)
{
    int r1 = p->c2b.result, r2 = p->b2c.result;
    if (r1 >= SRC_RESET && r1 != BULK)
        return report(L, p, done);
    if (r2 >= SRC_RESET && r2 != BULK)
        return report(L, p, done);
    if (p->c2b.shut && p->b2c.shut)
        return report(L, p, done);
    if (r1 == BULK || r2 == BULK)
        return report(L, p, done);
    if (!p->fin_held && ((p->c2b.shut && !p->c2b.fin_sent) || (p->b2c.shut && !p->b2c.fin_sent))) {
        if (queue(&L->held, &L->nheld, &L->cheld, p->cfd, p->id) < 0)
            return -1;
        p->fin_held = 1;
    }
    if (!p->in_ready && (r1 == YIELD || r2 == YIELD)) {
        if (queue(&L->ready, &L->nready, &L->cready, p->cfd, p->id) < 0)
            return -1;
        p->in_ready = 1;
    }
    return 0;
}

static void
pump_dir(Lane *L, Pair *p, Dir *d, int stop_short)
{
    if (!d->shut && d->result < SRC_RESET)
        d->result = pump(L, p, d, stop_short);
}

/* The wakeup for a socket said nothing about a FIN: a short read may stop there. */
static inline int
no_fin(uint32_t ev)
{
    return ev && !(ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR));
}

static int
on_event(Lane *L, Pair *p, int fd, uint32_t ev, PyObject *done, int64_t now)
{
    p->last_ns = now;
    /* a direction pumped for its dst's OUT may read src too: no word on src's FIN then */
    if (fd == p->cfd) {  /* client readable: c2b reads; client writable: b2c writes */
        if (ev & IN_EV)
            pump_dir(L, p, &p->c2b, no_fin(ev));
        if ((ev & OUT_EV) && p->b2c.result == WANT_WRITE)
            pump_dir(L, p, &p->b2c, 0);
    } else {
        if ((ev & OUT_EV) && p->c2b.result == WANT_WRITE)
            pump_dir(L, p, &p->c2b, 0);
        if (ev & IN_EV)
            pump_dir(L, p, &p->b2c, no_fin(ev));
    }
    return settle(L, p, done);
}

static Pair *
live(Lane *L, long long fd, long long id)
{
    if (fd < 0 || fd >= L->nfd)
        return NULL;
    Pair *p = L->byfd[fd];
    return p && p->id == id ? p : NULL;
}

static int
lane_init(Lane *L, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"epfd", "gone", "bufsize", "splice_min", "maxevents", NULL};
    int epfd, maxevents = 256;
    PyObject *gone;
    Py_ssize_t bufsize = 65536, splice_min = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO|nni:Lane", kw, &epfd, &gone, &bufsize,
                                     &splice_min, &maxevents))
        return -1;
    if (L->buf) {
        PyErr_SetString(PyExc_RuntimeError, "Lane: already initialised");
        return -1;
    }
    if (bufsize <= 0 || splice_min < 0 || maxevents <= 0) {
        PyErr_SetString(PyExc_ValueError, "Lane: bufsize and maxevents must be positive");
        return -1;
    }
    PyObject *seq = PySequence_Fast(gone, "Lane: gone must be a sequence of errnos");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_GONE) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "Lane: too many errnos");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long e = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (e == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        L->gone[i] = (int)e;
    }
    Py_DECREF(seq);
    L->ngone = (int)n;
    L->epfd = epfd;
    L->bufsize = (size_t)bufsize;
    L->splice_min = (size_t)splice_min;
    L->maxevents = maxevents;
    L->buf = malloc(L->bufsize);
    L->events = calloc(maxevents, sizeof(struct epoll_event));
    if (!L->buf || !L->events) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void
lane_dealloc(Lane *L)
{
    for (int fd = 0; fd < L->nfd; fd++) {
        Pair *p = L->byfd[fd];
        if (p && p->cfd == fd)
            forget(L, p);
    }
    free(L->byfd);
    free(L->ready);
    free(L->held);
    free(L->events);
    free(L->buf);
    Py_TYPE(L)->tp_free((PyObject *)L);
}

static int
grow(Lane *L, int fd)
{
    if (fd < L->nfd)
        return 0;
    int n = L->nfd ? L->nfd : 256;
    while (n <= fd)
        n *= 2;
    Pair **a = realloc(L->byfd, n * sizeof(Pair *));
    if (!a) {
        PyErr_NoMemory();
        return -1;
    }
    memset(a + L->nfd, 0, (n - L->nfd) * sizeof(Pair *));
    L->byfd = a;
    L->nfd = n;
    return 0;
}

/* add(cfd, bfd, c2b_auto, b2c_auto): take a connected pair (both fds already in the
 * epoll set, edge-triggered, data.fd = the fd). */
static PyObject *
lane_add(Lane *L, PyObject *args)
{
    int cfd, bfd, ca, ba;
    if (!PyArg_ParseTuple(args, "iipp:add", &cfd, &bfd, &ca, &ba))
        return NULL;
    if (!L->buf) {
        PyErr_SetString(PyExc_ValueError, "Lane is not initialised");
        return NULL;
    }
    if (cfd < 0 || bfd < 0 || cfd == bfd) {
        PyErr_SetString(PyExc_ValueError, "add: two different fds");
        return NULL;
    }
    if (grow(L, cfd > bfd ? cfd : bfd) < 0)
        return NULL;
    if (L->byfd[cfd] || L->byfd[bfd]) {
        PyErr_SetString(PyExc_ValueError, "add: fd already in the lane");
        return NULL;
    }
    Pair *p = calloc(1, sizeof(Pair));
    if (!p)
        return PyErr_NoMemory();
    p->id = ++L->next_id;
    p->cfd = cfd;
    p->bfd = bfd;
    p->c2b = (Dir){.src = cfd, .dst = bfd, .buf = L->buf, .result = WANT_READ, .autom = ca};
    p->b2c = (Dir){.src = bfd, .dst = cfd, .buf = L->buf, .result = WANT_READ, .autom = ba};
    p->last_ns = mono_ns();
    L->byfd[cfd] = L->byfd[bfd] = p;
    Py_RETURN_NONE;
}

/* pump(cfd, client_events) -> list of reports (empty or one): pump both directions once,
 * as the worker does right after connecting (edges seen while connecting were not acted
 * on); client_events is the union of the client's epoll masks seen meanwhile (0: none). */
static PyObject *
lane_pump(Lane *L, PyObject *args)
{
    long fd;
    unsigned int cev;
    if (!PyArg_ParseTuple(args, "lI:pump", &fd, &cev))
        return NULL;
    PyObject *done = PyList_New(0);
    if (!done)
        return NULL;
    Pair *p = fd >= 0 && fd < L->nfd ? L->byfd[fd] : NULL;
    if (p) {
        pump_dir(L, p, &p->c2b, no_fin(cev));
        pump_dir(L, p, &p->b2c, 0);
        if (settle(L, p, done) < 0) {
            Py_DECREF(done);
            return NULL;
        }
    }
    return done;
}

/* remove(cfd) -> bool: the worker takes the pair back (closing it); bytes pending in the
 * lane for it are dropped, as closing drops them. */
static PyObject *
lane_remove(Lane *L, PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    Pair *p = fd >= 0 && fd < L->nfd ? L->byfd[fd] : NULL;
    if (!p || p->cfd != fd)
        Py_RETURN_FALSE;
    forget(L, p);
    Py_RETURN_TRUE;
}

/* last(cfd) -> float | None: CLOCK_MONOTONIC seconds of the pair's last event. */
static PyObject *
lane_last(Lane *L, PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    Pair *p = fd >= 0 && fd < L->nfd ? L->byfd[fd] : NULL;
    if (!p || p->cfd != fd)
        Py_RETURN_NONE;
    return PyFloat_FromDouble((double)p->last_ns / 1e9);
}

/* poll(timeout) -> (events, done): one round. `events` are (fd, mask) the lane does not
 * own; `done` the reports of connections it let go. timeout in seconds; 0 when the
 * lane has work queued. */
static PyObject *
lane_poll(Lane *L, PyObject *arg)
{
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    if (!L->buf) {
        PyErr_SetString(PyExc_ValueError, "Lane is not initialised");
        return NULL;
    }
    /* FINs held since the last round, and pairs whose budget ran out, go after this
     * round's events: swap the lists out first */
    long long *held = L->held, *ready = L->ready;
    Py_ssize_t nheld = L->nheld, nready = L->nready;
    Py_ssize_t cheld = L->cheld, cready = L->cready;
    L->held = L->ready = NULL;
    L->nheld = L->nready = L->cheld = L->cready = 0;
    int ms = (nheld || nready || timeout <= 0) ? 0 : (int)(timeout * 1000 + 0.999);
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = epoll_wait(L->epfd, L->events, L->maxevents, ms);
    Py_END_ALLOW_THREADS
    PyObject *others = NULL, *done = NULL, *res = NULL;
    if (n < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto out;
        }
        n = 0;  /* a signal: the worker looks at its flags and comes back */
    }
    others = PyList_New(0);
    done = PyList_New(0);
    if (!others || !done)
        goto out;
    int64_t now = mono_ns();
    for (int i = 0; i < n; i++) {
        int fd = L->events[i].data.fd;
        uint32_t ev = L->events[i].events;
        Pair *p = fd < L->nfd ? L->byfd[fd] : NULL;
        if (p) {
            if (on_event(L, p, fd, ev, done, now) < 0)
                goto out;
            continue;
        }
        PyObject *t = Py_BuildValue("(iI)", fd, ev);
        if (!t || PyList_Append(others, t) < 0) {
            Py_XDECREF(t);
            goto out;
        }
        Py_DECREF(t);
    }
    for (Py_ssize_t i = 0; i < nready; i += 2) {
        Pair *p = live(L, ready[i], ready[i + 1]);
        if (!p)
            continue;
        p->in_ready = 0;
        if (p->c2b.result == YIELD)
            pump_dir(L, p, &p->c2b, 0);
        if (p->b2c.result == YIELD)
            pump_dir(L, p, &p->b2c, 0);
        if (settle(L, p, done) < 0)
            goto out;
    }
    for (Py_ssize_t i = 0; i < nheld; i += 2) {
        Pair *p = live(L, held[i], held[i + 1]);
        if (!p)
            continue;
        p->fin_held = 0;
        if (p->c2b.shut && p->b2c.shut)
            continue;  /* settled (reported) already when the second one ended */
        if (send_fin(L, p, &p->c2b) < 0 || send_fin(L, p, &p->b2c) < 0) {
            p->c2b.result = FAILED;
            if (report(L, p, done) < 0)
                goto out;
        }
    }
    res = PyTuple_Pack(2, others, done);
out:
    free(held);
    free(ready);
    (void)cheld;
    (void)cready;
    Py_XDECREF(others);
    Py_XDECREF(done);
    return res;
}

static PyObject *
lane_len(Lane *L, void *closure)
{
    Py_ssize_t n = 0;
    for (int fd = 0; fd < L->nfd; fd++)
        if (L->byfd[fd] && L->byfd[fd]->cfd == fd)
            n++;
    return PyLong_FromSsize_t(n);
}

static PyMethodDef lane_methods[] = {
    {"add", (PyCFunction)lane_add, METH_VARARGS, "add(cfd, bfd, c2b_auto, b2c_auto)"},
    {"pump", (PyCFunction)lane_pump, METH_VARARGS, "pump(cfd, client_events) -> reports"},
    {"remove", (PyCFunction)lane_remove, METH_O, "remove(cfd) -> bool"},
    {"last", (PyCFunction)lane_last, METH_O, "last(cfd) -> monotonic seconds | None"},
    {"poll", (PyCFunction)lane_poll, METH_O, "poll(timeout) -> (events, reports)"},
    {NULL}
};

static PyGetSetDef lane_getset[] = {
    {"pairs", (getter)lane_len, NULL, "connections in the lane", NULL},
    {NULL}
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fastpath.proxy._lane.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The copy path of established connections, and the epoll wait.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)lane_init,
    .tp_dealloc = (destructor)lane_dealloc,
    .tp_methods = lane_methods,
    .tp_getset = lane_getset,
};

/* accept(lfd) -> (fd, (host, port)): accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC, which
 * socket.accept cannot ask for (it makes the socket blocking, and non-blocking costs
 * an ioctl more). Errors raise OSError, EAGAIN as BlockingIOError, as socket.accept. */
static PyObject *
mod_accept(PyObject *m, PyObject *arg)
{
    int lfd = (int)PyLong_AsLong(arg);
    if (lfd == -1 && PyErr_Occurred())
        return NULL;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd;
    do {
        fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    char host[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
    }
    return Py_BuildValue("(i(si))", fd, host, port);
}

static PyMethodDef mod_methods[] = {
    {"accept", (PyCFunction)mod_accept, METH_O, "accept(lfd) -> (fd, (host, port))"},
    {NULL}
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "fastpath.proxy._lane",
    "The copy path of established connections, in C.", -1, mod_methods,
};

PyMODINIT_FUNC
PyInit__lane(void)
{
    if (PyType_Ready(&LaneType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m)
        return NULL;
    Py_INCREF(&LaneType);
    if (PyModule_AddObject(m, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(&LaneType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "BULK", BULK);
    PyModule_AddIntConstant(m, "FAILED", FAILED);
    return m;
}
