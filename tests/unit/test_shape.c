/* Shape rules against sizes worked out by hand from PyTorch's documented
 * formulas (and the published architectures). */
#include "testutil.h"

/* The output shape of `y` in a model with input x of the given shape. */
static Shape out_of(const char *input, const char *expr) {
  char src[1024];
  snprintf(src, sizeof src, "model m {\n  input x%s\n  output y = %s\n}\n",
           input, expr);
  Compiled *c = compile_ok(src);
  Shape s = c->g->outputs.v[0].node->shape;
  release(c);
  return s;
}

static void conv_sizes(void **state) {
  /* ResNet stem: (224 + 6 - 7) / 2 + 1 = 112 */
  ASSERT_SHAPE(out_of("[3, 224, 224]", "x -> conv(64, k=7, s=2, p=3)"), 3, 64,
               112, 112);
  /* AlexNet conv1 on 227: (227 - 11) / 4 + 1 = 55 */
  ASSERT_SHAPE(out_of("[3, 227, 227]", "x -> conv(96, k=11, s=4)"), 3, 96, 55,
               55);
  /* dilation 2: effective kernel 5, 32 - 5 + 1 = 28 */
  ASSERT_SHAPE(out_of("[1, 32, 32]", "x -> conv(1, k=3, d=2)"), 3, 1, 28, 28);
  /* (h, w) pairs: h (10 - 3 + 2)/1 + 1 = 10, w (12 - 5 + 0)/2 + 1 = 4 */
  ASSERT_SHAPE(
      out_of("[1, 10, 12]", "x -> conv(2, k=[3, 5], s=[1, 2], p=[1, 0])"), 3, 2,
      10, 4);
  /* p="same" keeps the size, even kernels included */
  ASSERT_SHAPE(out_of("[1, 9, 9]", "x -> conv(4, k=4, p=\"same\")"), 3, 4, 9,
               9);
  ASSERT_SHAPE(out_of("[1, 9, 9]", "x -> conv(4, k=3, d=3, p=\"same\")"), 3, 4,
               9, 9);
  /* floor: (28 - 5) / 2 + 1 = 12 */
  ASSERT_SHAPE(out_of("[1, 28, 28]", "x -> conv(1, k=5, s=2)"), 3, 1, 12, 12);
}

static void conv_params(void **state) {
  Compiled *c = compile_ok("model m {\n  input x[32, 8, 8]\n"
                           "  output y = x -> g: conv(64, k=3, groups=4)\n}\n");
  ASSERT_SHAPE(param_named(c->g, "g.weight")->shape, 4, 64, 8, 3);
  assert_int_equal(param_named(c->g, "g.weight")->shape.d[3], 3);
  ASSERT_SHAPE(param_named(c->g, "g.bias")->shape, 1, 64, 0, 0);
  release(c);
  compile_fails(
      "model m { input x[30, 8, 8]\n output y = x -> conv(64, k=3, groups=4) }",
      "groups=4 must divide");
  compile_fails("model m { input x[3, 8, 8]\n output y = x -> conv(4, k=3, "
                "s=2, p=\"same\") }",
                "p=\"same\" needs stride 1");
  compile_fails("model m { input x[3, 4, 4]\n output y = x -> conv(4, k=5) }",
                "larger than the padded input");
}

static void deconv_sizes(void **state) {
  /* U-Net up-convolution: (28 - 1) * 2 + 2 = 56 */
  ASSERT_SHAPE(out_of("[1024, 28, 28]", "x -> deconv(512, k=2, s=2)"), 3, 512,
               56, 56);
  /* (7 - 1) * 2 - 2 * 1 + 1 * (3 - 1) + 1 + 1 = 14 */
  ASSERT_SHAPE(
      out_of("[8, 7, 7]", "x -> deconv(4, k=3, s=2, p=1, output_padding=1)"), 3,
      4, 14, 14);
  Compiled *c =
      compile_ok("model m {\n  input x[8, 7, 7]\n"
                 "  output y = x -> up: deconv(4, k=3, groups=2)\n}\n");
  ASSERT_SHAPE(param_named(c->g, "up.weight")->shape, 4, 8, 2, 3);
  release(c);
  compile_fails("model m { input x[8, 7, 7]\n output y = x -> deconv(4, k=3, "
                "s=2, output_padding=2) }",
                "output_padding 2 must be smaller");
}

static void pool_sizes(void **state) {
  /* GoogLeNet's maxpool(3, 2, ceil): ceil((112 - 3) / 2) + 1 = 56 */
  ASSERT_SHAPE(out_of("[64, 112, 112]", "x -> maxpool(3, s=2, ceil=true)"), 3,
               64, 56, 56);
  /* floor mode: (112 - 3) / 2 + 1 = 55 */
  ASSERT_SHAPE(out_of("[64, 112, 112]", "x -> maxpool(3, s=2)"), 3, 64, 55, 55);
  /* ceil mode never starts a window in the right padding:
   * 5 + 2*1 - 2 = 5 -> ceil(5/2) + 1 = 4, but window 3 would start at
   * 6 >= 5 + 1, so 3 */
  ASSERT_SHAPE(out_of("[1, 5, 5]", "x -> avgpool(2, s=2, p=1, ceil=true)"), 3,
               1, 3, 3);
  ASSERT_SHAPE(out_of("[1, 6, 6]", "x -> avgpool(2)"), 3, 1, 3, 3);
  ASSERT_SHAPE(out_of("[5, 13, 13]", "x -> adaptive_avgpool(6)"), 3, 5, 6, 6);
  ASSERT_SHAPE(out_of("[5, 13, 13]", "x -> adaptive_avgpool([2, 3])"), 3, 5, 2,
               3);
  ASSERT_SHAPE(out_of("[5, 13, 13]", "x -> global_avgpool"), 3, 5, 1, 1);
  compile_fails(
      "model m { input x[1, 8, 8]\n output y = x -> maxpool(2, p=2) }",
      "more than half the kernel");
}

static void joins(void **state) {
  ASSERT_SHAPE(out_of("[4, 8, 8]", "concat(x, x -> conv(6, k=1), x)"), 3, 14, 8,
               8);
  ASSERT_SHAPE(out_of("[4, 8, 8]", "x + x -> relu"), 3, 4, 8, 8);
  ASSERT_SHAPE(out_of("[4, 10, 12]", "crop(x, x -> conv(1, k=3))"), 3, 4, 8,
               10);
  ASSERT_SHAPE(out_of("[4, 5, 6]", "x -> upsample(scale=3)"), 3, 4, 15, 18);
  compile_fails(
      "model m { input x[4, 8, 8]\n output y = concat(x, x -> maxpool(2)) }",
      "height and width must match");
  compile_fails(
      "model m { input x[4, 8, 8]\n output y = x + (x -> conv(5, k=1)) }",
      "cannot add [4, 8, 8] and [5, 8, 8]");
  compile_fails(
      "model m { input x[4, 8, 8]\n output y = crop(x -> maxpool(2), x) }",
      "cannot crop [4, 4, 4]");
}

static void flat_layers(void **state) {
  ASSERT_SHAPE(out_of("[16, 5, 5]", "x -> flatten -> dense(120)"), 1, 120, 0,
               0);
  Compiled *c =
      compile_ok("model m {\n  input x[16, 5, 5]\n"
                 "  output y = x -> flatten -> f: dense(120, bias=false)\n}\n");
  ASSERT_SHAPE(param_named(c->g, "f.weight")->shape, 2, 120, 400, 0);
  assert_null(param_named(c->g, "f.bias"));
  release(c);
  compile_fails("model m { input x[16, 5, 5]\n output y = x -> dense(10) }",
                "write 'flatten' first");
  compile_fails("model m { input x[16]\n output y = x -> conv(4, k=1) }",
                "needs a [C, H, W] input");
}

static void norms(void **state) {
  Compiled *c =
      compile_ok("model m {\n  input x[6, 4, 5]\n"
                 "  output y = x -> b: bn -> l: layernorm -> i: instancenorm\n"
                 "    -> g: groupnorm(3) -> lrn -> dropout(0.2)\n}\n");
  ASSERT_SHAPE(param_named(c->g, "b.running_var")->shape, 1, 6, 0, 0);
  assert_int_equal(param_named(c->g, "b.num_batches_tracked")->shape.rank, 0);
  assert_int_equal(param_named(c->g, "b.num_batches_tracked")->dtype, DT_I64);
  assert_int_equal(param_named(c->g, "b.running_mean")->kind, PK_BUFFER);
  ASSERT_SHAPE(param_named(c->g, "l.weight")->shape, 3, 6, 4, 5);
  ASSERT_SHAPE(param_named(c->g, "i.bias")->shape, 1, 6, 0, 0);
  assert_null(param_named(c->g, "i.running_mean"));
  ASSERT_SHAPE(param_named(c->g, "g.weight")->shape, 1, 6, 0, 0);
  release(c);
  compile_fails("model m { input x[6, 4, 4]\n output y = x -> groupnorm(4) }",
                "4 groups do not divide 6 channels");
}

static void losses(void **state) {
  Compiled *c = compile_ok("model m {\n  input x[3, 8, 8]\n"
                           "  output y = x -> conv(5, k=1)\n"
                           "  loss cross_entropy(y)\n}\n");
  const Node *labels = c->g->inputs.v[1];
  ASSERT_SHAPE(labels->shape, 2, 8, 8, 0);
  assert_int_equal(c->g->loss->shape.rank, 0);
  release(c);
  compile_fails("model m { input x[3]\n input t[4]\n output y = x -> dense(3)\n"
                " loss mse(y, t) }",
                "cannot compare [3] and [4]");
}

/* A stride that leaves real input rows unread is a warning, and an error
 * under -Werror. */
static void unread_rows_warning(void **state) {
  Compiled *c = compile("model m {\n  input x[1, 10, 10]\n"
                        "  output y = x -> conv(1, k=3, s=2)\n}\n");
  assert_int_equal(c->d.errors, 0);
  assert_int_equal(c->d.warnings, 2); /* rows and columns */
  assert_non_null(strstr(c->msgs, "never reads the last 1 input row of 10"));
  release(c);
  c = compile("model m {\n  input x[1, 11, 11]\n"
              "  output y = x -> conv(1, k=3, s=2) -> conv(1, k=1, s=2)\n}\n");
  assert_int_equal(c->d.warnings, 0); /* 11 divides; k < s skips by design */
  release(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(conv_sizes),
      cmocka_unit_test(conv_params),
      cmocka_unit_test(deconv_sizes),
      cmocka_unit_test(pool_sizes),
      cmocka_unit_test(joins),
      cmocka_unit_test(flat_layers),
      cmocka_unit_test(norms),
      cmocka_unit_test(losses),
      cmocka_unit_test(unread_rows_warning),
  };
  return cmocka_run_group_tests_name("shape", tests, NULL, NULL);
}
