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

/* Two residual blocks (cc's and ce's chains add b and d), a stride-2
 * convolution, pools; ca to ce and cs are channels-innermost tiles on
 * both targets. With a second output that reads g as planes (flatten),
 * ce's chain stores planes, and so must the residual it adds (d), and so
 * cc's chain, and b; one that reads d as planes, the same: the layouts
 * of a residual stream go together. */
static const char model_src[] =
    "model t_layout {\n"
    "  input x[64, 24, 24]\n"
    "  a = x -> ca: conv(64, k=1) -> relu\n"
    "  b = a -> cb: conv(64, k=3, p=1) -> relu\n"
    "  c = b -> cc: conv(64, k=1)\n"
    "  d = relu(c + b)\n"
    "  e = d -> cd: conv(64, k=3, p=1) -> relu\n"
    "  f = e -> ce: conv(64, k=1)\n"
    "  g = relu(f + d)\n"
    "  h = g -> cs: conv(64, k=3, s=2, p=1) -> relu\n"
    "  output y = h -> maxpool(3, s=2, p=1) -> global_avgpool -> flatten\n"
    "    -> fc: dense(5)\n"
    "%s"
    "  loss cross_entropy(y)\n"
    "}\n";

static const char *const planes_src[] = {
    "", "  output z = g -> flatten -> fz: dense(3)\n",
    "  output z = d -> flatten -> fz: dense(3)\n"};

enum { COUNT = 2, X = 64 * 24 * 24, Y = 5 };

static Compiled *compile_variant(int planes) {
  char src[sizeof model_src + 64];
  snprintf(src, sizeof src, model_src, planes_src[planes]);
  Compiled *c = compile(src);
  assert_int_equal(c->d.errors, 0);
  return c;
}

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

static const char *const kernels[] = {"ca", "cb", "cc",      "cd",
                                      "ce", "cs", "maxpool0"};

static void check_layouts(int planes, unsigned target) {
  Compiled *c = compile_variant(planes);
  unsigned all = LOWER_TILE | LOWER_FUSE | LOWER_FMA | target;
  Program *p = lower_passes(&c->d, c->a, c->g, COUNT, 0, all);
  plan(p);
  /* with g or d read as planes: the stream b, d, g too */
  const int want[3][7] = {
      {1, 1, 1, 1, 1, 1, 1}, {1, 0, 0, 1, 0, 1, 1}, {1, 0, 0, 1, 0, 1, 1}};
  for (int i = 0; i < 7; i++) {
    const Buffer *b = stored_by(p, kernels[i]);
    assert_non_null(b);
    if (b->hwc != want[planes][i])
      fail_msg("%s: hwc %d, expected %d", kernels[i], b->hwc, want[planes][i]);
    assert_int_equal(
        schedule_says(p, kernels[i], "y stored channels innermost"),
        want[planes][i]);
  }
  /* a reader says so where its input is kept so */
  const char *reader[] = {
      "cb", "cc", "cd", "ce", "cs", "maxpool0", "global_avgpool0"};
  const int read[3][7] = {
      {1, 1, 1, 1, 1, 1, 1}, {1, 0, 0, 1, 0, 1, 1}, {1, 0, 0, 1, 0, 1, 1}};
  for (int i = 0; i < 7; i++)
    if (schedule_says(p, reader[i], "x read channels innermost") !=
        read[planes][i])
      fail_msg("%s: reads channels innermost %d, expected %d", reader[i],
               !read[planes][i], read[planes][i]);
  for (int i = 0; i < p->kernels.n; i++)
    if (p->kernels.v[i]->schedule)
      assert_null(strstr(p->kernels.v[i]->schedule, "windows"));
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
  for (int planes = 0; planes < 3; planes++) {
    check_layouts(planes, 0);
    check_layouts(planes, LOWER_AVX512);
  }
}

/* A residual stream of many blocks: kept channels innermost throughout,
 * or, when its end or its start is read as planes, sent back to planes
 * throughout, each block's clearing reaching the next and the one
 * before. */
static void test_stream(void **state) {
  (void)state;
  static const char src[] =
      "model t_stream {\n"
      "  input x[64, 24, 24]\n"
      "  x = x -> c0: conv(64, k=3, p=1) -> relu\n"
      "  x0 = x\n"
      "  for i in 0..100 {\n"
      "    x = relu((x -> [i]: seq { conv(64, k=1) -> relu\n"
      "                               -> conv(64, k=1) }) + x)\n"
      "  }\n"
      "  output y = x -> %s -> flatten -> fc: dense(5)\n"
      "%s"
      "}\n";
  for (int planes = 0; planes < 3; planes++) {
    char text[sizeof src + 64];
    snprintf(text, sizeof text, src, planes == 1 ? "relu" : "global_avgpool",
             planes == 2 ? "  output z = x0 -> flatten -> fz: dense(3)\n" : "");
    Compiled *c = compile(text);
    assert_int_equal(c->d.errors, 0);
    Program *p = lower_passes(&c->d, c->a, c->g, COUNT, 0,
                              LOWER_TILE | LOWER_FUSE | LOWER_FMA);
    int kept = 0;
    for (int i = 0; i < p->bufs.n; i++)
      kept += p->bufs.v[i]->hwc;
    /* each block's first convolution's output, and the stream: c0's
     * output and each block's chain's */
    assert_int_equal(kept, planes ? 100 : 100 + 1 + 100);
    release(c);
  }
}

/* The forward pass through the JIT, tiled (the layouts) and plain. */
static void test_values(void **state) {
  (void)state;
  if (!jit_available()) {
    printf("  (no LLVM in this cnnc: skipped)\n");
    return;
  }
  static float x[COUNT * X], y[2][COUNT * Y];
  for (int i = 0; i < COUNT * X; i++)
    x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
  for (int planes = 0; planes < 3; planes++) {
    Compiled *c = compile_variant(planes);
    unsigned tiled = LOWER_TILE | LOWER_FUSE | LOWER_FMA;
    Program *p[2] = {lower_passes(&c->d, c->a, c->g, COUNT, 0, tiled),
                     lower_passes(&c->d, c->a, c->g, COUNT, 0, LOWER_FUSE)};
    for (int v = 0; v < 2; v++) {
      plan(p[v]);
      Jit *j = jit_compile(&c->d, p[v], 1);
      assert_non_null(j);
      JitState *s = jit_state(j);
      for (int64_t i = 0; i < p[v]->f32_count; i++)
        s->f32[i] = (float)((i * 7919) % 1001) / 4000.0f - 0.1f;
      jit_weights_changed(j);
      static float z[COUNT * 3];
      const void *ins[1] = {x};
      void *outs[2] = {y[v], z};
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
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_which),
      cmocka_unit_test(test_stream),
      cmocka_unit_test(test_values),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
