/*
 * Busy-waiting on a word in shared memory, for fastpath's C parts (_atomic.c, shm/_ring.c).
 *
 * spin_change() loads (acquire) until the word differs from `old` or `max_ns` pass,
 * with the CPU's spin-wait hint between loads. It holds the GIL for at most SPIN_SLICE_NS
 * at a time; the caller gives it up between slices and checks that its buffer is still
 * there (another thread may have released it meanwhile).
 */
#ifndef FASTPATH_SPIN_H
#define FASTPATH_SPIN_H
#include <stdint.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

#define SPIN_BATCH 32            /* loads between clock reads */
#define SPIN_SLICE_NS 50000      /* the GIL is given up this often while spinning */

static inline int64_t
spin_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spin for at most min(max_ns, SPIN_SLICE_NS); return the last value loaded. */
static inline uint64_t
spin_change(const uint64_t *w, uint64_t old, int64_t max_ns)
{
    int64_t start = spin_mono_ns();
    if (max_ns > SPIN_SLICE_NS)
        max_ns = SPIN_SLICE_NS;
    for (;;) {
        for (int i = 0; i < SPIN_BATCH; i++) {
            uint64_t v = __atomic_load_n(w, __ATOMIC_ACQUIRE);
            if (v != old)
                return v;
            CPU_RELAX();
        }
        if (spin_mono_ns() - start >= max_ns)
            return old;
    }
}
#endif
