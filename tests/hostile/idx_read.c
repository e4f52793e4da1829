/* Reads IDX files with the runtime's reader (runtime/idx.c), as a driver
 * would: prints each file's element type and dimensions, or "idx_read:
 * MESSAGE" and exits with status 1. tests/hostile/run.sh runs the IDX
 * catalogue through it, the reader alone, as well as through cnnc train,
 * which checks more (the data set's shape) and reports through a driver.
 *
 *   idx_read FILE... */
#include <inttypes.h>
#include <stdio.h>

#include "cnnc_runtime.h"

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: idx_read FILE...\n");
    return 2;
  }
  for (int i = 1; i < argc; i++) {
    rt_idx x;
    char err[512];
    if (rt_idx_read(argv[i], &x, err, sizeof err) != 0) {
      fprintf(stderr, "idx_read: %s\n", err);
      return 1;
    }
    printf("%s: %s [", argv[i], rt_dtype_name(x.dtype));
    for (int k = 0; k < x.ndim; k++)
      printf("%s%" PRId64, k ? ", " : "", x.dims[k]);
    printf("]\n");
    rt_idx_free(&x);
  }
  return 0;
}
