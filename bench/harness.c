/* The C side of bench/speed.py: times a model's generated code on one
 * thread. Built once per model and mode against the generated NAME.c:
 *
 *   cc -std=c99 -O3 -march=native -DMODEL=lenet5 -DMODEL_H='"lenet5.h"'
 *      -DIN_SIZE=784 -DOUT_SIZE=10 -DLABELS_SIZE=1 -DCLASSES=10
 *      -DTRAIN=1 -I DIR bench/harness.c DIR/lenet5.c -lm
 *
 * TRAIN=1 times NAME_train_step at the batch the code was generated for
 * (forward in training mode, loss, backward, optimizer update); TRAIN=0
 * times NAME_forward at that batch. Usage:
 *
 *   harness SECONDS MIN_RUNS [X.bin Y.bin]
 *
 * It initializes the model (NAME_init, seed 1), runs for about a tenth of
 * SECONDS (at least 2 runs) to warm up, then runs until SECONDS have passed
 * and at least MIN_RUNS runs were made, timing each run with
 * clock_gettime(CLOCK_MONOTONIC). Inputs cycle through X.bin (float32
 * samples of IN_SIZE values) and Y.bin (int64 labels, LABELS_SIZE per
 * sample), written by speed.py, or are uniform in [-1, 1] with uniform
 * labels when none are given. It prints one line of key=value pairs:
 * runs, seconds (the timed window), cpu (the process's CPU time in that
 * window: on a loaded machine it counts less of the time spent waiting for
 * a core), and the median, mean, minimum, 10th and 90th percentile of one
 * run's time in seconds.
 *
 * Built with -DPROFILE -DMODEL_C='"NAME.c"' and
 * -D'NAME_KERNEL(layer, call)=PROFILE_KERNEL(layer, call)' (speed.py
 * --layers), it compiles the generated code itself with every kernel call
 * timed, and after that line prints one `layer=NAME seconds=T` line per
 * layer and pass, T its time per timed run, the slowest first. */
#ifndef _XOPEN_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include MODEL_H

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(suffix) CAT(MODEL, suffix)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#ifdef PROFILE
/* Time per kernel call site (a layer's name is one string per site). */
enum { PROF_MAX = 1 << 13 };
static struct prof {
  const char *layer;
  double t;
} prof[PROF_MAX];

static void prof_add(const char *layer, double t) {
  size_t h = (size_t)((uintptr_t)layer >> 3) % PROF_MAX, tries = 0;
  while (prof[h].layer && prof[h].layer != layer && tries++ < PROF_MAX)
    h = (h + 1) % PROF_MAX;
  if (tries >= PROF_MAX)
    return; /* more call sites than slots: left out */
  prof[h].layer = layer;
  prof[h].t += t;
}

static int by_time(const void *a, const void *b) {
  double x = ((const struct prof *)a)->t, y = ((const struct prof *)b)->t;
  return (x < y) - (x > y);
}

/* The layers' time per run, merged by name, slowest first. */
static void prof_print(long runs) {
  static struct prof merged[PROF_MAX];
  long n = 0;
  for (long i = 0; i < PROF_MAX; i++) {
    if (!prof[i].layer)
      continue;
    long j = 0;
    while (j < n && strcmp(merged[j].layer, prof[i].layer) != 0)
      j++;
    if (j == n)
      merged[n++].layer = prof[i].layer;
    merged[j].t += prof[i].t;
  }
  qsort(merged, (size_t)n, sizeof *merged, by_time);
  for (long i = 0; i < n; i++)
    printf("layer=%s seconds=%.9f\n", merged[i].layer,
           merged[i].t / (double)runs);
}

static void prof_reset(void) {
  for (long i = 0; i < PROF_MAX; i++)
    prof[i].t = 0;
}

#define PROFILE_KERNEL(layer, call)                                            \
  do {                                                                         \
    double prof_t0 = now();                                                    \
    call;                                                                      \
    prof_add(layer, now() - prof_t0);                                          \
  } while (0)
#include MODEL_C
#endif

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Reads a whole file of element size `elem` into *out; returns the number
 * of elements, or -1. */
static long read_all(const char *path, size_t elem, void **out) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return -1;
  fseek(f, 0, SEEK_END);
  long bytes = ftell(f);
  fseek(f, 0, SEEK_SET);
  *out = malloc(bytes > 0 ? (size_t)bytes : 1);
  if (bytes < 0 || !*out || fread(*out, 1, (size_t)bytes, f) != (size_t)bytes) {
    fclose(f);
    return -1;
  }
  fclose(f);
  return bytes / (long)elem;
}

static uint64_t next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* One training step, or one forward pass, on batch group g. */
static int run(FN(_state) * s, const float *x, const int64_t *y, long g,
               float *out, double *sink) {
  const float *bx = x + g * BATCH * IN_SIZE;
#if TRAIN
  float loss = FN(_train_step)(s, BATCH, bx, y + g * BATCH * LABELS_SIZE);
  (void)out;
  if (loss != loss) {
    fprintf(stderr, "harness: the loss is NaN\n");
    return 1;
  }
  *sink += loss;
#else
  (void)y;
  if (FN(_forward)(s, BATCH, bx, out) != 0)
    return 1;
  *sink += out[0];
#endif
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 5) {
    fprintf(stderr, "usage: %s SECONDS MIN_RUNS [X.bin Y.bin]\n", argv[0]);
    return 2;
  }
  double seconds = atof(argv[1]);
  long min_runs = atol(argv[2]);
  float *x = NULL;
  int64_t *y = NULL;
  long samples;
  if (argc == 5) {
    long nx = read_all(argv[3], sizeof(float), (void **)&x);
    long ny = read_all(argv[4], sizeof(int64_t), (void **)&y);
    samples = nx / IN_SIZE;
    if (nx < 0 || ny < 0 || samples < BATCH || ny != samples * LABELS_SIZE) {
      fprintf(stderr, "%s: %s and %s are not %d or more samples\n", argv[0],
              argv[3], argv[4], BATCH);
      return 1;
    }
  } else {
    uint64_t rs = 7;
    samples = BATCH;
    x = malloc(sizeof(float) * (size_t)(samples * IN_SIZE));
    y = malloc(sizeof(int64_t) * (size_t)(samples * LABELS_SIZE));
    if (!x || !y)
      return 1;
    for (long i = 0; i < samples * IN_SIZE; i++)
      x[i] = (float)((double)(next(&rs) >> 11) / 9007199254740992.0 * 2 - 1);
    for (long i = 0; i < samples * LABELS_SIZE; i++)
      y[i] = (int64_t)(next(&rs) % CLASSES);
  }
  /* at a 64-byte boundary, as the generated header advises */
  FN(_state) *s = NULL;
  if (posix_memalign((void **)&s, 64, sizeof *s))
    s = NULL;
  else
    memset(s, 0, sizeof *s);
  float *out = malloc(sizeof(float) * (size_t)BATCH * OUT_SIZE);
  size_t cap = 1 << 16;
  double *times = malloc(sizeof(double) * cap);
  if (!s || !out || !times) {
    fprintf(stderr, "%s: out of memory\n", argv[0]);
    return 1;
  }
  FN(_init)(s, 1);
  long groups = samples / BATCH, g = 0, runs = 0;
  double start = now(), sink = 0;
  for (long warm = 0; warm < 2 || now() - start < seconds / 10; warm++) {
    if (run(s, x, y, g, out, &sink))
      return 1;
    g = (g + 1) % groups;
  }
#ifdef PROFILE
  prof_reset(); /* the warm-up's calls are not counted */
#endif
  double t0 = now(), c0 = cpu();
  for (;;) {
    double a = now();
    if (run(s, x, y, g, out, &sink))
      return 1;
    double b = now();
    g = (g + 1) % groups;
    if ((size_t)runs == cap) {
      double *more = realloc(times, sizeof(double) * cap * 2);
      if (!more)
        break;
      times = more;
      cap *= 2;
    }
    times[runs++] = b - a;
    if (b - t0 >= seconds && runs >= min_runs)
      break;
  }
  double window = now() - t0, cpu_window = cpu() - c0, sum = 0;
  for (long i = 0; i < runs; i++)
    sum += times[i];
  qsort(times, (size_t)runs, sizeof(double), by_value);
  printf("runs=%ld seconds=%.6f cpu=%.6f median=%.9f mean=%.9f min=%.9f "
         "p10=%.9f p90=%.9f batch=%d sink=%g\n",
         runs, window, cpu_window, times[runs / 2], sum / (double)runs,
         times[0], times[runs / 10], times[runs * 9 / 10], BATCH, sink);
#ifdef PROFILE
  prof_print(runs);
#endif
  free(times);
  free(out);
  free(s);
  free(x);
  free(y);
  return 0;
}
