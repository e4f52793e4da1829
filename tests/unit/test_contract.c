/* Contraction (contract.c): the training step of a model with batch norm
 * (whose batch statistics are wide, double temporaries) and every kind of
 * layer that sums products. Every product that feeds a float sum is
 * fused, none that meets a double is, and without LOWER_FMA nothing is.
 * That the fused sums compute the right values is the oracle tests' job
 * (make check runs them with -fno-fma too); test_jit holds the two
 * backends to the same bits. */
#include "testutil.h"

#include "autodiff.h"
#include "contract.h"
#include "lower.h"

static const char model[] =
    "model m {\n"
    "  input x[3, 12, 12]\n"
    "  output y = x -> c1: conv(8, k=3, p=1) -> b1: bn -> relu\n"
    "    -> c2: conv(8, k=3, s=2) -> tanh -> flatten -> fc: dense(4)\n"
    "  loss cross_entropy(y)\n"
    "  train {\n    batch = 2\n    optimizer adam(lr=0.001)\n  }\n"
    "}\n";

typedef struct Count {
  int fma, wide_fma, plain; /* fused; fused with a double; a*b + c left */
} Count;

static int wide(const Kernel *k, const Expr *e) {
  if (!e)
    return 0;
  if (e->k == X_TEMP && !e->isint && k->kinds[e->var] == 3)
    return 1;
  return wide(k, e->a) || wide(k, e->b) || wide(k, e->c);
}

static void expr(const Kernel *k, const Expr *e, Count *n) {
  if (!e)
    return;
  if (e->k == X_FMA) {
    n->fma++;
    n->wide_fma += wide(k, e->a) || wide(k, e->b) || wide(k, e->c);
  }
  if ((e->k == X_ADD || e->k == X_SUB) && !e->isint &&
      ((e->a->k == X_MUL && !e->a->isint) ||
       (e->b->k == X_MUL && !e->b->isint)) &&
      !wide(k, e))
    n->plain++;
  expr(k, e->a, n);
  expr(k, e->b, n);
  expr(k, e->c, n);
}

static void stmts(const Kernel *k, const StmtVec *body, Count *n) {
  for (int i = 0; i < body->n; i++) {
    const Stmt *s = body->v[i];
    expr(k, s->index, n);
    expr(k, s->value, n);
    if (s->k == S_ACCUM && !s->buf->is_int && s->value->k == X_MUL &&
        !wide(k, s->value))
      n->plain++;
    stmts(k, &s->body, n);
  }
}

static Count count(const Program *p) {
  Count n = {0};
  const KernelVec *lists[2] = {&p->kernels, &p->update};
  for (int l = 0; l < 2; l++)
    for (int i = 0; i < lists[l]->n; i++)
      stmts(lists[l]->v[i], &lists[l]->v[i]->body, &n);
  return n;
}

static void fused_and_not(void **state) {
  for (int tile = 0; tile <= 1; tile++) {
    Compiled *c = compile_ok(model);
    autodiff(&c->d, c->g);
    unsigned passes = (tile ? LOWER_TILE : 0u) | LOWER_FUSE;
    Count on = count(lower_passes(&c->d, c->a, c->g, 2, 1, passes | LOWER_FMA));
    Count off = count(lower_passes(&c->d, c->a, c->g, 2, 1, passes));
    assert_int_equal(c->d.errors, 0);
    printf("  %s: %d fused, %d products left apart without the pass\n",
           tile ? "tiled" : "plain", on.fma, off.plain);
    assert_true(on.fma > 20);
    assert_int_equal(on.wide_fma, 0);
    assert_int_equal(on.plain, 0);
    assert_int_equal(off.fma, 0);
    assert_true(off.plain >= on.fma);
    release(c);
  }
  (void)state;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fused_and_not),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
