/*
 * uds_peer: the Unix-domain-socket row of `fastpath bench accel` (the physical limit of a
 * local byte stream), measured the way sockperf and iperf3 measure TCP there.
 *
 * Why C: the TCP rows come from sockperf and iperf3, both C; a Python peer would measure
 * the interpreter. Neither tool speaks AF_UNIX (sockperf 3.7, iperf3 3.12).
 *
 *   uds_peer server PATH                  echo every message (ping-pong), or count bytes
 *                                         until EOF and answer the count (bulk); one client
 *   uds_peer pingpong PATH SIZE SECONDS   prints "p50_us p99_us n": half round trips, as sockperf
 *   uds_peer bulk PATH SECONDS            prints "gbit_per_s": bytes the server received
 *
 * The first byte a client sends says which: 'P' (then SIZE as u32) or 'B'.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BULK_CHUNK (128 * 1024)
#define MAX_SAMPLES (1 << 22)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int full(int fd, void *buf, size_t n, int rd) {
    char *p = buf;
    while (n) {
        ssize_t r = rd ? read(fd, p, n) : write(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void addr_of(const char *path, struct sockaddr_un *a) {
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(a->sun_path)) {
        fprintf(stderr, "uds_peer: path too long\n");
        exit(2);
    }
    strcpy(a->sun_path, path);
}

static int serve(const char *path) {
    struct sockaddr_un a;
    addr_of(path, &a);
    int ls = socket(AF_UNIX, SOCK_STREAM, 0);
    unlink(path);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 1)) {
        perror("uds_peer: listen");
        return 1;
    }
    int c = accept(ls, NULL, NULL);
    close(ls);
    unlink(path);
    if (c < 0)
        return 1;
    char mode;
    if (full(c, &mode, 1, 1))
        return 1;
    if (mode == 'P') {
        uint32_t size;
        if (full(c, &size, 4, 1) || size == 0 || size > (1u << 24))
            return 1;
        char *buf = malloc(size);
        while (!full(c, buf, size, 1) && !full(c, buf, size, 0))
            ;
        return 0;
    }
    char *buf = malloc(BULK_CHUNK);
    uint64_t total = 0;
    for (;;) {
        ssize_t r = read(c, buf, BULK_CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        total += (uint64_t)r;
    }
    return full(c, &total, 8, 0) ? 1 : 0;
}

static int connect_to(const char *path) {
    struct sockaddr_un a;
    addr_of(path, &a);
    for (int i = 0; i < 200; i++) {  /* the server may still be starting */
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof(a)) == 0)
            return s;
        close(s);
        usleep(10000);
    }
    perror("uds_peer: connect");
    exit(1);
}

static int cmp(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static int pingpong(const char *path, uint32_t size, double seconds) {
    int s = connect_to(path);
    char hello[5] = {'P'};
    memcpy(hello + 1, &size, 4);
    char *buf = calloc(1, size);
    double *lat = malloc(sizeof(double) * MAX_SAMPLES);
    if (full(s, hello, 5, 0))
        return 1;
    size_t n = 0;
    double end = now() + seconds;
    while (n < MAX_SAMPLES) {
        double t0 = now();
        if (t0 > end || full(s, buf, size, 0) || full(s, buf, size, 1))
            break;
        lat[n++] = (now() - t0) / 2 * 1e6;
    }
    close(s);
    if (!n)
        return 1;
    qsort(lat, n, sizeof(double), cmp);
    printf("%.3f %.3f %zu\n", lat[n / 2], lat[(size_t)(n * 0.99)], n);
    return 0;
}

static int bulk(const char *path, double seconds) {
    int s = connect_to(path);
    char *buf = calloc(1, BULK_CHUNK);
    if (full(s, "B", 1, 0))
        return 1;
    double t0 = now(), end = t0 + seconds;
    while (now() < end)
        if (full(s, buf, BULK_CHUNK, 0))
            return 1;
    shutdown(s, SHUT_WR);
    uint64_t total;
    if (full(s, &total, 8, 1))
        return 1;
    printf("%.3f\n", total * 8.0 / (now() - t0) / 1e9);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "server"))
        return serve(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "pingpong"))
        return pingpong(argv[2], (uint32_t)atoi(argv[3]), atof(argv[4]));
    if (argc == 4 && !strcmp(argv[1], "bulk"))
        return bulk(argv[2], atof(argv[3]));
    fprintf(stderr, "usage: uds_peer server PATH | pingpong PATH SIZE SECONDS | bulk PATH SECONDS\n");
    return 2;
}
