/* The worker threads that run the JIT's parallel loops (Stmt.parallel):
 * the compiled code hands such a loop to threads_parallel_for, which
 * splits its iterations into one contiguous range per thread. The C
 * path's code uses OpenMP instead (model.c's NAME_PARALLEL_FOR). */
#ifndef CNNC_THREADS_H
#define CNNC_THREADS_H

#include <stdint.h>

/* The threads parallel loops use from now on, the caller's included;
 * 0: one per online processor. Not while a loop runs. */
void threads_set(int n);
int threads_count(void);

/* Runs body(args, lo, hi) over [0, extent) in ranges, one per thread,
 * and returns when all are done. Loops do not nest: the compiled code
 * calls this only from its kernels, on the caller's thread. */
typedef void (*ThreadsBody)(const int64_t *args, int64_t lo, int64_t hi);
void threads_parallel_for(ThreadsBody body, const int64_t *args,
                          int64_t extent);

#endif
