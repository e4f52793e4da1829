/* libFuzzer harness for the safetensors loader printed into every
 * generated model.c (compiler/emit_c_safetensors.c.in), instantiated with
 * the prefix "t" (build/gen/safetensors_t.c) and a fixed table shaped like
 * a small model's: weights, a bias, batch-norm buffers with the optional
 * step counter, a scalar, and a name that Python writes with \u escapes.
 * The input is a whole file.
 *
 * Beyond "no crash, no sanitizer report" (libFuzzer hands over an exactly
 * sized heap copy, so ASan sees any read past the file), it checks:
 *   - a failed load leaves the model's arrays untouched and writes a
 *     NUL-terminated message, never past errlen (tried with a buffer of
 *     1..16 bytes and with none);
 *   - against the runtime reader (runtime/safetensors.c): whenever that
 *     strict reader accepts the file, the loader's verdict is determined —
 *     it must succeed exactly when the file holds the table's tensors with
 *     the table's dtypes and shapes and nothing else (but names starting
 *     with "__", cnnc's own, which loads skip), and then load the same
 *     values. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnc_runtime.h"

/* What the compiler emits before the template (compiler/emit_c.c). */
typedef struct t_tensor {
  const char *name;
  int dtype; /* 0: float32, 1: int64 */
  int ndim;
  int64_t shape[4];
  size_t offset; /* into f32 or i64 */
  size_t numel;
} t_tensor;

#include "safetensors_t.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const t_tensor tab[] = {
    {"conv1.weight", 0, 4, {2, 1, 3, 3}, 0, 18},
    {"conv1.bias", 0, 1, {2}, 18, 2},
    {"bn1.weight", 0, 1, {2}, 20, 2},
    {"bn1.bias", 0, 1, {2}, 22, 2},
    {"bn1.running_mean", 0, 1, {2}, 24, 2},
    {"bn1.running_var", 0, 1, {2}, 26, 2},
    {"bn1.num_batches_tracked", 1, 0, {0}, 0, 1},
    {"fc.weight", 0, 2, {3, 4}, 28, 12},
    {"caf\xc3\xa9.scale", 0, 0, {0}, 40, 1},
    {"steps", 1, 1, {2}, 1, 2},
};
enum { NTAB = sizeof tab / sizeof tab[0], NF32 = 41, NI64 = 3 };

typedef struct Model {
  float f32[NF32];
  int64_t i64[NI64];
} Model;

static void sentinel(Model *m) { memset(m, 0xA5, sizeof *m); }

static void fail(const char *why) {
  fprintf(stderr, "fuzz_st_loader: %s\n", why);
  abort();
}

static int optional(const char *name) {
  const char *s = ".num_batches_tracked";
  size_t n = strlen(name), k = strlen(s);
  return n >= k && strcmp(name + n - k, s) == 0;
}

/* -1: the runtime refused the file; else 1 if its tensors are exactly the
 * table's (so the loader must succeed), 0 if not (so it must fail). */
static int runtime_verdict(const uint8_t *data, size_t size, rt_tensors *t) {
  if (rt_safetensors_parse(data, size, "fuzz", t, NULL, 0) != 0)
    return -1;
  for (int i = 0; i < t->n; i++) {
    const rt_tensor *x = &t->v[i];
    if (x->name[0] == '_' && x->name[1] == '_')
      continue; /* cnnc's own tensors (a checkpoint's), which loads skip */
    int row = -1;
    for (int j = 0; j < NTAB; j++)
      if (strcmp(tab[j].name, x->name) == 0)
        row = j;
    if (row < 0)
      return 0;
    const t_tensor *r = &tab[row];
    if (x->dtype != (r->dtype == 0 ? RT_F32 : RT_I64) || x->ndim != r->ndim)
      return 0;
    for (int k = 0; k < r->ndim; k++)
      if (x->shape[k] != r->shape[k])
        return 0;
  }
  for (int j = 0; j < NTAB; j++)
    if (!rt_tensors_find(t, tab[j].name) && !optional(tab[j].name))
      return 0;
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Model m, before;
  char err[512];
  sentinel(&m);
  before = m;
  int rc = t_st_load(data, size, tab, NTAB, m.f32, m.i64, err, sizeof err);
  if (rc != 0 && rc != -1)
    fail("the loader returned neither 0 nor -1");
  if (strnlen(err, sizeof err) == sizeof err)
    fail("the message is not NUL-terminated");
  if (rc != 0 && (memcmp(&m, &before, sizeof m) != 0 || !err[0]))
    fail("a failed load changed the model or gave no message");
  if (rc == 0 && err[0])
    fail("a successful load left a message");

  /* A 1..16-byte message buffer in an exactly sized block, then none. */
  size_t small = 1 + (size ? data[0] % 16 : 0);
  char *e2 = malloc(small);
  Model m2;
  sentinel(&m2);
  if (!e2)
    return 0;
  if (t_st_load(data, size, tab, NTAB, m2.f32, m2.i64, e2, small) != rc)
    fail("the result depends on the size of the message buffer");
  if (strnlen(e2, small) == small)
    fail("a short message buffer was not NUL-terminated");
  free(e2);
  if (t_st_load(data, size, tab, NTAB, m2.f32, m2.i64, NULL, 0) != rc)
    fail("the result depends on err being NULL");

  rt_tensors t;
  int want = runtime_verdict(data, size, &t);
  if (want >= 0 && want != (rc == 0)) {
    fprintf(stderr, "loader: %s\n", rc ? err : "(loaded)");
    fail(want ? "the loader refused a file holding exactly the table"
              : "the loader accepted a file that does not match the table");
  }
  if (want == 1) {
    for (int j = 0; j < NTAB; j++) {
      const rt_tensor *x = rt_tensors_find(&t, tab[j].name);
      const void *got = tab[j].dtype == 0
                            ? (const void *)(m.f32 + tab[j].offset)
                            : (const void *)(m.i64 + tab[j].offset);
      const void *old = tab[j].dtype == 0
                            ? (const void *)(before.f32 + tab[j].offset)
                            : (const void *)(before.i64 + tab[j].offset);
      size_t bytes = tab[j].numel * (tab[j].dtype == 0 ? 4 : 8);
      if (x ? memcmp(got, x->data, bytes) != 0 : memcmp(got, old, bytes) != 0)
        fail("the loader loaded other values than the runtime reader read");
    }
  }
  if (want >= 0)
    rt_tensors_free(&t);
  return 0;
}
