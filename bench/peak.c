/* The peak of one core: independent chains of fused multiply-adds on
 * its widest vectors (16 floats with AVX-512, else 8), as many as the
 * registers hold. Prints GFLOP/s. Built with -mprefer-vector-width=512
 * where the processor has AVX-512: gcc's tuning otherwise keeps 256 bits. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <time.h>

#define CHAINS 12
#ifdef __AVX512F__
#define WIDTH 16
#else
#define WIDTH 8
#endif

static double cpu_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(void) {
  static float acc[CHAINS][WIDTH];
  float a = 0.999999f, b = 1e-7f;
  long iters = 50000000;
  for (int c = 0; c < CHAINS; c++)
    for (int l = 0; l < WIDTH; l++)
      acc[c][l] = (float)(c + l);
  double t0 = cpu_seconds();
  for (long i = 0; i < iters; i++)
    for (int c = 0; c < CHAINS; c++)
      for (int l = 0; l < WIDTH; l++)
        acc[c][l] = acc[c][l] * a + b;
  double t = cpu_seconds() - t0;
  float sum = 0;
  for (int c = 0; c < CHAINS; c++)
    for (int l = 0; l < WIDTH; l++)
      sum += acc[c][l];
  printf("%.1f GFLOP/s (%g)\n", 2.0 * iters * CHAINS * WIDTH / t * 1e-9, sum);
  return 0;
}
