/* libFuzzer harness for the runtime's IDX reader (rt_idx_read,
 * runtime/idx.c): the input is a whole file, plain or gzip-compressed. The
 * reader takes a path, so each input is written to a scratch file (in
 * /dev/shm when there is one).
 *
 * Beyond "no crash, no sanitizer report", it checks:
 *   - a failure leaves the result empty and explains itself in a message
 *     that starts with the path;
 *   - a success gives data of count = product(dims) elements;
 *   - a plain input and the same bytes gzip-compressed get the same
 *     verdict and, when both succeed, the same dimensions and data. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "cnnc_runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why) {
  fprintf(stderr, "fuzz_idx: %s\n", why);
  abort();
}

static const char *scratch(int which) {
  static char path[2][128];
  if (!path[which][0])
    snprintf(path[which], sizeof path[which], "%s/cnnc-fuzz-idx-%d-%d%s",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid(),
             which, which ? ".gz" : "");
  return path[which];
}

static void put(const char *path, const void *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
    abort();
}

/* Reads path; checks what holds for every result. */
static int read_checked(const char *path, rt_idx *x) {
  char err[512];
  err[0] = 0;
  int rc = rt_idx_read(path, x, err, sizeof err);
  if (rc < 0) {
    size_t n = strlen(path);
    if (x->data || x->ndim || x->count || x->nbytes)
      fail("a failed read left data behind");
    if (strncmp(err, path, n) != 0 || strncmp(err + n, ": ", 2) != 0 ||
        !err[n + 2])
      fail("a failure's message does not name the file and the problem");
    return rc;
  }
  if (rc != 0 || !x->data || x->ndim < 1 || x->ndim > RT_MAX_DIMS)
    fail("a success with no data or an invalid rank");
  int64_t count = 1;
  for (int i = 0; i < x->ndim; i++)
    count *= x->dims[i];
  if (count != x->count || (size_t)count * rt_dtype_size(x->dtype) != x->nbytes)
    fail("count or nbytes disagree with the dimensions");
  return 0;
}

/* gzip (RFC 1952) of data, in a malloc'd buffer. */
static unsigned char *gzip(const uint8_t *data, size_t size, size_t *out) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    abort();
  size_t cap = deflateBound(&z, size) + 64;
  unsigned char *buf = malloc(cap);
  if (!buf)
    abort();
  z.next_in = (unsigned char *)data;
  z.avail_in = (unsigned)size;
  z.next_out = buf;
  z.avail_out = (unsigned)cap;
  if (deflate(&z, Z_FINISH) != Z_STREAM_END)
    abort();
  *out = cap - z.avail_out;
  deflateEnd(&z);
  return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  rt_idx plain, packed;
  put(scratch(0), data, size);
  int rc = read_checked(scratch(0), &plain);
  int is_gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  if (!is_gzip) {
    size_t n;
    unsigned char *gz = gzip(data, size, &n);
    put(scratch(1), gz, n);
    free(gz);
    int rc2 = read_checked(scratch(1), &packed);
    if (rc != rc2)
      fail(rc ? "the gzip-compressed file was read but the plain one not"
              : "the plain file was read but the gzip-compressed one not");
    if (rc == 0 && (plain.type != packed.type || plain.ndim != packed.ndim ||
                    memcmp(plain.dims, packed.dims, sizeof plain.dims) != 0 ||
                    plain.nbytes != packed.nbytes ||
                    memcmp(plain.data, packed.data, plain.nbytes) != 0))
      fail("the plain and the gzip-compressed file read differently");
    rt_idx_free(&packed);
  }
  rt_idx_free(&plain);
  return 0;
}
