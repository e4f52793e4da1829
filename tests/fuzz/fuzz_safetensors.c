/* libFuzzer harness for the runtime's safetensors reader
 * (rt_safetensors_parse, runtime/safetensors.c and runtime/json.c): the
 * input is a whole file.
 *
 * Beyond "no crash, no sanitizer report", it checks what the reader
 * promises in cnnc_runtime.h:
 *   - a failure leaves the set empty and explains itself in a message that
 *     starts with the buffer's name; a short message buffer is never
 *     overrun (it is an exactly sized heap block, so ASan sees overruns);
 *   - a success gives tensors whose byte size agrees with dtype and shape,
 *     with unique names, whose data together fit in the file;
 *   - what was read, written with rt_safetensors_write and read back with
 *     rt_safetensors_read, is the same set (names, dtypes, shapes, bytes,
 *     metadata). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnc_runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define WHAT "fuzz.safetensors"

static void fail(const char *why) {
  fprintf(stderr, "fuzz_safetensors: %s\n", why);
  abort();
}

static void same_sets(const rt_tensors *x, const rt_tensors *y) {
  if (x->n != y->n || x->nmeta != y->nmeta)
    fail("round trip changed the number of tensors or metadata entries");
  for (int i = 0; i < x->n; i++) {
    const rt_tensor *a = &x->v[i], *b = rt_tensors_find(y, a->name);
    if (!b || a->dtype != b->dtype || a->ndim != b->ndim ||
        a->nbytes != b->nbytes ||
        memcmp(a->shape, b->shape, sizeof a->shape[0] * (size_t)a->ndim) ||
        (a->nbytes && memcmp(a->data, b->data, a->nbytes)))
      fail("round trip changed a tensor");
  }
  for (int i = 0; i < x->nmeta; i++) {
    const char *v = rt_tensors_get_meta(y, x->meta[i].key);
    if (!v || strcmp(v, x->meta[i].value))
      fail("round trip changed the metadata");
  }
}

static const char *scratch(void) {
  static char path[128];
  if (!path[0])
    snprintf(path, sizeof path, "%s/cnnc-fuzz-st-%d.safetensors",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
             (int)getpid());
  return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  rt_tensors t;
  char err[512];
  err[0] = 0;
  int rc = rt_safetensors_parse(data, size, WHAT, &t, err, sizeof err);

  /* The same with a message buffer of 1..16 bytes, then none at all. */
  size_t small = 1 + (size ? data[size - 1] % 16 : 0);
  char *e2 = malloc(small);
  rt_tensors t2;
  if (!e2)
    return 0;
  if (rt_safetensors_parse(data, size, WHAT, &t2, e2, small) != rc)
    fail("the result depends on the size of the message buffer");
  if (rc < 0 && strnlen(e2, small) == small)
    fail("a short message buffer was not NUL-terminated");
  free(e2);
  rt_tensors_free(&t2);
  if (rt_safetensors_parse(data, size, NULL, &t2, NULL, 0) != rc)
    fail("the result depends on err being NULL");
  rt_tensors_free(&t2);

  if (rc < 0) {
    if (t.n || t.v || t.nmeta || t.meta)
      fail("a failed parse left tensors behind");
    if (strncmp(err, WHAT ": ", sizeof WHAT + 1) != 0 ||
        strlen(err) <= sizeof WHAT + 1)
      fail("a failure's message does not name the buffer and the problem");
    return 0;
  }

  size_t total = 0;
  for (int i = 0; i < t.n; i++) {
    const rt_tensor *x = &t.v[i];
    size_t el = rt_dtype_size(x->dtype);
    if (!el || x->ndim < 0 || x->ndim > RT_MAX_DIMS || !x->data || !x->name)
      fail("a tensor with an invalid dtype, rank, name or data");
    uint64_t n = 1;
    for (int k = 0; k < x->ndim; k++)
      n *= (uint64_t)x->shape[k];
    if (n * el != x->nbytes)
      fail("a tensor's nbytes disagrees with its shape");
    total += x->nbytes;
    for (int j = 0; j < i; j++)
      if (strcmp(t.v[j].name, x->name) == 0)
        fail("duplicate tensor names were accepted");
  }
  if (total > size)
    fail("the tensors hold more bytes than the file");

  char werr[512];
  if (rt_safetensors_write(scratch(), &t, werr, sizeof werr) == 0) {
    rt_tensors back;
    if (rt_safetensors_read(scratch(), &back, werr, sizeof werr) != 0) {
      fprintf(stderr, "%s\n", werr);
      fail("a file written by rt_safetensors_write does not read back");
    }
    same_sets(&t, &back);
    rt_tensors_free(&back);
    unlink(scratch());
  } else if (!strstr(werr, "header of")) {
    /* Only a header past the size limit may refuse what was read. */
    fprintf(stderr, "%s\n", werr);
    fail("rt_safetensors_write refused a set that was read");
  }
  rt_tensors_free(&t);
  return 0;
}
