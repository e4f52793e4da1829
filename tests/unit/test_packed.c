/* Inference keeps the packed weights of its channels-innermost
 * convolutions in the state between calls (Program.packed_ok): the first
 * forward pass after init, load or the optimizer's update packs them, and
 * the ones after read the copy. These tests change the weights each of
 * those ways, and by writing f32 and calling NAME_weights_changed, and ask
 * that the next forward pass give the outputs a fresh state with the same
 * weights gives, to the bit: through the JIT (forward and training
 * programs sharing their parameters, as cnnc train runs them) and through
 * the generated C, compiled with cc.
 *
 * Run from the top of the tree. */
#include <limits.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#include "autodiff.h"
#include "cnnc_runtime.h"
#include "emit_c.h"
#include "jit.h"
#include "lower.h"
#include "plan.h"

/* A 256-channel convolution over 12 x 12 (144 positions): channels
 * innermost on both targets, its weights packed (schedule.c), in blocks
 * enough that threads share them out (not the tiles). */
static const char model_src[] =
    "model t_packed {\n"
    "  input x[8, 12, 12]\n"
    "  output logits = x -> c1: conv(256, k=3, p=1) -> relu\n"
    "    -> global_avgpool -> flatten -> fc: dense(5)\n"
    "  loss cross_entropy(logits)\n"
    "  train {\n    batch = 2\n    optimizer sgd(lr=0.5)\n  }\n"
    "}\n";

enum { COUNT = 2, X = 8 * 12 * 12, Y = 5 };

static char tmp[64];

typedef struct Programs {
  Compiled *c;
  Program *p, *t;
} Programs;

static Programs programs(void) {
  Programs r = {compile(model_src), NULL, NULL};
  assert_int_equal(r.c->d.errors, 0);
  r.p = lower(&r.c->d, r.c->a, r.c->g, COUNT, 0);
  autodiff(&r.c->d, r.c->g);
  r.t = lower(&r.c->d, r.c->a, r.c->g, COUNT, 1);
  assert_int_equal(r.c->d.errors, 0);
  plan(r.p);
  plan(r.t);
  return r;
}

/* Prefetches in body: how many, each checked to read buf below its end
 * (an index clamped to size - 1). */
static int prefetches(const StmtVec *body, const Buffer *buf) {
  int n = 0;
  for (int i = 0; i < body->n; i++) {
    const Stmt *s = body->v[i];
    if (s->k == S_PREFETCH) {
      assert_ptr_equal(s->buf, buf);
      assert_int_equal(s->index->k, X_MIN);
      assert_int_equal(s->index->b->k, X_INT);
      assert_int_equal(s->index->b->i, buf->size - 1);
      n++;
    }
    n += prefetches(&s->body, buf);
  }
  return n;
}

static void test_programs(void **state) {
  (void)state;
  Programs r = programs();
  /* both programs have the flag, at one offset; only inference packs
   * into the state */
  assert_non_null(r.p->packed_ok);
  assert_non_null(r.t->packed_ok);
  assert_int_equal(r.p->packed_ok->offset, r.t->packed_ok->offset);
  assert_int_equal(r.p->packed_count, 256 * 8 * 9);
  assert_int_equal(r.t->packed_count, 0);
  /* the kept weights' kernel fetches the next block's weights ahead
   * (lower_conv.c, prefetch_next): training's packing each call, none */
  int kept = 0, ahead = 0;
  for (int i = 0; i < r.p->kernels.n; i++) {
    const Kernel *k = r.p->kernels.v[i];
    if (!k->schedule ||
        !strstr(k->schedule, "packed weights kept between calls"))
      continue;
    kept++;
    for (int b = 0; b < r.p->bufs.n; b++)
      if (r.p->bufs.v[b]->kind == BUF_PACKED)
        ahead += prefetches(&k->body, r.p->bufs.v[b]);
  }
  assert_int_equal(kept, 1);
  assert_true(ahead > 0);
  for (int i = 0; i < r.t->kernels.n; i++)
    assert_int_equal(prefetches(&r.t->kernels.v[i]->body, NULL), 0);
  release(r.c);
}

static void inputs(float *x, int64_t *labels) {
  for (int i = 0; i < COUNT * X; i++)
    x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
  labels[0] = 1;
  labels[1] = 3;
}

static void call(Jit *j, const float *x, float *y) {
  const void *ins[1] = {x};
  void *outs[1] = {y};
  assert_int_equal(jit_call(j, COUNT, ins, outs), 0);
}

static void test_jit(void **state) {
  (void)state;
  if (!jit_available()) {
    printf("  (no LLVM in this cnnc: the JIT part skipped)\n");
    return;
  }
  Programs r = programs();
  Jit *step = jit_compile(&r.c->d, r.t, 2), *fwd = jit_compile(&r.c->d, r.p, 2);
  assert_non_null(step);
  assert_non_null(fwd);
  jit_share_params(fwd, step);
  JitState *s = jit_state(step);
  s->lr = 0.5f; /* as NAME_init sets it from the train section */
  /* weights: some seed's, through a file as cnnc run loads them */
  float *w0 = malloc(sizeof *w0 * (size_t)r.p->f32_count);
  for (int64_t i = 0; i < r.p->f32_count; i++)
    w0[i] = (float)((i * 7919) % 1001) / 1000.0f - 0.5f;
  memcpy(s->f32, w0, sizeof *w0 * (size_t)r.p->f32_count);
  jit_weights_changed(step);
  float x[COUNT * X], a[COUNT * Y], b[COUNT * Y], c[COUNT * Y], d[COUNT * Y];
  int64_t labels[COUNT];
  inputs(x, labels);
  call(fwd, x, a);
  /* a training step changes the weights under the forward program */
  const void *ins[2] = {x, labels};
  assert_int_equal(jit_call(step, COUNT, ins, NULL), 0);
  assert_int_equal(jit_update(step), 0);
  call(fwd, x, b);
  Jit *fresh = jit_compile(&r.c->d, r.p, 2);
  assert_non_null(fresh);
  memcpy(jit_state(fresh)->f32, s->f32, sizeof(float) * (size_t)r.p->f32_count);
  call(fresh, x, c);
  assert_memory_equal(b, c, sizeof b);
  assert_memory_not_equal(a, b, sizeof a);
  /* and back: the first weights, by the means cnnc run and train use */
  char path[PATH_MAX], err[256];
  snprintf(path, sizeof path, "%s/w0.safetensors", tmp);
  rt_tensors w = {0};
  for (int i = 0; i < r.p->bufs.n; i++) {
    const Buffer *bf = r.p->bufs.v[i];
    if (!bf->param)
      continue;
    assert_int_equal(rt_tensors_add(&w, bf->param->name, RT_F32, bf->shape.rank,
                                    bf->shape.d, w0 + bf->offset),
                     0);
  }
  assert_int_equal(rt_safetensors_write(path, &w, err, sizeof err), 0);
  rt_tensors_free(&w);
  unsigned char *data;
  size_t len;
  assert_int_equal(rt_read_file(path, &data, &len, err, sizeof err), 0);
  assert_int_equal(jit_load(step, data, len, err, sizeof err), 0);
  free(data);
  call(fwd, x, d);
  assert_memory_equal(a, d, sizeof a);
  printf("  ok JIT: after the update and after a load, the outputs of a "
         "fresh state\n");
  free(w0);
  jit_free(fresh);
  jit_free(fwd);
  jit_free(step);
  release(r.c);
}

/* The same through the generated C's API; exit status 0, or the check
 * that failed. */
static const char driver_src[] =
    "#include <stdio.h>\n"
    "#include <string.h>\n"
    "#include \"t_packed.h\"\n"
    "static t_packed_state s1, s2;\n"
    "static unsigned char w0[1 << 20], w1[1 << 20];\n"
    "int main(void) {\n"
    "  enum { N = T_PACKED_BATCH, X = T_PACKED_X_SIZE,\n"
    "         Y = T_PACKED_LOGITS_SIZE };\n"
    "  float x[N * X], a[N * Y], b[N * Y], c[N * Y], d[N * Y], e[N * Y];\n"
    "  int64_t labels[N] = {1, 3};\n"
    "  for (int i = 0; i < N * X; i++)\n"
    "    x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;\n"
    "  t_packed_init(&s1, 1);\n"
    "  if (!t_packed_save(&s1, w0, sizeof w0))\n"
    "    return 10;\n"
    "  t_packed_forward(&s1, N, x, a);\n"
    "  t_packed_train_step(&s1, N, x, labels);\n"
    "  t_packed_forward(&s1, N, x, b);\n"
    "  if (!t_packed_save(&s1, w1, sizeof w1))\n"
    "    return 11;\n"
    "  t_packed_init(&s2, 7);\n"
    "  char err[256];\n"
    "  if (t_packed_load(&s2, w1, t_packed_save_size(), err, sizeof err))\n"
    "    return 12;\n"
    "  t_packed_forward(&s2, N, x, c);\n"
    "  if (memcmp(b, c, sizeof b))\n"
    "    return 1; /* the update left the packed weights stale */\n"
    "  if (!memcmp(a, b, sizeof a))\n"
    "    return 2; /* the step changed nothing */\n"
    "  if (t_packed_load(&s1, w0, t_packed_save_size(), err, sizeof err))\n"
    "    return 13;\n"
    "  t_packed_forward(&s1, N, x, d);\n"
    "  if (memcmp(a, d, sizeof a))\n"
    "    return 3; /* the load left them stale */\n"
    "  memcpy(s1.f32, s2.f32, sizeof s1.f32);\n"
    "  t_packed_weights_changed(&s1);\n"
    "  t_packed_forward(&s1, N, x, e);\n"
    "  if (memcmp(c, e, sizeof c))\n"
    "    return 4; /* weights_changed left them stale */\n"
    "  return 0;\n"
    "}\n";

static void test_c(void **state) {
  (void)state;
  Programs r = programs();
  char cpath[PATH_MAX], hpath[PATH_MAX], dpath[PATH_MAX], exe[PATH_MAX];
  snprintf(cpath, sizeof cpath, "%s/t_packed.c", tmp);
  snprintf(hpath, sizeof hpath, "%s/t_packed.h", tmp);
  snprintf(dpath, sizeof dpath, "%s/driver.c", tmp);
  snprintf(exe, sizeof exe, "%s/driver", tmp);
  FILE *c = fopen(cpath, "w"), *h = fopen(hpath, "w"), *d = fopen(dpath, "w");
  assert_non_null(c);
  assert_non_null(h);
  assert_non_null(d);
  emit_c(c, h, r.p, r.t, &r.c->d, "t_packed.h");
  fputs(driver_src, d);
  fclose(c);
  fclose(h);
  fclose(d);
  char cmd[4 * PATH_MAX];
  snprintf(cmd, sizeof cmd,
           "cc -std=c99 -O1 -Wall -Wextra -Werror -o '%s' '%s' '%s' -lm", exe,
           dpath, cpath);
  assert_int_equal(system(cmd), 0);
  int rc = system(exe);
  assert_true(WIFEXITED(rc));
  if (WEXITSTATUS(rc))
    fprintf(stderr, "driver: check %d failed\n", WEXITSTATUS(rc));
  assert_int_equal(WEXITSTATUS(rc), 0);
  printf("  ok C: after train_step, load and weights_changed, the outputs "
         "of a fresh state\n");
  release(r.c);
}

int main(void) {
  snprintf(tmp, sizeof tmp, "/tmp/cnnc-test-packed-XXXXXX");
  assert_non_null(mkdtemp(tmp));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_programs),
      cmocka_unit_test(test_jit),
      cmocka_unit_test(test_c),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0)
    fprintf(stderr, "test_packed: could not remove %s\n", tmp);
  return failed;
}
