/* A fixed pool of workers, started on the first parallel loop. A loop is
 * one job: the caller publishes it under the lock with a new generation
 * number, each worker runs its range when it sees the number change, and
 * the caller runs range 0 and waits for the others to count down. */
#include "threads.h"

#include <pthread.h>
#include <unistd.h>

enum { MAX_THREADS = 64 };

static struct {
  pthread_mutex_t mu;
  pthread_cond_t go, done;
  int want;    /* threads_set */
  int started; /* workers running (threads besides the caller) */
  unsigned long gen;
  int pending; /* workers still on the current job */
  ThreadsBody body;
  const int64_t *args;
  int64_t extent;
  int ranges;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER,
          .go = PTHREAD_COND_INITIALIZER,
          .done = PTHREAD_COND_INITIALIZER};

static int online(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

void threads_set(int n) {
  pthread_mutex_lock(&pool.mu);
  pool.want = n <= 0 ? online() : n > MAX_THREADS ? MAX_THREADS : n;
  pthread_mutex_unlock(&pool.mu);
}

int threads_count(void) {
  pthread_mutex_lock(&pool.mu);
  if (!pool.want)
    pool.want = online();
  int n = pool.want;
  pthread_mutex_unlock(&pool.mu);
  return n;
}

static void run_range(ThreadsBody body, const int64_t *args, int64_t extent,
                      int ranges, int r) {
  int64_t lo = extent * r / ranges, hi = extent * (r + 1) / ranges;
  if (lo < hi)
    body(args, lo, hi);
}

static void *worker(void *arg) {
  int id = (int)(intptr_t)arg; /* 1, 2, ...: range id of the job */
  unsigned long seen = 0;
  pthread_mutex_lock(&pool.mu);
  for (;;) {
    while (pool.gen == seen)
      pthread_cond_wait(&pool.go, &pool.mu);
    seen = pool.gen;
    if (id >= pool.ranges)
      continue; /* a job with fewer ranges than workers */
    ThreadsBody body = pool.body;
    const int64_t *args = pool.args;
    int64_t extent = pool.extent;
    int ranges = pool.ranges;
    pthread_mutex_unlock(&pool.mu);
    run_range(body, args, extent, ranges, id);
    pthread_mutex_lock(&pool.mu);
    if (--pool.pending == 0)
      pthread_cond_signal(&pool.done);
  }
  return NULL;
}

void threads_parallel_for(ThreadsBody body, const int64_t *args,
                          int64_t extent) {
  int n = threads_count();
  if (n > extent)
    n = (int)extent;
  if (n <= 1) {
    if (extent > 0)
      body(args, 0, extent);
    return;
  }
  pthread_mutex_lock(&pool.mu);
  while (pool.started < n - 1) {
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int failed =
        pthread_create(&t, &at, worker, (void *)(intptr_t)(pool.started + 1));
    pthread_attr_destroy(&at);
    if (failed)
      break;
    pool.started++;
  }
  if (pool.started + 1 < n)
    n = pool.started + 1; /* as many as could start */
  pool.body = body;
  pool.args = args;
  pool.extent = extent;
  pool.ranges = n;
  pool.pending = n - 1;
  pool.gen++;
  pthread_cond_broadcast(&pool.go);
  pthread_mutex_unlock(&pool.mu);
  run_range(body, args, extent, n, 0);
  pthread_mutex_lock(&pool.mu);
  while (pool.pending > 0)
    pthread_cond_wait(&pool.done, &pool.mu);
  pthread_mutex_unlock(&pool.mu);
}
