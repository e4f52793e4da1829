/* Activations kept channels innermost between convolutions
 * (lower_layout.c): which buffers inference stores as (n, h, w, c), that
 * the training program keeps every one as planes, and that the forward
 * pass computes what the plain nests compute.
 *
 * Run from the top of the tree. */
#include <math.h>

#include "testutil.h"

#include "autodiff.h"
#include "jit.h"
#include "lower.h"
#include "plan.h"

/* ca's output: read by cb (3 x 3, copied channels innermost) only.
 * cb's: by cc (1 x 1, read as it is) and by the residual add.
 * cc's chain: adds a residual. cd's: by ce (1 x 1) only. ce's: by a max
 * pool, whose output an average pool reads, whose output cf (too few
 * positions for channels innermost) reads. ca to ce are
 * channels-innermost tiles on both targets. */
static const char model_src[] =
    "model t_layout {\n"
    "  input x[64, 12, 12]\n"
    "  a = x -> ca: conv(64, k=1) -> relu\n"
    "  b = a -> cb: conv(64, k=3, p=1) -> relu\n"
    "  c = b -> cc: conv(64, k=1)\n"
    "  d = relu(c + b) -> cd: conv(64, k=3, p=1) -> relu\n"
    "  output y = d -> ce: conv(64, k=1) -> relu -> maxpool(3, s=2, p=1)\n"
    "    -> avgpool(2) -> cf: conv(32, k=1) -> relu -> global_avgpool\n"
    "    -> flatten -> fc: dense(5)\n"
    "  loss cross_entropy(y)\n"
    "}\n";

enum { COUNT = 2, X = 64 * 12 * 12, Y = 5 };

/* The buffer kernel name stores: of those it writes first, the one of
 * the latest node (a chain's last; scratch buffers are its head's). */
static const Buffer *stored_by(const Program *p, const char *name) {
  for (int i = 0; i < p->kernels.n; i++) {
    const Kernel *k = p->kernels.v[i];
    if (strcmp(k->name, name) != 0)
      continue;
    const Buffer *out = NULL;
    for (int b = 0; b < p->bufs.n; b++) {
      const Buffer *bf = p->bufs.v[b];
      if (bf->kind == BUF_ARENA && bf->node && bf->first == i &&
          (!out || bf->node->id > out->node->id))
        out = bf;
    }
    return out;
  }
  return NULL;
}

static int schedule_says(const Program *p, const char *name, const char *s) {
  for (int i = 0; i < p->kernels.n; i++)
    if (strcmp(p->kernels.v[i]->name, name) == 0)
      return p->kernels.v[i]->schedule &&
             strstr(p->kernels.v[i]->schedule, s) != NULL;
  return 0;
}

static void check_layouts(unsigned target) {
  Compiled *c = compile(model_src);
  assert_int_equal(c->d.errors, 0);
  unsigned all = LOWER_TILE | LOWER_FUSE | LOWER_FMA | target;
  Program *p = lower_passes(&c->d, c->a, c->g, COUNT, 0, all);
  plan(p);
  struct {
    const char *kernel;
    int hwc;
  } want[] = {{"ca", 1}, {"cb", 0},       {"cc", 0},      {"cd", 1},
              {"ce", 1}, {"maxpool0", 1}, {"avgpool0", 0}};
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    const Buffer *b = stored_by(p, want[i].kernel);
    assert_non_null(b);
    if (b->hwc != want[i].hwc)
      fail_msg("%s: hwc %d, expected %d", want[i].kernel, b->hwc, want[i].hwc);
    assert_int_equal(
        schedule_says(p, want[i].kernel, "y stored channels innermost"),
        want[i].hwc);
  }
  /* the readers of those outputs say so */
  const char *readers[] = {"cb", "ce", "maxpool0", "avgpool0"};
  for (size_t i = 0; i < sizeof readers / sizeof *readers; i++)
    assert_true(schedule_says(p, readers[i], "x read channels innermost"));
  assert_false(schedule_says(p, "cc", "x read channels innermost"));
  assert_false(schedule_says(p, "cf", "x read channels innermost"));
  /* the training program's activations are planes */
  autodiff(&c->d, c->g);
  Program *t = lower_passes(&c->d, c->a, c->g, COUNT, 1, all);
  assert_int_equal(c->d.errors, 0);
  for (int i = 0; i < t->bufs.n; i++)
    assert_false(t->bufs.v[i]->hwc);
  release(c);
}

static void test_which(void **state) {
  (void)state;
  check_layouts(0);
  check_layouts(LOWER_AVX512);
}

/* The forward pass through the JIT, tiled (the layouts) and plain. */
static void test_values(void **state) {
  (void)state;
  if (!jit_available()) {
    printf("  (no LLVM in this cnnc: skipped)\n");
    return;
  }
  Compiled *c = compile(model_src);
  assert_int_equal(c->d.errors, 0);
  unsigned tiled = LOWER_TILE | LOWER_FUSE | LOWER_FMA;
  Program *p[2] = {lower_passes(&c->d, c->a, c->g, COUNT, 0, tiled),
                   lower_passes(&c->d, c->a, c->g, COUNT, 0, LOWER_FUSE)};
  static float x[COUNT * X], y[2][COUNT * Y];
  for (int i = 0; i < COUNT * X; i++)
    x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
  for (int v = 0; v < 2; v++) {
    plan(p[v]);
    Jit *j = jit_compile(&c->d, p[v], 1);
    assert_non_null(j);
    JitState *s = jit_state(j);
    for (int64_t i = 0; i < p[v]->f32_count; i++)
      s->f32[i] = (float)((i * 7919) % 1001) / 4000.0f - 0.1f;
    jit_weights_changed(j);
    const void *ins[1] = {x};
    void *outs[1] = {y[v]};
    assert_int_equal(jit_call(j, COUNT, ins, outs), 0);
    jit_free(j);
  }
  double worst = 0, big = 0;
  for (int i = 0; i < COUNT * Y; i++) {
    double d = fabs((double)y[0][i] - y[1][i]);
    worst = d > worst ? d : worst;
    big = fabs(y[1][i]) > big ? fabs(y[1][i]) : big;
  }
  assert_true(big > 0.1);
  if (worst > 1e-5 * big)
    fail_msg("tiled and plain differ by %g (largest output %g)", worst, big);
  release(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_which),
      cmocka_unit_test(test_values),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
