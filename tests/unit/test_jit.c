/* The JIT against the C backend: every operator model of tests/oracle/ops
 * and LeNet-5 run through `cnnc run`'s two paths (run_program compiles the
 * generated C with cc; jit_run compiles the same loop IR through LLVM) on
 * the same random weights and inputs, ordinary and with NaN, infinities
 * and negative zeros, must give the same outputs within float32 tolerance
 * (relative 1e-5; NaN matches NaN). Also: the optimization level changes
 * no bit, bad files give the C path's messages, count is range-checked,
 * --emit-llvm writes the module, and the comparison can fail.
 *
 * Run from the top of the tree (the models and the runtime are found by
 * relative paths); the C path caches its programs in ~/.cache/cnnc. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#include "autodiff.h"
#include "cnnc_runtime.h"
#include "jit.h"
#include "lower.h"
#include "plan.h"
#include "run.h"
#include "threads.h"

/* The files the tests write, in a fresh directory. */
static char tmp[64];
static char W[PATH_MAX], IN[PATH_MAX], OUT_C[PATH_MAX], OUT_JIT[PATH_MAX],
    OUT[PATH_MAX], LOG[PATH_MAX], LL[PATH_MAX];

static void name_files(void) {
  snprintf(W, sizeof W, "%s/w.safetensors", tmp);
  snprintf(IN, sizeof IN, "%s/in.safetensors", tmp);
  snprintf(OUT_C, sizeof OUT_C, "%s/c.safetensors", tmp);
  snprintf(OUT_JIT, sizeof OUT_JIT, "%s/jit.safetensors", tmp);
  snprintf(OUT, sizeof OUT, "%s/out.safetensors", tmp);
  snprintf(LOG, sizeof LOG, "%s/stderr.txt", tmp);
  snprintf(LL, sizeof LL, "%s/m.ll", tmp);
}

/* A model from a file, compiled like testutil's compile(). */
static Compiled *compile_file(const char *path) {
  Compiled *c = calloc(1, sizeof *c);
  c->a = arena_new();
  c->f = open_memstream(&c->msgs, &c->len);
  diag_init(&c->d, c->a, c->f);
  Sources *s = load_program(&c->d, c->a, path);
  if (s && c->d.errors == 0)
    c->g = elaborate(&c->d, c->a, s, NULL);
  diag_flush(&c->d);
  fflush(c->f);
  if (c->d.errors)
    fprintf(stderr, "%s: %s", path, c->msgs);
  assert_int_equal(c->d.errors, 0);
  return c;
}

static Program *forward(Compiled *c, int64_t batch) {
  Program *p = lower(&c->d, c->a, c->g, batch, 0);
  assert_int_equal(c->d.errors, 0);
  plan(p);
  return p;
}

/* Asserts that the JIT compiled, showing cnnc's messages if not. */
static Jit *compiled(Compiled *c, Jit *j) {
  if (!j) {
    diag_flush(&c->d);
    fflush(c->f);
    fprintf(stderr, "jit_compile failed:\n%s", c->msgs);
  }
  assert_non_null(j);
  return j;
}

/* --- random files ---------------------------------------------------- */

static uint64_t rng;

static float uniform(float lo, float hi) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return lo + (hi - lo) * (float)(rng >> 40) / 16777216.0f;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Every parameter and buffer under its state_dict name; skip leaves one
 * out, extra adds one, and bad_shape or bad_dtype spoils the first. */
typedef struct Spoil {
  const char *skip, *extra;
  int bad_shape, bad_dtype;
} Spoil;

static void write_weights(const Program *p, const char *path, Spoil sp) {
  rt_tensors w = {0};
  int first = 1;
  for (int i = 0; i < p->bufs.n; i++) {
    const Buffer *b = p->bufs.v[i];
    if (!b->param || (b->kind != BUF_F32 && b->kind != BUF_I64))
      continue;
    if (sp.skip && strcmp(sp.skip, b->param->name) == 0)
      continue;
    int64_t shape[MAX_RANK];
    for (int k = 0; k < b->shape.rank; k++)
      shape[k] = b->shape.d[k];
    if (first && sp.bad_shape)
      shape[0]++;
    int64_t n = 1;
    for (int k = 0; k < b->shape.rank; k++)
      n *= shape[k];
    if (b->kind == BUF_I64) {
      int64_t *v = calloc((size_t)n + 1, sizeof *v);
      assert_int_equal(
          rt_tensors_add(&w, b->param->name, RT_I64, b->shape.rank, shape, v),
          0);
      free(v);
    } else if (first && sp.bad_dtype) {
      double *v = calloc((size_t)n + 1, sizeof *v);
      assert_int_equal(
          rt_tensors_add(&w, b->param->name, RT_F64, b->shape.rank, shape, v),
          0);
      free(v);
    } else {
      float *v = malloc(sizeof *v * ((size_t)n + 1));
      int positive = ends_with(b->param->name, "running_var");
      for (int64_t k = 0; k < n; k++)
        v[k] = positive ? uniform(0.5f, 1.5f) : uniform(-0.5f, 0.5f);
      assert_int_equal(
          rt_tensors_add(&w, b->param->name, RT_F32, b->shape.rank, shape, v),
          0);
      free(v);
    }
    first = 0;
  }
  if (sp.extra) {
    int64_t three = 3;
    assert_int_equal(rt_tensors_add(&w, sp.extra, RT_F32, 1, &three, NULL), 0);
  }
  char err[512];
  assert_int_equal(rt_safetensors_write(path, &w, err, sizeof err), 0);
  rt_tensors_free(&w);
}

/* What to spoil in an input file: the first input under another name, or
 * of the wrong shape ([N, 2]); an extra tensor. */
typedef struct BadInput {
  const char *rename, *extra;
  int bad_shape;
} BadInput;

/* count samples of every input, in [-2, 2]; with special, NaN, both
 * infinities and negative zeros among them. */
static void write_inputs(const Program *p, const char *path, int64_t count,
                         int special, BadInput bad) {
  rt_tensors in = {0};
  for (int i = 0; i < p->inputs.n; i++) {
    const Buffer *b = p->inputs.v[i];
    int64_t shape[MAX_RANK + 1] = {count, 2};
    int rank = 2;
    if (i || !bad.bad_shape) {
      rank = b->shape.rank + 1;
      for (int k = 0; k < b->shape.rank; k++)
        shape[k + 1] = b->shape.d[k];
    }
    int64_t n = 1;
    for (int k = 0; k < rank; k++)
      n *= shape[k];
    float *v = malloc(sizeof *v * (size_t)n);
    for (int64_t k = 0; k < n; k++) {
      v[k] = uniform(-2, 2);
      if (special && k % 7 == 3)
        v[k] = NAN;
      else if (special && k % 11 == 5)
        v[k] = k % 2 ? INFINITY : -INFINITY;
      else if (special && k % 5 == 1)
        v[k] = -0.0f;
    }
    const char *name = i == 0 && bad.rename ? bad.rename : b->node->name;
    assert_int_equal(rt_tensors_add(&in, name, RT_F32, rank, shape, v), 0);
    free(v);
  }
  if (bad.extra) {
    int64_t one = 1;
    assert_int_equal(rt_tensors_add(&in, bad.extra, RT_F32, 1, &one, NULL), 0);
  }
  char err[512];
  assert_int_equal(rt_safetensors_write(path, &in, err, sizeof err), 0);
  rt_tensors_free(&in);
}

/* --- running and comparing ---------------------------------------------- */

static int run_path(Compiled *c, const Program *p, int jit, const char *w,
                    const char *in, const char *out) {
  RunOptions o = {.weights = w, .input = in, .output = out};
  unlink(out);
  int rc = jit ? jit_run(&c->d, p, &o) : run_program(&c->d, p, NULL, &o);
  diag_flush(&c->d);
  fflush(c->f);
  return rc;
}

static int same(float a, float b, double rel) {
  if (isnan(a) || isnan(b))
    return isnan(a) && isnan(b);
  if (a == b)
    return 1;
  return fabs((double)a - (double)b) <= rel * fmax(fabs(a), fabs(b));
}

/* Whether two output files hold the same tensors within rel; counts the
 * values and those identical to the bit (NaN counting as one). */
static int outputs_agree(const char *a, const char *b, double rel, long *values,
                         long *identical, const char *what, int quiet) {
  rt_tensors x = {0}, y = {0};
  char err[512];
  assert_int_equal(rt_safetensors_read(a, &x, err, sizeof err), 0);
  assert_int_equal(rt_safetensors_read(b, &y, err, sizeof err), 0);
  int ok = x.n == y.n && x.n > 0;
  for (int i = 0; ok && i < x.n; i++) {
    const rt_tensor *s = &x.v[i], *t = rt_tensors_find(&y, s->name);
    ok = t && t->dtype == RT_F32 && s->dtype == RT_F32 && t->ndim == s->ndim &&
         t->nbytes == s->nbytes;
    for (int k = 0; ok && k < s->ndim; k++)
      ok = s->shape[k] == t->shape[k];
    const float *u = s->data, *v = ok ? t->data : NULL;
    for (size_t k = 0; ok && k < s->nbytes / 4; k++) {
      ++*values;
      if (!same(u[k], v[k], rel)) {
        if (!quiet)
          fprintf(stderr, "%s: %s[%zu]: C %.9g, JIT %.9g\n", what, s->name, k,
                  u[k], v[k]);
        ok = 0;
      }
      *identical +=
          memcmp(&u[k], &v[k], 4) == 0 || (isnan(u[k]) && isnan(v[k]));
    }
  }
  rt_tensors_free(&x);
  rt_tensors_free(&y);
  return ok;
}

/* One model through both paths, on ordinary and on special inputs. */
/* extra: lowering passes beyond the default (LOWER_AVX512) */
static void agree(const char *path, int64_t batch, int64_t count,
                  unsigned extra) {
  Compiled *c = compile_file(path);
  Program *p = lower_passes(&c->d, c->a, c->g, batch, 0,
                            LOWER_TILE | LOWER_FUSE | LOWER_FMA | extra);
  assert_int_equal(c->d.errors, 0);
  plan(p);
  const char *w = W, *in = IN;
  long values = 0, identical = 0;
  rng = 0x2545f4914f6cdd1du;
  write_weights(p, w, (Spoil){0});
  for (int special = 0; special < 2; special++) {
    write_inputs(p, in, count, special, (BadInput){0});
    const char *oc = OUT_C, *oj = OUT_JIT;
    int rc = run_path(c, p, 0, w, in, oc);
    int rj = run_path(c, p, 1, w, in, oj);
    if (rc || rj)
      fprintf(stderr, "%s: %s", path, c->msgs);
    assert_int_equal(rc, 0);
    assert_int_equal(rj, 0);
    assert_true(outputs_agree(oc, oj, 1e-5, &values, &identical, path, 0));
  }
  printf("  ok %-40s %7ld values, %7ld identical to the bit%s\n", path, values,
         identical, extra ? " (AVX-512 tiles)" : "");
  release(c);
}

static void test_ops(void **state) {
  (void)state;
  const char *dir = "tests/oracle/ops";
  DIR *d = opendir(dir);
  assert_non_null(d);
  char *names[256];
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) && n < 256;)
    if (ends_with(e->d_name, ".cnn"))
      names[n++] = strdup(e->d_name);
  closedir(d);
  assert_true(n >= 20);
  for (int i = 0; i < n; i++) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    agree(path, 2, 5, 0); /* 5 samples: chunks of 2, 2 and 1 */
    free(names[i]);
  }
}

static void test_lenet5(void **state) {
  (void)state;
  agree("dsl-examples/lenet5.cnn", 3, 4, 0);
  /* the tiles sized for AVX-512, whatever this processor has */
  agree("dsl-examples/lenet5.cnn", 3, 4, LOWER_AVX512);
  agree("tests/oracle/ops/conv_packed.cnn", 2, 5, LOWER_AVX512);
  agree("tests/oracle/ops/conv_same.cnn", 2, 5, LOWER_AVX512);
}

/* A model's outputs through jit_compile at level, on fixed files. */
static float *jit_outputs_parts(Compiled *c, Program *p, int level, int nparts,
                                int64_t count, size_t *n) {
  Jit *j = compiled(c, jit_compile_parts(&c->d, p, level, nparts));
  unsigned char *data;
  size_t len;
  char err[512];
  assert_int_equal(rt_read_file(W, &data, &len, err, sizeof err), 0);
  assert_int_equal(jit_load(j, data, len, err, sizeof err), 0);
  free(data);
  rt_tensors in = {0};
  assert_int_equal(rt_safetensors_read(IN, &in, err, sizeof err), 0);
  const void *ins[16];
  void *outs[16];
  *n = 0;
  for (int i = 0; i < p->outputs.n; i++)
    *n += (size_t)(count * shape_numel(p->outputs.v[i]->shape));
  float *all = calloc(*n, sizeof *all), *at = all;
  for (int i = 0; i < p->inputs.n; i++)
    ins[i] = rt_tensors_find(&in, p->inputs.v[i]->node->name)->data;
  for (int i = 0; i < p->outputs.n; i++) {
    outs[i] = at;
    at += count * shape_numel(p->outputs.v[i]->shape);
  }
  assert_int_equal(jit_call(j, count, ins, outs), 0);
  rt_tensors_free(&in);
  jit_free(j);
  return all;
}

static float *jit_outputs(Compiled *c, Program *p, int level, int64_t count,
                          size_t *n) {
  return jit_outputs_parts(c, p, level, 0, count, n);
}

static void same_bits(const float *ref, const float *got, size_t n,
                      const char *what, int how) {
  for (size_t i = 0; i < n; i++)
    if (memcmp(&ref[i], &got[i], 4) != 0 && !(isnan(ref[i]) && isnan(got[i]))) {
      fprintf(stderr, "%s (%d) [%zu]: %.9g, against %.9g\n", what, how, i,
              got[i], ref[i]);
      fail();
    }
}

/* Splitting the program into modules compiled at the same time changes no
 * bit, whether a kernel's count is fixed (batch 1) or not, and with more
 * parts than kernels. */
static void test_parts(void **state) {
  (void)state;
  static const char *const models[] = {"dsl-examples/lenet5.cnn",
                                       "tests/oracle/ops/two_io.cnn",
                                       "tests/oracle/ops/lrn.cnn"};
  for (size_t m = 0; m < sizeof models / sizeof models[0]; m++)
    for (int64_t batch = 1; batch <= 3; batch += 2) {
      Compiled *c = compile_file(models[m]);
      Program *p = forward(c, batch);
      rng = 7;
      write_weights(p, W, (Spoil){0});
      write_inputs(p, IN, batch, 1, (BadInput){0});
      size_t n, k;
      float *ref = jit_outputs_parts(c, p, 2, 1, batch, &n);
      for (int parts = 2; parts <= 16; parts *= 2) {
        float *got = jit_outputs_parts(c, p, 2, parts, batch, &k);
        assert_int_equal(n, k);
        same_bits(ref, got, n, models[m], parts);
        free(got);
      }
      free(ref);
      release(c);
    }
}

/* Fusion (compiler/fuse.c) changes no bit: each model's forward program
 * with and without it gives the same outputs, through fewer kernels. */
static void test_fusion(void **state) {
  (void)state;
  static const char *const models[] = {
      "tests/oracle/ops/fusion.cnn", "tests/oracle/ops/bn.cnn",
      "dsl-examples/lenet5.cnn", "dsl-examples/resnet18.cnn"};
  for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
    /* ResNet-18's plain nests take minutes: tiled only */
    unsigned first = strstr(models[m], "resnet") ? LOWER_TILE : 0;
    for (unsigned tile = first; tile <= LOWER_TILE; tile += LOWER_TILE) {
      Compiled *c = compile_file(models[m]);
      Program *fused = lower_passes(&c->d, c->a, c->g, 2, 0, tile | LOWER_FUSE);
      Program *apart = lower_passes(&c->d, c->a, c->g, 2, 0, tile);
      assert_int_equal(c->d.errors, 0);
      plan(fused);
      plan(apart);
      assert_true(fused->kernels.n < apart->kernels.n);
      rng = 5;
      write_weights(fused, W, (Spoil){0});
      write_inputs(fused, IN, 2, 0, (BadInput){0}); /* no NaN to hide in */
      size_t n, k;
      float *ref = jit_outputs(c, apart, 2, 2, &n);
      float *got = jit_outputs(c, fused, 2, 2, &k);
      assert_int_equal(n, k);
      same_bits(ref, got, n, models[m], (int)tile);
      printf("  ok %-32s %s: %d kernels fused into %d, %zu outputs the "
             "same\n",
             models[m], tile ? "tiled" : "plain", apart->kernels.n,
             fused->kernels.n, n);
      free(ref);
      free(got);
      release(c);
    }
  }
}

/* tanh, which cnnc computes as a rational function (lower.c, tanh_of),
 * against the C library's tanh in double: within 6 float ulps of it over
 * [-10, 10] and at the edges of float, never above 1 in size, and odd;
 * -0, NaN and the infinities give -0, NaN and +-1 within an ulp. The C
 * path computes the same bits (test_ops runs ops/activations.cnn). */
static void test_tanh(void **state) {
  (void)state;
  enum { WIDTH = 1024, B = 64, N = WIDTH * B };
  Compiled *c =
      compile_ok("model t {\n  input x[1024]\n  output y = x -> tanh\n}\n");
  Program *p = forward(c, B);
  Jit *j = compiled(c, jit_compile(&c->d, p, 2));
  static float x[N], y[N];
  static const float special[] = {0.0f,  -0.0f, 1e-30f,    -1e-30f,   1e-3f,
                                  0.55f, 7.9f,  7.905311f, 7.91f,     8.0f,
                                  20.0f, 3e38f, INFINITY,  -INFINITY, NAN};
  int ns = (int)(sizeof special / sizeof *special);
  for (int i = 0; i < N; i++)
    x[i] = i < ns ? special[i] : -10.0f + 20.0f * (float)(i - ns) / (N - ns);
  const void *ins[] = {x};
  void *outs[] = {y};
  assert_int_equal(jit_call(j, B, ins, outs), 0);
  double worst = 0;
  for (int i = 0; i < N; i++) {
    if (isnan(x[i])) {
      assert_true(isnan(y[i]));
      continue;
    }
    double t = tanh((double)x[i]);
    float ft = (float)fabs(t);
    double ulp = (double)nextafterf(ft, INFINITY) - (double)ft;
    double err = fabs((double)y[i] - t) / ulp;
    if (err > worst)
      worst = err;
    if (err > 6 || fabsf(y[i]) > 1 || signbit(y[i]) != signbit(x[i]))
      fprintf(stderr, "tanh(%.9g) = %.9g, against %.9g: %.2f ulps\n", x[i],
              y[i], t, err);
    assert_true(err <= 6);
    assert_true(fabsf(y[i]) <= 1);
    assert_true(signbit(y[i]) == signbit(x[i]));
  }
  printf("  tanh: worst %.2f ulps over %d values\n", worst, N);
  jit_free(j);
  release(c);
}

/* Switching LLVM's optimizations off changes no bit. */
static void test_levels(void **state) {
  (void)state;
  static const char *const models[] = {"tests/oracle/ops/conv_same.cnn",
                                       "tests/oracle/ops/lrn.cnn",
                                       "tests/oracle/ops/two_io.cnn"};
  for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
    Compiled *c = compile_file(models[m]);
    Program *p = forward(c, 3);
    rng = 42;
    write_weights(p, W, (Spoil){0});
    write_inputs(p, IN, 3, 1, (BadInput){0});
    size_t n, k;
    float *ref = jit_outputs(c, p, 0, 3, &n);
    for (int level = 1; level <= 3; level++) {
      float *got = jit_outputs(c, p, level, 3, &k);
      assert_int_equal(n, k);
      for (size_t i = 0; i < n; i++)
        if (memcmp(&ref[i], &got[i], 4) != 0 &&
            !(isnan(ref[i]) && isnan(got[i]))) {
          fprintf(stderr, "%s: -O%d [%zu]: %.9g, -O0 %.9g\n", models[m], level,
                  i, got[i], ref[i]);
          fail();
        }
      free(got);
    }
    free(ref);
    release(c);
  }
}

/* The comparison fails when the outputs differ: other weights. */
static void test_detects_difference(void **state) {
  (void)state;
  Compiled *c = compile_file("tests/oracle/ops/dense.cnn");
  Program *p = forward(c, 2);
  rng = 1;
  write_weights(p, W, (Spoil){0});
  write_inputs(p, IN, 2, 0, (BadInput){0});
  assert_int_equal(run_path(c, p, 1, W, IN, OUT_C), 0);
  write_weights(p, W, (Spoil){0});
  assert_int_equal(run_path(c, p, 1, W, IN, OUT_JIT), 0);
  long values = 0, identical = 0;
  assert_false(outputs_agree(OUT_C, OUT_JIT, 1e-5, &values, &identical, "", 1));
  release(c);
}

/* What the C path's driver prints on stderr for a bad file. */
static char *c_path_message(Compiled *c, const Program *p, const char *w,
                            const char *in) {
  const char *log = LOG;
  fflush(stderr);
  int saved = dup(2), fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fd, 2);
  close(fd);
  int rc = run_path(c, p, 0, w, in, OUT);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  assert_int_equal(rc, 1);
  unsigned char *text;
  size_t len;
  char err[256];
  assert_int_equal(rt_read_file(log, &text, &len, err, sizeof err), 0);
  return (char *)text;
}

/* A bad file: both paths fail with status 1 and write nothing; the JIT's
 * message is the driver's ("cnnc: FILE: MESSAGE", as "cnnc: error: FILE:
 * MESSAGE"); want is in it. */
static void same_failure(const char *model, Spoil sp, int64_t count,
                         BadInput bad, const char *want) {
  Compiled *c = compile_file(model);
  Program *p = forward(c, 2);
  rng = 7;
  const char *w = W, *in = IN;
  write_weights(p, w, sp);
  write_inputs(p, in, count, 0, bad);
  char *expected = c_path_message(c, p, w, in);
  size_t before = c->len;
  assert_int_equal(run_path(c, p, 1, w, in, OUT), 1);
  assert_int_equal(access(OUT, F_OK), -1);
  const char *got = c->msgs + before;
  /* "cnnc: FILE: MESSAGE\n" -> "FILE: MESSAGE" */
  char *line = expected + strlen("cnnc: ");
  line[strcspn(line, "\n")] = 0;
  if (!strstr(got, line) || !strstr(got, want)) {
    fprintf(stderr, "C path: %s\nJIT:    %s", expected, got);
    fail();
  }
  free(expected);
  release(c);
}

static void test_bad_weights(void **state) {
  (void)state;
  const char *m = "dsl-examples/lenet5.cnn";
  BadInput good = {0};
  same_failure(m, (Spoil){.skip = "f7.bias"}, 2, good, "'f7.bias'");
  same_failure(m, (Spoil){.extra = "extra"}, 2, good, "'extra'");
  same_failure(m, (Spoil){.bad_shape = 1}, 2, good, "[7, 1, 5, 5]");
  same_failure(m, (Spoil){.bad_dtype = 1}, 2, good, "F64");
}

static void test_bad_inputs(void **state) {
  (void)state;
  const char *m = "dsl-examples/lenet5.cnn";
  same_failure(m, (Spoil){0}, 2, (BadInput){.rename = "image"}, "'x'");
  same_failure(m, (Spoil){0}, 2, (BadInput){.bad_shape = 1}, "[N, 1, 28, 28]");
  same_failure(m, (Spoil){0}, 2, (BadInput){.extra = "y"}, "'y'");
  same_failure(m, (Spoil){0}, 0, (BadInput){0}, "no samples");
}

/* num_batches_tracked may be missing, as for NAME_load. */
static void test_optional_counter(void **state) {
  (void)state;
  Compiled *c = compile_file("tests/oracle/ops/bn.cnn");
  Program *p = forward(c, 2);
  rng = 9;
  const char *w = W, *in = IN;
  write_weights(p, w, (Spoil){.skip = "b1.num_batches_tracked"});
  write_inputs(p, in, 3, 0, (BadInput){0});
  assert_int_equal(run_path(c, p, 1, w, in, OUT_JIT), 0);
  assert_int_equal(run_path(c, p, 0, w, in, OUT_C), 0);
  long values = 0, identical = 0;
  assert_true(
      outputs_agree(OUT_C, OUT_JIT, 1e-5, &values, &identical, "bn", 0));
  release(c);
}

static void test_count_range(void **state) {
  (void)state;
  Compiled *c = compile_file("tests/oracle/ops/dense.cnn");
  Program *p = forward(c, 4);
  Jit *j = compiled(c, jit_compile(&c->d, p, 2));
  static float x[4 * 1024], y[4][4 * 1024];
  const void *ins[] = {x};
  void *outs[] = {y[0], y[1], y[2], y[3]};
  assert_int_equal(jit_call(j, 4, ins, outs), 0);
  assert_int_equal(jit_call(j, 0, ins, outs), -1);
  assert_int_equal(jit_call(j, 5, ins, outs), -1);
  assert_int_equal(jit_update(j), -1); /* a forward program */
  assert_non_null(jit_state(j)->f32);
  assert_null(jit_state(j)->g32);
  jit_free(j);
  release(c);
}

static void test_emit_ll(void **state) {
  (void)state;
  Compiled *c = compile_file("tests/oracle/ops/conv_groups.cnn");
  Program *p = forward(c, 1);
  const char *ll = LL;
  assert_int_equal(jit_write_ll(&c->d, p, ll), 0);
  unsigned char *text;
  size_t len;
  char err[256];
  assert_int_equal(rt_read_file(ll, &text, &len, err, sizeof err), 0);
  char want[256];
  snprintf(want, sizeof want, "define i32 @%s_forward(", c->g->name);
  assert_non_null(strstr((char *)text, want));
  free(text);
  assert_int_equal(jit_write_ll(&c->d, p, "/nonexistent/dir/m.ll"), 1);
  release(c);
}

/* A training step: the JIT's NAME_backward against the C path's `cnnc
 * grad` (run_program with the training program): the same loss and the
 * same gradients, through batch norm in training mode, dropout's random
 * stream and the loss. Then the update runs and counts its step. */
static const char train_model_src[] =
    "model t_train {\n"
    "  input x[3, 8, 8]\n"
    "  output logits = x -> c1: conv(4, k=3, p=1) -> b1: bn -> relu\n"
    "    -> maxpool(2) -> dropout(0.5) -> flatten -> fc: dense(5)\n"
    "  loss cross_entropy(logits)\n"
    "  train {\n    batch = 4\n"
    "    optimizer adam(lr=0.01)\n  }\n"
    "}\n";

/* The float inputs of training program t, random, and labels that are
 * classes of the model, written to IN; ins points at each input's data. */
static void train_inputs(Compiled *c, const Program *t, int64_t count,
                         rt_tensors *in_, const void **ins) {
  rt_tensors in = {0};
  int64_t classes = shape_numel(c->g->outputs.v[0].node->shape);
  for (int i = 0; i < t->inputs.n; i++) {
    const Buffer *b = t->inputs.v[i];
    int64_t shape[MAX_RANK + 1] = {count};
    for (int k = 0; k < b->shape.rank; k++)
      shape[k + 1] = b->shape.d[k];
    int64_t n = count * shape_numel(b->shape);
    if (b->is_int) {
      int64_t *v = malloc(sizeof *v * (size_t)n);
      for (int64_t k = 0; k < n; k++)
        v[k] = (int64_t)(uniform(0, 1) * (float)classes) % classes;
      assert_int_equal(rt_tensors_add(&in, b->node->name, RT_I64,
                                      b->shape.rank + 1, shape, v),
                       0);
      free(v);
    } else {
      float *v = malloc(sizeof *v * (size_t)n);
      for (int64_t k = 0; k < n; k++)
        v[k] = uniform(-2, 2);
      assert_int_equal(rt_tensors_add(&in, b->node->name, RT_F32,
                                      b->shape.rank + 1, shape, v),
                       0);
      free(v);
    }
  }
  char err[512];
  assert_int_equal(rt_safetensors_write(IN, &in, err, sizeof err), 0);
  *in_ = in;
  for (int i = 0; i < t->inputs.n; i++)
    ins[i] = rt_tensors_find(in_, t->inputs.v[i]->node->name)->data;
}

static void grad_agrees(Compiled *c, const char *what) {
  assert_int_equal(c->d.errors, 0);
  int64_t batch = c->g->train.batch, count = batch < 3 ? batch : 3;
  Program *p = lower(&c->d, c->a, c->g, batch, 0);
  autodiff(&c->d, c->g);
  Program *t = lower(&c->d, c->a, c->g, batch, 1);
  assert_int_equal(c->d.errors, 0);
  plan(p);
  plan(t);
  rng = 11;
  write_weights(t, W, (Spoil){0});
  rt_tensors in = {0};
  const void *ins[8];
  train_inputs(c, t, count, &in, ins);
  char err[512];

  RunOptions o = {.weights = W, .input = IN, .output = OUT_C};
  int rc = run_program(&c->d, p, t, &o);
  diag_flush(&c->d);
  fflush(c->f);
  if (rc)
    fprintf(stderr, "%s: %s", what, c->msgs);
  assert_int_equal(rc, 0);
  rt_tensors ref = {0};
  assert_int_equal(rt_safetensors_read(OUT_C, &ref, err, sizeof err), 0);

  Jit *j = compiled(c, jit_compile(&c->d, t, 2));
  unsigned char *data;
  size_t len;
  assert_int_equal(rt_read_file(W, &data, &len, err, sizeof err), 0);
  assert_int_equal(jit_load(j, data, len, err, sizeof err), 0);
  free(data);
  JitState *s = jit_state(j); /* as NAME_init(s, 0) leaves it */
  char lr[64];
  snprintf(lr, sizeof lr, "%.9g", c->g->train.lr);
  s->lr = strtof(lr, NULL);
  assert_int_equal(t->outputs.n, 0); /* backward returns the loss only */
  assert_int_equal(jit_call(j, count, ins, NULL), 0);
  assert_int_equal(s->draws, 1);

  long values = 0, identical = 0;
  const rt_tensor *loss = rt_tensors_find(&ref, "loss");
  assert_non_null(loss);
  float got = s->arena[t->loss->offset], want = *(const float *)loss->data;
  if (!same(want, got, 1e-5)) {
    fprintf(stderr, "%s: loss: C %.9g, JIT %.9g\n", what, want, got);
    fail();
  }
  for (int i = 0; i < t->bufs.n; i++) {
    const Buffer *b = t->bufs.v[i];
    if (b->kind != BUF_GRAD)
      continue;
    const rt_tensor *g = rt_tensors_find(&ref, b->param_buf->param->name);
    assert_non_null(g);
    const float *u = g->data, *v = s->g32 + b->offset;
    for (int64_t k = 0; k < rt_tensor_numel(g); k++, values++) {
      identical += memcmp(&u[k], &v[k], 4) == 0;
      if (!same(u[k], v[k], 1e-5)) {
        fprintf(stderr, "%s: d%s[%lld]: C %.9g, JIT %.9g\n", what, g->name,
                (long long)k, u[k], v[k]);
        fail();
      }
    }
  }
  printf("  ok %-40s %7ld gradients, %7ld identical to the bit\n", what, values,
         identical);
  assert_int_equal(jit_update(j), 0);
  assert_int_equal(s->step, 1);
  rt_tensors_free(&ref);
  rt_tensors_free(&in);
  jit_free(j);
}

/* The gradients of training program t through the JIT, by parameter. */
static float *jit_gradients(Compiled *c, const Program *t, int64_t count,
                            const void **ins, size_t *n) {
  Jit *j = compiled(c, jit_compile(&c->d, t, 2));
  unsigned char *data;
  size_t len;
  char err[512];
  assert_int_equal(rt_read_file(W, &data, &len, err, sizeof err), 0);
  assert_int_equal(jit_load(j, data, len, err, sizeof err), 0);
  free(data);
  assert_int_equal(jit_call(j, count, ins, NULL), 0);
  const JitState *s = jit_state(j);
  *n = 0;
  for (int i = 0; i < t->bufs.n; i++)
    *n += t->bufs.v[i]->kind == BUF_GRAD ? (size_t)t->bufs.v[i]->size : 0;
  float *all = calloc(*n + 1, sizeof *all), *at = all;
  for (int pi = 0; pi < c->g->params.n; pi++)
    for (int i = 0; i < t->bufs.n; i++) {
      const Buffer *b = t->bufs.v[i];
      if (b->kind == BUF_GRAD && b->param_buf->param->index == pi) {
        memcpy(at, s->g32 + b->offset, sizeof *at * (size_t)b->size);
        at += b->size;
      }
    }
  jit_free(j);
  return all;
}

/* Fusion changes no bit of a training step either: the same gradients
 * with and without it, through fewer kernels (the backward pass's
 * act_dx fused into the gradient before it). */
static void test_fusion_train(void **state) {
  (void)state;
  static const char *const models[] = {"tests/oracle/grad_ops/fusion.cnn",
                                       "tests/oracle/grad_ops/bn.cnn",
                                       "dsl-examples/lenet5.cnn"};
  for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
    Compiled *c = compile_file(models[m]);
    int64_t batch = c->g->train.batch, count = batch < 3 ? batch : 3;
    autodiff(&c->d, c->g);
    Program *fused =
        lower_passes(&c->d, c->a, c->g, batch, 1, LOWER_TILE | LOWER_FUSE);
    Program *apart = lower_passes(&c->d, c->a, c->g, batch, 1, LOWER_TILE);
    assert_int_equal(c->d.errors, 0);
    plan(fused);
    plan(apart);
    assert_true(fused->kernels.n < apart->kernels.n);
    rng = 13;
    write_weights(fused, W, (Spoil){0});
    rt_tensors in = {0};
    const void *ins[8];
    train_inputs(c, fused, count, &in, ins);
    size_t n, k;
    float *ref = jit_gradients(c, apart, count, ins, &n);
    float *got = jit_gradients(c, fused, count, ins, &k);
    assert_int_equal(n, k);
    same_bits(ref, got, n, models[m], 1);
    printf("  ok %-34s %d kernels fused into %d, %zu gradients the same\n",
           models[m], apart->kernels.n, fused->kernels.n, n);
    free(ref);
    free(got);
    rt_tensors_free(&in);
    release(c);
  }
}

/* Threads change no bit: the parallel loops (large convolutions, dense
 * layers, a padded max pool) split their blocks of channels
 * (batch 1, and weight gradients) or their samples (batch 4) among 1, 2
 * or 3 threads, forward and training step. */
static const char threads_model_src[] =
    "model t_threads {\n"
    "  input x[8, 64, 64]\n"
    "  output y = x -> c1: conv(32, k=3, p=1) -> b1: bn -> relu\n"
    "    -> maxpool(3, s=1, p=1)\n"
    "    -> c2: conv(32, k=3, s=2, p=1) -> relu -> maxpool(2) -> flatten\n"
    "    -> fc1: dense(300) -> relu -> fc2: dense(10)\n"
    "  loss cross_entropy(y)\n"
    "  train { batch = 4 }\n"
    "}\n";

static void test_threads(void **state) {
  (void)state;
  for (int64_t batch = 1; batch <= 4; batch += 3) {
    Compiled *c = compile_ok(threads_model_src);
    Program *p = forward(c, batch);
    autodiff(&c->d, c->g);
    Program *t = lower(&c->d, c->a, c->g, 4, 1);
    assert_int_equal(c->d.errors, 0);
    plan(t);
    int parallel = 0, pool = 0;
    for (int i = 0; i < p->kernels.n; i++)
      for (int j = 0; j < p->kernels.v[i]->body.n; j++) {
        int par = p->kernels.v[i]->body.v[j]->parallel;
        parallel += par;
        if (!strcmp(p->kernels.v[i]->name, "maxpool0"))
          pool += par;
      }
    assert_true(parallel >= 4); /* c1, the pool, c2, fc1 */
    assert_int_equal(pool, 1);  /* its five spans in one parallel loop */
    rng = 17;
    write_weights(t, W, (Spoil){0});
    write_inputs(p, IN, batch, 0, (BadInput){0});
    rt_tensors in = {0};
    const void *ins[8];
    train_inputs(c, t, 4, &in, ins);
    size_t n, k, gn, gk;
    threads_set(1);
    float *ref = jit_outputs(c, p, 2, batch, &n);
    float *gref = jit_gradients(c, t, 4, ins, &gn);
    for (int th = 2; th <= 3; th++) {
      threads_set(th);
      float *got = jit_outputs(c, p, 2, batch, &k);
      float *ggot = jit_gradients(c, t, 4, ins, &gk);
      assert_int_equal(n, k);
      assert_int_equal(gn, gk);
      same_bits(ref, got, n, "outputs", th);
      same_bits(gref, ggot, gn, "gradients", th);
      free(got);
      free(ggot);
    }
    printf("  ok batch %lld, %d parallel loops: %zu outputs, %zu gradients "
           "the same on 1, 2 and 3 threads\n",
           (long long)batch, parallel, n, gn);
    threads_set(0);
    free(ref);
    free(gref);
    rt_tensors_free(&in);
    release(c);
  }
  /* the C path's OpenMP loops (cc -fopenmp) against the JIT's threads */
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/threads.cnn", tmp);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(threads_model_src, f);
  fclose(f);
  setenv("OMP_NUM_THREADS", "2", 1);
  threads_set(2);
  agree(path, 1, 1, 0);
  agree(path, 4, 4, 0);
  unsetenv("OMP_NUM_THREADS");
  threads_set(0);
}

static void test_gradients(void **state) {
  (void)state;
  Compiled *c = compile_ok(train_model_src);
  grad_agrees(c, "t_train (conv, bn, relu, maxpool, dropout)");
  release(c);
  c = compile_file("dsl-examples/lenet5.cnn");
  grad_agrees(c, "dsl-examples/lenet5.cnn");
  release(c);
}

int main(void) {
  if (!jit_available()) {
    printf("test_jit: this cnnc has no LLVM; nothing to test\n");
    return 0;
  }
  char rt[PATH_MAX];
  if (realpath("runtime", rt))
    setenv("CNNC_RUNTIME", rt, 0);
  snprintf(tmp, sizeof tmp, "/tmp/cnnc-test-jit-XXXXXX");
  assert_non_null(mkdtemp(tmp));
  name_files();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ops),
      cmocka_unit_test(test_lenet5),
      cmocka_unit_test(test_levels),
      cmocka_unit_test(test_parts),
      cmocka_unit_test(test_tanh),
      cmocka_unit_test(test_fusion),
      cmocka_unit_test(test_fusion_train),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_detects_difference),
      cmocka_unit_test(test_bad_weights),
      cmocka_unit_test(test_bad_inputs),
      cmocka_unit_test(test_optional_counter),
      cmocka_unit_test(test_count_range),
      cmocka_unit_test(test_emit_ll),
      cmocka_unit_test(test_gradients),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0)
    fprintf(stderr, "test_jit: could not remove %s\n", tmp);
  return failed;
}
