/* Contraction into fused multiply-adds, as a pass on the loop IR.
 *
 * a * b + c, c + a * b, a * b - c, c - a * b and buf[i] += a * b become
 * X_FMA nodes, which both backends compute with one rounding: the C
 * backend's madd() (fmaf where the target has the instruction), the
 * LLVM backend's llvm.fma on a processor that has it. Deciding it here,
 * once, keeps the two backends computing the same bits: left to the C
 * compiler (-ffp-contract=fast), which products fuse would depend on its
 * version and flags.
 *
 * Why: a convolution's multiply-add as two instructions needs a register
 * for each product, and gcc's tiles then spill; fused, ResNet-18's 3x3
 * layers ran 10-25% faster. The results change within float rounding
 * (each fused pair rounds once instead of twice), as PyTorch's own
 * kernels, which fuse, differ from a plain sum.
 *
 * Only float arithmetic fuses: an expression that involves a wide
 * (double) temporary is evaluated in double, and stays as it is. */
#include "contract.h"

/* 0 integer, 1 float, 2 double: the type C's usual arithmetic
 * conversions give e (emit_llvm.c follows the same rules). */
static int rank(const Kernel *k, const Expr *e) {
  if (e->isint)
    return 0;
  switch (e->k) {
  case X_TEMP: return k->kinds[e->var] == 3 ? 2 : 1;
  case X_ADD:
  case X_SUB:
  case X_MUL:
  case X_DIV:
  case X_NEG: {
    int a = rank(k, e->a), b = e->b ? rank(k, e->b) : 0;
    return a > b ? (a ? a : 1) : (b ? b : 1);
  }
  case X_SELECT: {
    int a = rank(k, e->b), b = rank(k, e->c);
    return a > b ? a : b;
  }
  default: return 1; /* loads, constants, libm calls, max, min, ... */
  }
}

static int single(const Kernel *k, const Expr *e) { return rank(k, e) <= 1; }

static Expr *rewrite(Program *p, const Kernel *k, Expr *e) {
  if (!e || e->isint)
    return e;
  Expr *a = rewrite(p, k, e->a), *b = rewrite(p, k, e->b),
       *c = rewrite(p, k, e->c);
  if (a != e->a || b != e->b || c != e->c) {
    Expr *n = x_copy(p, e);
    n->a = a;
    n->b = b;
    n->c = c;
    e = n;
  }
  if ((e->k != X_ADD && e->k != X_SUB) || rank(k, e) != 1)
    return e;
  int left = a->k == X_MUL && !a->isint && single(k, a->a) && single(k, a->b) &&
             single(k, b);
  int right = b->k == X_MUL && !b->isint && single(k, b->a) &&
              single(k, b->b) && single(k, a);
  if (left) /* a0 * a1 + b, a0 * a1 - b */
    return x_fma(p, a->a, a->b, e->k == X_ADD ? b : x_un(p, X_NEG, b));
  if (right) /* a + b0 * b1, a - b0 * b1 */
    return x_fma(p, e->k == X_ADD ? b->a : x_un(p, X_NEG, b->a), b->b, a);
  return e;
}

static void stmts(Program *p, const Kernel *k, StmtVec *body) {
  for (int i = 0; i < body->n; i++) {
    Stmt *s = body->v[i];
    s->index = rewrite(p, k, s->index);
    s->value = rewrite(p, k, s->value);
    Expr *v = s->value;
    /* buf[i] += a * b is buf[i] = fma(a, b, buf[i]) */
    if (s->k == S_ACCUM && !s->buf->is_int && v->k == X_MUL && !v->isint &&
        single(k, v->a) && single(k, v->b)) {
      s->k = S_STORE;
      s->value = x_fma(p, v->a, v->b, x_load(p, s->buf, s->index));
    }
    stmts(p, k, &s->body);
  }
}

void contract(Program *p) {
  KernelVec *lists[2] = {&p->kernels, &p->update};
  for (int l = 0; l < 2; l++)
    for (int i = 0; i < lists[l]->n; i++)
      stmts(p, lists[l]->v[i], &lists[l]->v[i]->body);
}
