// A pool of layer threads that wait for work by spinning briefly, then sleeping: a parallel
// region of a few hundred microseconds (a product cut in parts, a loop over heads) starts on
// every thread within a microsecond instead of waking a dispatch queue's threads each time.
#include "kernels_common.h"
#include <pthread.h>
#include <stdatomic.h>
#include <immintrin.h>
#include <sched.h>

#define COHORT_POOL_MAX 64
// About 2 ms of spinning before a worker sleeps until the next job: a training step's regions
// come closer together than that, so its workers do not sleep between them.
#define COHORT_POOL_SPINS 100000

static pthread_mutex_t pool_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static atomic_ulong pool_generation;
static atomic_long pool_done;
static atomic_int pool_sleepers;
static int pool_started;
static unsigned long pool_start_generation;
static cohort_part_fn pool_fn;
static void *pool_context;
static long pool_parts, pool_workers;
static _Thread_local int pool_inside;
static atomic_flag pool_busy = ATOMIC_FLAG_INIT;

// A spin-wait's step: a pause, and every 64th time the core handed to any other runnable thread,
// so that more threads than cores (training.threads above the cores, or other processes) still
// make progress instead of spinning against the thread they wait for.
static inline void spin_wait(long spin) {
    if ((spin & 63) == 63) sched_yield(); else _mm_pause();
}

static void run_share(long worker) {
    for (long part = worker; part < pool_parts; part += pool_workers) pool_fn(pool_context, part, worker);
}

static void *pool_thread(void *argument) {
    long worker = (long)argument;
    // The generation before the job this thread was started for: it takes part in that one.
    unsigned long seen = pool_start_generation;
    pool_inside = 1;
    for (;;) {
        unsigned long now = seen;
        for (int spin = 0; spin < COHORT_POOL_SPINS && (now = atomic_load(&pool_generation)) == seen; spin++) spin_wait(spin);
        if (now == seen) {
            atomic_fetch_add(&pool_sleepers, 1);
            pthread_mutex_lock(&pool_mutex);
            while ((now = atomic_load(&pool_generation)) == seen) pthread_cond_wait(&pool_wake, &pool_mutex);
            pthread_mutex_unlock(&pool_mutex);
            atomic_fetch_sub(&pool_sleepers, 1);
        }
        seen = now;
        if (worker < pool_workers) {
            run_share(worker);
            atomic_fetch_add(&pool_done, 1);
        }
    }
    return NULL;
}

int cohort_pool_inside(void) { return pool_inside; }

void cohort_pool_run(long parts, long workers, cohort_part_fn fn, void *context) {
    if (workers > COHORT_POOL_MAX) workers = COHORT_POOL_MAX;
    if (pool_started < workers - 1) {
        // Threads 1 … workers − 1, started once and kept (worker 0 is the caller).
        pool_start_generation = atomic_load(&pool_generation);
        for (long worker = pool_started + 1; worker < workers; worker++) {
            pthread_t thread;
            if (pthread_create(&thread, NULL, pool_thread, (void *)worker) != 0) break;
            pthread_detach(thread);
            pool_started = (int)worker;
        }
        if (pool_started < workers - 1) workers = pool_started + 1;
    }
    // One region at a time: a region asked for from inside one, or from another thread while
    // one runs, runs on its caller alone (the same parts, so the same bits).
    if (workers <= 1 || pool_inside || atomic_flag_test_and_set(&pool_busy)) {
        for (long part = 0; part < parts; part++) fn(context, part, 0);
        return;
    }
    pool_fn = fn;
    pool_context = context;
    pool_parts = parts;
    pool_workers = workers;
    atomic_store(&pool_done, 0);
    atomic_fetch_add(&pool_generation, 1);
    if (atomic_load(&pool_sleepers) > 0) {
        pthread_mutex_lock(&pool_mutex);
        pthread_cond_broadcast(&pool_wake);
        pthread_mutex_unlock(&pool_mutex);
    }
    pool_inside = 1;
    run_share(0);
    pool_inside = 0;
    for (long spin = 0; atomic_load(&pool_done) < workers - 1; spin++) spin_wait(spin);
    atomic_flag_clear(&pool_busy);
}
