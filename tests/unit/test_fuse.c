/* The fusion pass (compiler/fuse.c): which nodes it puts in one chain,
 * and the values it must leave stored because something else reads them:
 * a second consumer, an output, a backward node in training, or an add
 * another chain already took. */
#include "testutil.h"

#include "autodiff.h"
#include "fuse.h"

static Chain **chains(Compiled *c, int train) {
  int *needed = calloc((size_t)c->g->nodes.n + 1, sizeof *needed);
  for (int i = 0; i < c->g->nodes.n; i++)
    needed[i] = 1;
  Chain **ch = fuse(c->a, c->g, needed, train);
  free(needed);
  return ch;
}

/* The chain node name is in, as its kernel's "what", or "-" alone. */
static const char *chain_of(Compiled *c, Chain **ch, const char *name) {
  const Node *n = node_named(c->g, name);
  assert_non_null(n);
  return ch[n->id] ? ch[n->id]->what : "-";
}

static const char *head_of(Compiled *c, Chain **ch, const char *name) {
  const Node *n = node_named(c->g, name);
  return ch[n->id] ? ch[n->id]->head->name : "-";
}

static void test_eval_chains(void **state) {
  (void)state;
  Compiled *c =
      compile_ok("model m {\n"
                 "  input x[3, 8, 8]\n"
                 "  a = x -> c1: conv(4, k=3, p=1) -> b1: bn -> r1: relu\n"
                 "  b = a -> c2: conv(4, k=3, p=1) -> b2: bn\n"
                 "  s = (b + a) -> r2: relu\n"
                 "  t = s -> c3: conv(4, k=1)\n"
                 "  output y1 = (t -> r3: relu) + t\n"
                 "  output y2 = s -> b3: bn -> r4: tanh\n"
                 "  u = s -> f: flatten -> d1: dense(6) -> b4: bn\n"
                 "  output y3 = u\n"
                 "  output y4 = u -> r5: sigmoid\n"
                 "}\n");
  Chain **ch = chains(c, 0);
  assert_string_equal(chain_of(c, ch, "b1"), "conv+bn+relu");
  assert_string_equal(chain_of(c, ch, "r1"), "conv+bn+relu");
  assert_string_equal(head_of(c, ch, "r1"), "c1");
  /* a is read by c2 and by the add: c1's chain stops at its relu */
  assert_string_equal(chain_of(c, ch, "c2"), "conv+bn+add+relu");
  assert_string_equal(chain_of(c, ch, "r2"), "conv+bn+add+relu");
  /* t is read twice: c3 alone, its relu alone, the add alone */
  assert_string_equal(chain_of(c, ch, "c3"), "-");
  assert_string_equal(chain_of(c, ch, "r3"), "-");
  assert_string_equal(chain_of(c, ch, "b3"), "bn+tanh");
  /* u is an output as well as the sigmoid's input */
  assert_string_equal(chain_of(c, ch, "d1"), "dense+bn");
  assert_string_equal(chain_of(c, ch, "b4"), "dense+bn");
  assert_string_equal(chain_of(c, ch, "r5"), "-");
  const Node *r2 = node_named(c->g, "r2");
  assert_string_equal(ch[r2->id]->residual->name, "r1");
  assert_ptr_equal(ch[r2->id]->last, r2);
  release(c);
}

/* An add both of whose inputs end a candidate chain joins the first. */
static void test_add_taken_once(void **state) {
  (void)state;
  Compiled *c = compile_ok("model m {\n"
                           "  input x[3, 8, 8]\n"
                           "  a = x -> c1: conv(4, k=1) -> b1: bn\n"
                           "  b = x -> c2: conv(4, k=1) -> b2: bn\n"
                           "  output y = (a + b) -> r: relu\n"
                           "}\n");
  Chain **ch = chains(c, 0);
  assert_string_equal(chain_of(c, ch, "c1"), "conv+bn+add+relu");
  assert_string_equal(chain_of(c, ch, "c2"), "conv+bn");
  assert_string_equal(head_of(c, ch, "r"), "c1");
  release(c);
}

/* In training a batch norm uses batch statistics and its gradient reads
 * its input, so a convolution before it keeps its output; the batch
 * norm heads a chain instead. leaky_relu's gradient reads its input;
 * relu's, tanh's and sigmoid's read their output. In the backward pass,
 * an activation's gradient joins the gradient that feeds it. */
static void test_train_chains(void **state) {
  (void)state;
  Compiled *c =
      compile_ok("model m {\n"
                 "  input x[3, 8, 8]\n"
                 "  a = x -> c1: conv(4, k=3, p=1) -> b1: bn -> r1: relu\n"
                 "  b = a -> c2: conv(4, k=3, p=1) -> r2: tanh\n"
                 "  d = b -> c3: conv(4, k=1) -> r3: leaky_relu\n"
                 "  output y = d -> f: flatten -> d1: dense(3)\n"
                 "  loss cross_entropy(y)\n"
                 "}\n");
  autodiff(&c->d, c->g);
  assert_int_equal(c->d.errors, 0);
  Chain **ch = chains(c, 1);
  assert_string_equal(chain_of(c, ch, "c1"), "-");
  assert_string_equal(chain_of(c, ch, "b1"), "bn+relu");
  assert_string_equal(chain_of(c, ch, "c2"), "conv+tanh");
  assert_string_equal(chain_of(c, ch, "c3"), "-");
  assert_string_equal(chain_of(c, ch, "r3"), "-");
  /* backward: a gradient times the derivative of the activation before */
  assert_string_equal(chain_of(c, ch, "c3.dx"), "conv_dx+act_dx");
  assert_string_equal(chain_of(c, ch, "r2.dx"), "conv_dx+act_dx");
  assert_string_equal(head_of(c, ch, "r1.dx"), "c2.dx");
  const Node *r2dx = node_named(c->g, "r2.dx");
  assert_string_equal(ch[r2dx->id]->value->name, "r2");
  /* d1.dx reaches r3.dx through flatten's gradient: alone */
  assert_string_equal(chain_of(c, ch, "d1.dx"), "-");
  assert_string_equal(chain_of(c, ch, "r3.dx"), "-");
  release(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_eval_chains),
      cmocka_unit_test(test_add_taken_once),
      cmocka_unit_test(test_train_chains),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
