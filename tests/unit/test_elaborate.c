/* Elaboration: blocks, arguments, loops, conditions, labels and the
 * parameter names they make, freezing and the train section. */
#include "testutil.h"

static const char resnet_block[] =
    "block basic(x, c, s=1) {\n"
    "  y = x -> conv1: conv(c, k=3, s=s, p=1, bias=false) -> bn1: bn -> relu\n"
    "        -> conv2: conv(c, k=3, p=1, bias=false) -> bn2: bn\n"
    "  short = x\n"
    "  if s != 1 or channels(x) != c {\n"
    "    short = x -> downsample: seq { conv(c, k=1, s=s, bias=false) -> bn }\n"
    "  }\n"
    "  return relu(y + short)\n"
    "}\n"
    "block stage(x, c, n, s) {\n"
    "  x = x -> [0]: basic(c, s)\n"
    "  for i in 1..n { x = x -> [i]: basic(c) }\n"
    "  return x\n"
    "}\n";

/* The spec's naming: labelled block calls open scopes, seq numbers its
 * stages, [i] labels index repetitions. */
static void pytorch_names(void **state) {
  char src[2048];
  snprintf(src, sizeof src,
           "%smodel m {\n  input x[64, 56, 56]\n"
           "  output y = x -> layer1: stage(64, 2, 1) -> layer2: stage(128, 2, "
           "2)\n}\n",
           resnet_block);
  Compiled *c = compile_ok(src);
  const Param *p = param_named(c->g, "layer1.0.conv1.weight");
  assert_non_null(p);
  ASSERT_SHAPE(p->shape, 4, 64, 64, 3);
  assert_int_equal(p->shape.d[3], 3);
  assert_non_null(param_named(c->g, "layer1.1.bn2.running_var"));
  assert_null(param_named(c->g, "layer1.0.downsample.0.weight"));
  p = param_named(c->g, "layer2.0.downsample.0.weight");
  assert_non_null(p);
  ASSERT_SHAPE(p->shape, 4, 128, 64, 1);
  assert_non_null(
      param_named(c->g, "layer2.0.downsample.1.num_batches_tracked"));
  assert_null(param_named(c->g, "layer2.0.conv1.bias"));
  ASSERT_SHAPE(c->g->outputs.v[0].node->shape, 3, 128, 28, 28);
  release(c);
}

/* seq counts every stage, parameterless ones and labelled ones too. */
static void seq_numbering(void **state) {
  Compiled *c = compile_ok(
      "model m {\n  input x[512]\n"
      "  output y = x -> classifier: seq { dense(10) -> relu -> dropout\n"
      "      -> named: dense(5) -> dense(3) }\n}\n");
  assert_non_null(param_named(c->g, "classifier.0.weight"));
  assert_non_null(param_named(c->g, "classifier.named.bias"));
  assert_non_null(param_named(c->g, "classifier.4.weight"));
  assert_non_null(node_named(c->g, "classifier.1"));
  release(c);
}

/* Unlabelled operators outside a seq are <op><n>, counted per scope. */
static void automatic_names(void **state) {
  Compiled *c = compile_ok("block b(x) { return x -> conv(4, k=1) -> relu }\n"
                           "model m {\n  input x[3, 8, 8]\n"
                           "  y = x -> conv(4, k=1) -> relu -> conv(4, k=1)\n"
                           "  output z = y -> blk: b -> b\n}\n");
  assert_non_null(param_named(c->g, "conv0.weight"));
  assert_non_null(param_named(c->g, "conv1.weight"));
  assert_non_null(param_named(c->g, "blk.conv0.weight"));
  assert_non_null(param_named(c->g, "conv2.weight")); /* unlabelled call */
  assert_non_null(node_named(c->g, "relu0"));
  release(c);
}

static void string_labels(void **state) {
  Compiled *c = compile_ok(
      "model m {\n  input x[4, 8, 8]\n"
      "  for i in 0..3 { x = x -> \"denselayer{i + 1}\": seq { bn -> relu } }\n"
      "  names = [\"a\", \"b\"]\n"
      "  for n in names { x = x -> [n]: conv(4, k=1) }\n"
      "  output y = x\n}\n");
  assert_non_null(param_named(c->g, "denselayer3.0.weight"));
  assert_null(param_named(c->g, "denselayer4.0.weight"));
  assert_non_null(param_named(c->g, "a.weight"));
  assert_non_null(param_named(c->g, "b.bias"));
  release(c);
}

static void arguments(void **state) {
  Compiled *c = compile_ok(
      "block f(x, c, k=3, p=k // 2) { return x -> conv(c, k=k, p=p) }\n"
      "model m {\n  input x[3, 10, 10]\n"
      "  a = x -> f(8)\n  b = f(x, 8, p=0, k=5)\n"
      "  output y = a\n  output z = b\n}\n");
  ASSERT_SHAPE(c->g->outputs.v[0].node->shape, 3, 8, 10, 10);
  ASSERT_SHAPE(c->g->outputs.v[1].node->shape, 3, 8, 6, 6);
  release(c);
  compile_fails("block f(x, c) { return x }\nmodel m { input x[1]\n"
                "output y = x -> f(1, 2) }\n",
                "too many arguments to block 'f'");
  compile_fails("block f(x, c) { return x }\nmodel m { input x[1]\n"
                "output y = x -> f(d=2) }\n",
                "block 'f' has no parameter 'd'");
  compile_fails("block f(x, c) { return x }\nmodel m { input x[1]\n"
                "output y = x -> f() }\n",
                "block 'f' needs argument 'c'");
  compile_fails("model m { input x[1]\noutput y = x -> dense(4, bias=1) }\n",
                "argument 'bias' of 'dense' must be true or false");
}

static void values(void **state) {
  Compiled *c =
      compile_ok("model m {\n  input x[3, 10, 12]\n"
                 "  c = channels(x) * 2 + height(x) // 3 - width(x) % 5\n"
                 "  if c == 7 and not (c < 0) { x = x -> conv(c, k=1) }\n"
                 "  else { x = x -> conv(1, k=1) }\n"
                 "  n = len([1, 2, 3])\n"
                 "  for i in 0..n { x = x -> relu }\n"
                 "  output y = x\n}\n");
  /* 3*2 + 10//3 - 12%5 = 6 + 3 - 2 = 7 */
  ASSERT_SHAPE(c->g->outputs.v[0].node->shape, 3, 7, 10, 12);
  assert_non_null(node_named(c->g, "relu2"));
  release(c);
  compile_fails("model m { input x[1]\n a = 7 / 2\n output y = x }",
                "7 / 2 is not an integer");
  compile_fails("model m { input x[1]\n a = -7 // 0\n output y = x }",
                "division by zero");
  compile_fails("model m { input x[1]\n if 1 { a = 2 }\n output y = x }",
                "'if' needs a boolean");
  compile_fails("model m { input x[1]\n output y = x -> relu -> dens(3) }",
                "did you mean 'dense'");
  compile_fails("model m { input image[1]\n output y = imagee }",
                "did you mean 'image'");
}

static void floor_semantics(void **state) {
  Compiled *c = compile_ok("model m {\n  input x[1]\n"
                           "  a = -7 // 2\n  b = -7 % 2\n"
                           "  output y = x -> dense(a + 10 + b)\n}\n");
  /* Python: -7 // 2 == -4, -7 % 2 == 1, so 7 outputs */
  ASSERT_SHAPE(c->g->outputs.v[0].node->shape, 1, 7, 0, 0);
  release(c);
}

static void recursion(void **state) {
  compile_fails("block a(x) { return x -> b }\nblock b(x) { return x -> a }\n"
                "model m { input x[1]\n output y = x -> a }",
                "calls itself");
}

static void duplicates(void **state) {
  compile_fails("model m { input x[3, 8, 8]\n"
                "for i in 0..2 { x = x -> c: conv(3, k=1) }\noutput y = x }",
                "redefinition of parameter 'c.weight'");
}

static void freezing(void **state) {
  Compiled *c =
      compile_ok("model m {\n  input x[3, 8, 8]\n"
                 "  output y = x -> body: seq { conv(4, k=3) -> bn }\n"
                 "    -> flatten -> head: dense(2)\n"
                 "  freeze body\n}\n");
  assert_true(param_named(c->g, "body.0.weight")->frozen);
  assert_true(param_named(c->g, "body.1.running_mean")->frozen);
  assert_false(param_named(c->g, "head.weight")->frozen);
  assert_true(node_named(c->g, "body.1")->frozen);
  release(c);
  compile_fails("model m { input x[3]\n output y = x -> h: dense(2)\n"
                " freeze body }",
                "freeze 'body' matches no parameter");
}

static void train_section(void **state) {
  Compiled *c = compile_ok(
      "model m {\n  input x[4]\n  output y = x -> dense(3)\n"
      "  loss cross_entropy(y)\n"
      "  train {\n    batch = 32\n    epochs = 3\n    seed = 7\n"
      "    optimizer sgd(lr=0.1, momentum=0.9, nesterov=true, "
      "weight_decay=1e-4)\n"
      "    schedule step(every=2, gamma=0.5)\n    init he\n  }\n}\n");
  const TrainCfg *t = &c->g->train;
  assert_int_equal(t->batch, 32);
  assert_int_equal(t->epochs, 3);
  assert_int_equal(t->seed, 7);
  assert_int_equal(t->opt, OPT_SGD);
  assert_true(t->lr == 0.1 && t->momentum == 0.9 && t->nesterov);
  assert_true(t->weight_decay == 1e-4);
  assert_int_equal(t->sched, SCHED_STEP);
  assert_int_equal(t->every, 2);
  assert_true(t->gamma == 0.5);
  assert_int_equal(t->init, INIT_HE);
  /* cross_entropy adds the integer labels input */
  assert_int_equal(c->g->inputs.n, 2);
  assert_string_equal(c->g->inputs.v[1]->name, "labels");
  assert_int_equal(c->g->inputs.v[1]->dtype, DT_I64);
  assert_int_equal(c->g->inputs.v[1]->shape.rank, 0);
  release(c);
  compile_fails("model m { input x[4]\n output y = x\n"
                " train { optimizer sgd(lr=0.1, nesterov=true) } }",
                "nesterov needs a momentum above 0");
  compile_fails("model m { input x[4]\n output y = x\n"
                " train { optimiser adam() } }",
                "unknown training setting 'optimiser'");
  compile_fails(
      "model m { input x[4]\n output y = x\n train { optimizer rmsprop } }",
      "unknown optimizer 'rmsprop'");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(pytorch_names),   cmocka_unit_test(seq_numbering),
      cmocka_unit_test(automatic_names), cmocka_unit_test(string_labels),
      cmocka_unit_test(arguments),       cmocka_unit_test(values),
      cmocka_unit_test(floor_semantics), cmocka_unit_test(recursion),
      cmocka_unit_test(duplicates),      cmocka_unit_test(freezing),
      cmocka_unit_test(train_section),
  };
  return cmocka_run_group_tests_name("elaborate", tests, NULL, NULL);
}
