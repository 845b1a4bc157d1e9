/* A preload library that shifts the wall clock of the process it is loaded into by
 * ROOMCAST_CLOCK_SHIFT_MS milliseconds (may be negative): clock_gettime(CLOCK_REALTIME
 * and CLOCK_REALTIME_COARSE), gettimeofday() and time(). Other clocks pass through.
 *
 * The test harness (tests/src/lib.rs, `shifted_clock`) compiles it with `cc` and runs
 * redis-server with LD_PRELOAD pointing at it. It exists because libfaketime cannot run
 * Debian's redis-server: Redis is linked with jemalloc, which calls clock_gettime()
 * while libfaketime initialises, and libfaketime aborts the recursion (libfaketime
 * issue #130, unresolved). This shim has no initialisation, never allocates and calls
 * the kernel directly, so it is safe there. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long shift_ns(void) {
    static volatile long long cached = -1;
    if (cached == -1) {
        const char *s = getenv("ROOMCAST_CLOCK_SHIFT_MS");
        cached = s ? atoll(s) * 1000000LL : 0;
    }
    return cached;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    int rc = (int)syscall(SYS_clock_gettime, clock, ts);
    if (rc == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) {
        long long ns = (long long)ts->tv_nsec + shift_ns() % 1000000000LL;
        ts->tv_sec += shift_ns() / 1000000000LL + ns / 1000000000LL - (ns < 0);
        ts->tv_nsec = (long)(((ns % 1000000000LL) + 1000000000LL) % 1000000000LL);
    }
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return -1;
    if (tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return (time_t)-1;
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
