/*
 * runtime.c - the two things a kernel asks of its host: whether to stop
 * (an interrupt such as Ctrl-C is pending) and how many threads it may
 * use (one, in a child process made by fork()).  See rlhf.h.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#endif
#include <time.h>

#ifdef _WIN32
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "rlhf.h"

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && \
    !defined(__STDC_NO_THREADS__)
#define RLHF_THREAD_LOCAL _Thread_local
#elif defined(_MSC_VER)
#define RLHF_THREAD_LOCAL __declspec(thread)
#elif defined(__GNUC__) || defined(__clang__)
#define RLHF_THREAD_LOCAL __thread
#endif

static rlhf_interrupt_hook interrupt_hook = NULL;
static volatile int serial_only = 0;
#ifdef RLHF_THREAD_LOCAL
static RLHF_THREAD_LOCAL int thread_cap = 0;
#else
static int thread_cap = 0;
#endif

void rlhf_set_interrupt_hook(rlhf_interrupt_hook hook)
{
    interrupt_hook = hook;
}

/* Milliseconds on a clock that never goes back. */
static double now_ms(void)
{
#ifdef _WIN32
    return (double)GetTickCount64();
#else
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
#endif
}

int rlhf_interrupted(void)
{
    if (interrupt_hook == NULL) {
        return 0;
    }
#ifdef RLHF_THREAD_LOCAL
    /* the hook takes the host's lock (Python's GIL): ask it only every
     * RLHF_INTERRUPT_PERIOD_MS, and measure that per thread, since each
     * thread runs its own kernel */
    static RLHF_THREAD_LOCAL double next_check = 0.0;
    const double t = now_ms();
    if (t < next_check) {
        return 0;
    }
    next_check = t + RLHF_INTERRUPT_PERIOD_MS;
#endif
    return interrupt_hook() != 0;
}

void rlhf_set_serial(void)
{
    serial_only = 1;
}

int rlhf_threads(int requested)
{
    if (serial_only) {
        return 1;
    }
    if (requested > 0) {
        return requested;
    }
    return rlhf_default_threads();
}

int rlhf_default_threads(void)
{
    if (serial_only) {
        return 1;
    }
#ifdef _OPENMP
    const int n = omp_get_max_threads();
    return thread_cap > 0 && thread_cap < n ? thread_cap : n;
#else
    return 1;
#endif
}

int rlhf_set_thread_cap(int cap)
{
    const int previous = thread_cap;
    thread_cap = cap > 0 ? cap : 0;
    return previous;
}

ptrdiff_t rlhf_check_rows(ptrdiff_t k)
{
    return k >= RLHF_CHECK_ENTRIES ? 1 : RLHF_CHECK_ENTRIES / (k > 0 ? k : 1);
}

ptrdiff_t rlhf_check_group(ptrdiff_t k, int n_threads)
{
    const ptrdiff_t team = n_threads > 1 ? n_threads : 1;
    return (rlhf_check_rows(k) + team - 1) / team * team;
}
