/* Lowering of training: the forward operators whose training mode differs
 * (batch norm with batch statistics, dropout), the losses, and the
 * operators autodiff makes. PyTorch's definitions are the reference; each
 * gradient is the derivative of the forward computation in lower.c.
 *
 * Reductions over the batch (weight gradients, batch statistics) run over
 * the caller's count, so the code is right for any count up to the batch. */
#include <math.h>
#include <string.h>

#include "lower_impl.h"
#include "ops.h"
#include "schedule.h"

static Expr *T(Lower *L, int temp) { return x_temp(L->p, temp); }
static Expr *IT(Lower *L, int temp) { return x_itemp(L->p, temp); }
static Expr *fdiv(Lower *L, Expr *a, Expr *b) {
  return x_bin(L->p, X_DIV, a, b);
}
static Expr *tofloat(Lower *L, Expr *a) { return x_un(L->p, X_TOFLOAT, a); }
static Expr *lt(Lower *L, Expr *a, Expr *b) { return x_bin(L->p, X_LT, a, b); }

/* count × k as a float: the number of values a batch reduction sums. */
static Expr *batch_count(Lower *L, int64_t k) {
  return tofloat(L, mul(L, x_n(L->p), I(L, k)));
}

static Buffer *role(const Node *owner, Buffer **ps, const char *r) {
  for (int i = 0; i < owner->params.n; i++)
    if (strcmp(owner->params.v[i]->role, r) == 0)
      return ps[i];
  return NULL;
}

/* (n, c, i) of a tensor seen as [C, P]. */
static Expr *ncp(Lower *L, Expr *n, Expr *c, Expr *i, int64_t C, int64_t P) {
  return add(L, mul(L, add(L, mul(L, n, I(L, C)), c), I(L, P)), i);
}

/* The loop over channels of a per-channel pass (batch norm, a bias's
 * gradient): each channel's sums and elements are its own, so threads
 * may share the channels out (the work: a few passes over the values). */
static int channel_loop(Lower *L, int64_t C, int64_t P) {
  if (schedule_parallel(4 * C * P, L->p->batch, C, 0) == PAR_BLOCKS)
    return lb_parallel_for(&L->b, "c", C);
  return lb_for(&L->b, "c", C);
}

static void zero(Lower *L, Buffer *y, const Node *nd) {
  LoopBuilder *b = &L->b;
  if (nd->whole) {
    int i = lb_for(b, "i", shape_numel(nd->shape));
    lb_store(b, y, V(L, i), F(L, 0));
    close(L, 1);
    return;
  }
  int n = lb_for(b, "n", -1);
  int i = lb_for(b, "i", shape_numel(nd->shape));
  lb_store(b, y, flat(L, V(L, n), V(L, i), nd->shape), F(L, 0));
  close(L, 2);
}

/* --- batch statistics ---------------------------------------------------- */

/* Sums over channel c's samples and positions, each in WIDE_CHAINS double
 * temps (positions k, k + WIDE_CHAINS, ... in chain k) added up pairwise
 * at the end: one chain of dependent double adds per sum made ResNet-18's
 * first batch norm's gradient (6.4 M values at batch 8) take 24 ms. The
 * order of summation differs from one chain's by double rounding;
 * -fno-tile keeps one chain. terms() builds the nsums terms of element
 * at; out gets the temps holding the sums. */
enum { WIDE_CHAINS = 8, MAX_SUMS = 2 };
typedef void (*SumTerms)(Lower *L, const void *ctx, Expr *at, Expr **terms);

static void wide_sums(Lower *L, int c, int64_t C, int64_t P, int nsums,
                      const char *const *names, SumTerms terms, const void *ctx,
                      int *out) {
  LoopBuilder *b = &L->b;
  int64_t W = L->p->tile && P >= WIDE_CHAINS ? WIDE_CHAINS : 1;
  int64_t runs = P / W, rest = P % W;
  int part[MAX_SUMS][WIDE_CHAINS];
  Expr *t[MAX_SUMS];
  for (int s = 0; s < nsums; s++)
    for (int64_t k = 0; k < W; k++)
      part[s][k] = lb_let_wide(b, names[s], F(L, 0));
  int n = lb_for(b, "n", -1);
  int r = lb_for(b, "r", runs);
  for (int64_t k = 0; k < W; k++) {
    Expr *i = add(L, mul(L, V(L, r), I(L, W)), I(L, k));
    terms(L, ctx, ncp(L, V(L, n), V(L, c), i, C, P), t);
    for (int s = 0; s < nsums; s++)
      lb_set(b, part[s][k], add(L, T(L, part[s][k]), t[s]));
  }
  close(L, 1);
  if (rest) {
    int j = lb_for(b, "j", rest);
    terms(L, ctx,
          ncp(L, V(L, n), V(L, c), add(L, I(L, runs * W), V(L, j)), C, P), t);
    for (int s = 0; s < nsums; s++)
      lb_set(b, part[s][0], add(L, T(L, part[s][0]), t[s]));
    close(L, 1);
  }
  close(L, 1);
  for (int s = 0; s < nsums; s++) {
    for (int64_t h = W / 2; h >= 1; h /= 2)
      for (int64_t k = 0; k < h; k++)
        lb_set(b, part[s][k], add(L, T(L, part[s][k]), T(L, part[s][k + h])));
    out[s] = part[s][0];
  }
}

typedef struct StatCtx {
  Buffer *x;
  int mean; /* -1: the sum; else the sum of squares about it */
} StatCtx;

static void stat_terms(Lower *L, const void *ctx, Expr *at, Expr **terms) {
  const StatCtx *s = ctx;
  if (s->mean < 0) {
    terms[0] = load(L, s->x, at);
    return;
  }
  int dv = lb_let_wide(&L->b, "d", sub(L, load(L, s->x, at), T(L, s->mean)));
  terms[0] = mul(L, T(L, dv), T(L, dv));
}

/* Mean and 1/sqrt(var + eps) of channel c over the batch (training mode),
 * or from the running statistics (frozen layers). */
static void bn_stats(Lower *L, Buffer *x, Buffer **ps, int c, int64_t C,
                     int64_t P, int frozen, int *mean, int *inv) {
  const Node *of = L->node->of ? L->node->of : L->node;
  double eps = of->at.eps;
  LoopBuilder *b = &L->b;
  if (frozen) {
    *mean = lb_let(b, "mean", load(L, role(of, ps, "running_mean"), V(L, c)));
    *inv =
        lb_let(b, "inv",
               fdiv(L, F(L, 1),
                    x_un(L->p, X_SQRT,
                         add(L, load(L, role(of, ps, "running_var"), V(L, c)),
                             F(L, eps)))));
    return;
  }
  static const char *const sum_name[] = {"sum"}, *const sq_name[] = {"sq"};
  StatCtx ctx = {x, -1};
  int sum, sq;
  wide_sums(L, c, C, P, 1, sum_name, stat_terms, &ctx, &sum);
  *mean = lb_let_wide(b, "mean", fdiv(L, T(L, sum), batch_count(L, P)));
  ctx.mean = *mean;
  wide_sums(L, c, C, P, 1, sq_name, stat_terms, &ctx, &sq);
  int var = lb_let_wide(b, "var", fdiv(L, T(L, sq), batch_count(L, P)));
  *inv = lb_let(
      b, "inv",
      fdiv(L, F(L, 1), x_un(L->p, X_SQRT, add(L, T(L, var), F(L, eps)))));
  if (L->node->op == OP_BN) {
    /* running statistics: the unbiased variance, as nn.BatchNorm2d */
    double m = of->at.momentum;
    Buffer *rm = role(of, ps, "running_mean"),
           *rv = role(of, ps, "running_var");
    Expr *np = batch_count(L, P);
    Expr *unbiased =
        x_select(L->p, lt(L, F(L, 1), np),
                 fdiv(L, T(L, sq), sub(L, np, F(L, 1))), T(L, var));
    lb_store(b, rm, V(L, c),
             add(L, mul(L, F(L, 1 - m), load(L, rm, V(L, c))),
                 mul(L, F(L, m), T(L, *mean))));
    lb_store(b, rv, V(L, c),
             add(L, mul(L, F(L, 1 - m), load(L, rv, V(L, c))),
                 mul(L, F(L, m), unbiased)));
  }
}

static void bn_train(Lower *L, Buffer *y, Buffer *x, Buffer **ps) {
  const Node *nd = L->node;
  Shape s = nd->shape;
  int64_t C = s.d[0], P = shape_numel(s) / C;
  LoopBuilder *b = &L->b;
  int c = channel_loop(L, C, P);
  int mean, inv;
  bn_stats(L, x, ps, c, C, P, 0, &mean, &inv);
  int sc = lb_let(b, "scale",
                  mul(L, load(L, role(nd, ps, "weight"), V(L, c)), T(L, inv)));
  int sh = lb_let(b, "shift",
                  sub(L, load(L, role(nd, ps, "bias"), V(L, c)),
                      mul(L, T(L, mean), T(L, sc))));
  int n = lb_for(b, "n", -1);
  int i = lb_for(b, "i", P);
  Expr *at = ncp(L, V(L, n), V(L, c), V(L, i), C, P);
  lb_store(b, y, at,
           lower_epilogue(L, add(L, mul(L, load(L, x, at), T(L, sc)), T(L, sh)),
                          NULL, at));
  close(L, 3);
  Buffer *nbt = role(nd, ps, "num_batches_tracked");
  lb_accum(b, nbt, I(L, 0), I(L, 1));
}

/* Dropout keeps an element with probability 1 - p and scales it by
 * 1/(1 - p); the mask is a counter-based draw, so the backward pass draws
 * the same mask again instead of storing it. */
static Expr *keep(Lower *L, const Node *fwd, Expr *key) {
  return x_bin(L->p, X_LE, F(L, fwd->at.prob), x_rand(L->p, fwd->id, key));
}

static void dropout(Lower *L, Buffer *y, Buffer *x, const Node *fwd) {
  Shape s = L->node->shape;
  double scale = 1.0 / (1.0 - fwd->at.prob);
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int i = lb_for(b, "i", shape_numel(s));
  Expr *at = flat(L, V(L, n), V(L, i), s);
  lb_store(b, y, at,
           x_select(L->p, keep(L, fwd, at), mul(L, load(L, x, at), F(L, scale)),
                    F(L, 0)));
  close(L, 2);
}

/* Cross-entropy over the classes of every sample (and pixel), averaged;
 * mean squared error averaged over every value. */
static void loss(Lower *L, Buffer *y, Buffer *x, Buffer *t) {
  const Node *nd = L->node;
  Shape xs = nd->in.v[0]->shape;
  LoopBuilder *b = &L->b;
  int total = lb_let(b, "total", F(L, 0));
  int64_t K = xs.d[0], P = shape_numel(xs) / K;
  if (nd->op == OP_MSE) {
    int n = lb_for(b, "n", -1);
    int i = lb_for(b, "i", shape_numel(xs));
    Expr *at = flat(L, V(L, n), V(L, i), xs);
    int dv = lb_let(b, "d", sub(L, load(L, x, at), load(L, t, at)));
    lb_set(b, total, add(L, T(L, total), mul(L, T(L, dv), T(L, dv))));
    close(L, 2);
    lb_store(b, y, I(L, 0),
             fdiv(L, T(L, total), batch_count(L, shape_numel(xs))));
    return;
  }
  int n = lb_for(b, "n", -1);
  int p = lb_for(b, "p", P);
  int m = lb_let(b, "m", F(L, -INFINITY));
  int k = lb_for(b, "k", K);
  lb_set(b, m,
         x_bin(L->p, X_MAX, T(L, m),
               load(L, x, ncp(L, V(L, n), V(L, k), V(L, p), K, P))));
  close(L, 1);
  int se = lb_let(b, "se", F(L, 0));
  k = lb_for(b, "k", K);
  lb_set(b, se,
         add(L, T(L, se),
             x_un(L->p, X_EXP,
                  sub(L, load(L, x, ncp(L, V(L, n), V(L, k), V(L, p), K, P)),
                      T(L, m)))));
  close(L, 1);
  int lab =
      lb_let(b, "label", load(L, t, add(L, mul(L, V(L, n), I(L, P)), V(L, p))));
  Expr *picked = load(L, x, ncp(L, V(L, n), IT(L, lab), V(L, p), K, P));
  lb_set(b, total,
         add(L, T(L, total),
             sub(L, add(L, T(L, m), x_un(L->p, X_LOG, T(L, se))), picked)));
  close(L, 2);
  lb_store(b, y, I(L, 0), fdiv(L, T(L, total), batch_count(L, P)));
}

int lower_train_node(Lower *L, Buffer *y, Buffer **in, Buffer **ps) {
  const Node *nd = L->node;
  switch (nd->op) {
  case OP_BN:
    if (nd->frozen)
      return 0; /* running statistics, as in eval mode */
    bn_train(L, y, in[0], ps);
    return 1;
  case OP_DROPOUT: dropout(L, y, in[0], nd); return 1;
  case OP_CROSS_ENTROPY:
  case OP_MSE: loss(L, y, in[0], in[1]); return 1;
  default: return 0;
  }
}

/* --- gradients of convolutions and dense layers ------------------------- */

/* dx of a convolution: every output gradient flows back to the inputs its
 * window read, scattered like a transposed convolution. */
static void conv_dx(Lower *L, Buffer *dx, Buffer *dy, Buffer *w) {
  if (lower_conv_dx_tiled(L, dx, dy, w))
    return;
  const Node *nd = L->node, *of = nd->of;
  const Attrs *at = &of->at;
  Shape xs = of->in.v[0]->shape, ys = of->shape;
  int64_t G = at->groups, Cg = xs.d[0] / G, Og = ys.d[0] / G;
  LoopBuilder *b = &L->b;
  zero(L, dx, nd);
  int n = lb_for(b, "n", -1);
  int g = lb_for(b, "g", G);
  int oc = lb_for(b, "ocg", Og);
  int ic = lb_for(b, "icg", Cg);
  int kh = lb_for(b, "kh", at->k[0]);
  int kw = lb_for(b, "kw", at->k[1]);
  Expr *ocx = add(L, mul(L, V(L, g), I(L, Og)), V(L, oc));
  Expr *icx = add(L, mul(L, V(L, g), I(L, Cg)), V(L, ic));
  Shape ws = {3, {Cg, at->k[0], at->k[1], 0}};
  int wv = lb_let(b, "wv",
                  load(L, w, idx(L, ocx, V(L, ic), V(L, kh), V(L, kw), ws)));
  int oh = lb_for(b, "oh", ys.d[1]);
  Expr *ih = window_coord(L, oh, kh, at, 0);
  int64_t maxh =
      (ys.d[1] - 1) * at->s[0] - at->p[0] + (at->k[0] - 1) * at->d[0];
  int gh = open_if(L, in_range(L, ih, 0, xs.d[1], -at->p[0], maxh));
  int ow = lb_for(b, "ow", ys.d[2]);
  Expr *iw = window_coord(L, ow, kw, at, 1);
  int64_t maxw =
      (ys.d[2] - 1) * at->s[1] - at->p[1] + (at->k[1] - 1) * at->d[1];
  int gw = open_if(L, in_range(L, iw, 0, xs.d[2], -at->p[1], maxw));
  lb_accum(b, dx, idx(L, V(L, n), icx, ih, iw, xs),
           mul(L, load(L, dy, idx(L, V(L, n), ocx, V(L, oh), V(L, ow), ys)),
               T(L, wv)));
  close(L, gw + 1 + gh + 1 + 6);
}

static void conv_dw(Lower *L, Buffer *dw, Buffer *x, Buffer *dy) {
  if (lower_conv_dw_tiled(L, dw, x, dy))
    return;
  const Node *of = L->node->of;
  const Attrs *at = &of->at;
  Shape xs = of->in.v[0]->shape, ys = of->shape;
  int64_t G = at->groups, Cg = xs.d[0] / G, Og = ys.d[0] / G;
  LoopBuilder *b = &L->b;
  int g = lb_for(b, "g", G);
  int oc = lb_for(b, "ocg", Og);
  int ic = lb_for(b, "icg", Cg);
  int kh = lb_for(b, "kh", at->k[0]);
  int kw = lb_for(b, "kw", at->k[1]);
  int acc = lb_let(b, "acc", F(L, 0));
  int n = lb_for(b, "n", -1);
  int oh = lb_for(b, "oh", ys.d[1]);
  int ow = lb_for(b, "ow", ys.d[2]);
  Expr *ih = window_coord(L, oh, kh, at, 0),
       *iw = window_coord(L, ow, kw, at, 1);
  int opened = open_if(L, window_guard(L, ih, iw, at, xs, ys));
  Expr *ocx = add(L, mul(L, V(L, g), I(L, Og)), V(L, oc));
  Expr *icx = add(L, mul(L, V(L, g), I(L, Cg)), V(L, ic));
  lb_set(b, acc,
         add(L, T(L, acc),
             mul(L, load(L, dy, idx(L, V(L, n), ocx, V(L, oh), V(L, ow), ys)),
                 load(L, x, idx(L, V(L, n), icx, ih, iw, xs)))));
  close(L, opened + 3);
  Shape ws = {3, {Cg, at->k[0], at->k[1], 0}};
  lb_store(b, dw, idx(L, ocx, V(L, ic), V(L, kh), V(L, kw), ws), T(L, acc));
  close(L, 5);
}

static void deconv_grad(Lower *L, Buffer *out, Buffer *a, Buffer *b2,
                        int wgrad) {
  const Node *of = L->node->of;
  const Attrs *at = &of->at;
  Shape xs = of->in.v[0]->shape, ys = of->shape;
  int64_t G = at->groups, Cg = xs.d[0] / G, Og = ys.d[0] / G;
  Shape ws = {3, {Og, at->k[0], at->k[1], 0}};
  LoopBuilder *b = &L->b;
  if (!wgrad) { /* dx[n, ic, ih, iw] = sum dy[n, oc, oh, ow] w[ic, ocg, kh, kw]
                 */
    Buffer *dy = a, *w = b2;
    int n = lb_for(b, "n", -1);
    int g = lb_for(b, "g", G);
    int ic = lb_for(b, "icg", Cg);
    int ih = lb_for(b, "ih", xs.d[1]);
    int iw = lb_for(b, "iw", xs.d[2]);
    int acc = lb_let(b, "acc", F(L, 0));
    int oc = lb_for(b, "ocg", Og);
    int kh = lb_for(b, "kh", at->k[0]);
    int kw = lb_for(b, "kw", at->k[1]);
    Expr *oh = deconv_out(L, ih, kh, at, 0), *ow = deconv_out(L, iw, kw, at, 1);
    int opened = open_if(L, deconv_guard(L, oh, ow, at, xs, ys));
    Expr *icx = add(L, mul(L, V(L, g), I(L, Cg)), V(L, ic));
    Expr *ocx = add(L, mul(L, V(L, g), I(L, Og)), V(L, oc));
    lb_set(b, acc,
           add(L, T(L, acc),
               mul(L, load(L, dy, idx(L, V(L, n), ocx, oh, ow, ys)),
                   load(L, w, idx(L, icx, V(L, oc), V(L, kh), V(L, kw), ws)))));
    close(L, opened + 3);
    lb_store(b, out, idx(L, V(L, n), icx, V(L, ih), V(L, iw), xs), T(L, acc));
    close(L, 5);
    return;
  }
  /* dw[ic, ocg, kh, kw] = sum x[n, ic, ih, iw] dy[n, oc, oh, ow] */
  Buffer *x = a, *dy = b2;
  int g = lb_for(b, "g", G);
  int ic = lb_for(b, "icg", Cg);
  int oc = lb_for(b, "ocg", Og);
  int kh = lb_for(b, "kh", at->k[0]);
  int kw = lb_for(b, "kw", at->k[1]);
  int acc = lb_let(b, "acc", F(L, 0));
  int n = lb_for(b, "n", -1);
  int ih = lb_for(b, "ih", xs.d[1]);
  int iw = lb_for(b, "iw", xs.d[2]);
  Expr *oh = deconv_out(L, ih, kh, at, 0), *ow = deconv_out(L, iw, kw, at, 1);
  int opened = open_if(L, deconv_guard(L, oh, ow, at, xs, ys));
  Expr *icx = add(L, mul(L, V(L, g), I(L, Cg)), V(L, ic));
  Expr *ocx = add(L, mul(L, V(L, g), I(L, Og)), V(L, oc));
  lb_set(b, acc,
         add(L, T(L, acc),
             mul(L, load(L, x, idx(L, V(L, n), icx, V(L, ih), V(L, iw), xs)),
                 load(L, dy, idx(L, V(L, n), ocx, oh, ow, ys)))));
  close(L, opened + 3);
  lb_store(b, out, idx(L, icx, V(L, oc), V(L, kh), V(L, kw), ws), T(L, acc));
  close(L, 5);
}

static void dense_dx(Lower *L, Buffer *dx, Buffer *dy, Buffer *w) {
  if (lower_dense_dx_tiled(L, dx, dy, w))
    return;
  const Node *of = L->node->of;
  int64_t in = of->in.v[0]->shape.d[0], out = of->shape.d[0];
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int i = lb_for(b, "i", in);
  int acc = lb_let(b, "acc", F(L, 0));
  int o = lb_for(b, "o", out);
  lb_set(b, acc,
         add(L, T(L, acc),
             mul(L, load(L, dy, add(L, mul(L, V(L, n), I(L, out)), V(L, o))),
                 load(L, w, add(L, mul(L, V(L, o), I(L, in)), V(L, i))))));
  close(L, 1);
  lb_store(b, dx, add(L, mul(L, V(L, n), I(L, in)), V(L, i)), T(L, acc));
  close(L, 2);
}

static void dense_dw(Lower *L, Buffer *dw, Buffer *x, Buffer *dy) {
  if (lower_dense_dw_tiled(L, dw, x, dy))
    return;
  const Node *of = L->node->of;
  int64_t in = of->in.v[0]->shape.d[0], out = of->shape.d[0];
  LoopBuilder *b = &L->b;
  int o = lb_for(b, "o", out);
  int i = lb_for(b, "i", in);
  int acc = lb_let(b, "acc", F(L, 0));
  int n = lb_for(b, "n", -1);
  lb_set(b, acc,
         add(L, T(L, acc),
             mul(L, load(L, dy, add(L, mul(L, V(L, n), I(L, out)), V(L, o))),
                 load(L, x, add(L, mul(L, V(L, n), I(L, in)), V(L, i))))));
  close(L, 1);
  lb_store(b, dw, add(L, mul(L, V(L, o), I(L, in)), V(L, i)), T(L, acc));
  close(L, 2);
}

/* A bias's gradient: dy summed over samples and positions, per channel.
 * One running sum is a chain of dependent adds (LeNet-5's c1.dbias took
 * 0.34 ms of an 11.6 ms training step); 32 lanes of sums along the
 * positions, added up at the end, are four independent vector chains.
 * Like the weight gradient's lanes (schedule.c), they reorder the sum
 * within float32 rounding, and -fno-tile keeps the single sum. */
enum { SUM_LANES = 32 };

static void channel_sum(Lower *L, Buffer *out, Buffer *dy, Shape s) {
  int64_t C = s.d[0], P = shape_numel(s) / C;
  LoopBuilder *b = &L->b;
  int c = channel_loop(L, C, P);
  int acc = lb_let(b, "acc", F(L, 0));
  if (L->p->tile && P >= SUM_LANES) {
    int64_t runs = P / SUM_LANES, rest = P % SUM_LANES;
    Buffer *lane = loop_local(L->p, b->k, "lanes", SUM_LANES);
    int j = lb_for(b, "j", SUM_LANES);
    lb_store(b, lane, V(L, j), F(L, 0));
    close(L, 1);
    int n = lb_for(b, "n", -1);
    int r = lb_for(b, "r", runs);
    j = lb_for(b, "j", SUM_LANES);
    Expr *i = add(L, mul(L, V(L, r), I(L, SUM_LANES)), V(L, j));
    lb_accum(b, lane, V(L, j), load(L, dy, ncp(L, V(L, n), V(L, c), i, C, P)));
    close(L, 2);
    if (rest) {
      j = lb_for(b, "j", rest);
      i = add(L, I(L, runs * SUM_LANES), V(L, j));
      lb_accum(b, lane, V(L, j),
               load(L, dy, ncp(L, V(L, n), V(L, c), i, C, P)));
      close(L, 1);
    }
    close(L, 1);
    j = lb_for(b, "j", SUM_LANES);
    lb_set(b, acc, add(L, T(L, acc), load(L, lane, V(L, j))));
    close(L, 1);
  } else {
    int n = lb_for(b, "n", -1);
    int i = lb_for(b, "i", P);
    lb_set(b, acc,
           add(L, T(L, acc),
               load(L, dy, ncp(L, V(L, n), V(L, c), V(L, i), C, P))));
    close(L, 2);
  }
  lb_store(b, out, V(L, c), T(L, acc));
  close(L, 1);
}

/* --- pooling ------------------------------------------------------------- */

/* The gradients of a max pool's outputs in rows r and columns q of the
 * plane (n, c), each to the first maximum of its window, as PyTorch's;
 * each tap tested against x's edges unless every window there lies
 * inside (pool_spans). */
static void max_dx_span(Lower *L, Buffer *dx, Buffer *x, Buffer *dy, Expr *n,
                        Expr *c, Span r, Span q) {
  if (!r.count || !q.count)
    return;
  const Attrs *at = &L->node->of->at;
  Shape xs = L->node->of->in.v[0]->shape, ys = L->node->of->shape;
  LoopBuilder *b = &L->b;
  int oh = lb_for(b, "oh", r.count);
  int ow = lb_for(b, "ow", q.count);
  Expr *ohx = add(L, V(L, oh), I(L, r.from)),
       *owx = add(L, V(L, ow), I(L, q.from));
  int m = lb_let(b, "m", F(L, -INFINITY));
  int arg = lb_let(b, "arg", I(L, -1));
  int kh = lb_for(b, "kh", at->k[0]);
  int kw = lb_for(b, "kw", at->k[1]);
  SpanTap tap = span_tap(L, at, xs, r, q, ohx, owx, kh, kw);
  Expr *ih = tap.ih, *iw = tap.iw;
  int opened = open_if(L, tap.guard);
  Expr *at_x = idx(L, n, c, ih, iw, xs);
  int v = lb_let(b, "v", load(L, x, at_x));
  lb_if(b, x_bin(L->p, X_AND, lt(L, T(L, m), T(L, v)), I(L, 1)));
  lb_set(b, m, T(L, v));
  lb_set(b, arg, at_x);
  close(L, 1 + opened + 2);
  lb_if(b, x_bin(L->p, X_LE, I(L, 0), IT(L, arg)));
  lb_accum(b, dx, IT(L, arg), load(L, dy, idx(L, n, c, ohx, owx, ys)));
  close(L, 1 + 2);
}

/* Each plane of dx is zeroed, gets its windows' gradients and then the
 * epilogue (the activation's gradient before the pooling) while it is in
 * cache. As three passes over the whole of dx, ResNet-18's maxpool0.dx
 * (26 MB at batch 8, one thread) took 32-34 ms; plane by plane, 26-30. */
static void pool_dx(Lower *L, Buffer *dx, Buffer *x, Buffer *dy) {
  const Node *nd = L->node, *of = nd->of;
  const Attrs *at = &of->at;
  Shape xs = of->in.v[0]->shape, ys = of->shape;
  int64_t C = xs.d[0], P = xs.d[1] * xs.d[2];
  LoopBuilder *b = &L->b;
  /* the samples' planes are apart: threads may share them out */
  int64_t work = C * P + shape_numel(ys) * at->k[0] * at->k[1];
  int n = schedule_parallel(work, L->p->batch, 1, 1) == PAR_SAMPLES
              ? lb_parallel_for(b, "n", -1)
              : lb_for(b, "n", -1);
  int c = lb_for(b, "c", C);
  int i = lb_for(b, "i", P);
  lb_store(b, dx, ncp(L, V(L, n), V(L, c), V(L, i), C, P), F(L, 0));
  close(L, 1);
  if (of->op == OP_MAXPOOL) {
    /* tiled, the windows inside x go without tests (pool_spans) */
    Span r[5] = {{0, ys.d[1]}}, q[5] = {{0, ys.d[2]}};
    if (L->p->tile)
      pool_spans(at, xs, ys, r, q);
    for (int k = 0; k < 5; k++)
      max_dx_span(L, dx, x, dy, V(L, n), V(L, c), r[k], q[k]);
  } else {
    int oh = lb_for(b, "oh", ys.d[1]);
    int ow = lb_for(b, "ow", ys.d[2]);
    Expr *here = idx(L, V(L, n), V(L, c), V(L, oh), V(L, ow), ys);
    if (of->op == OP_AVGPOOL) {
      Expr *hs = sub(L, mul(L, V(L, oh), I(L, at->s[0])), I(L, at->p[0]));
      Expr *wsx = sub(L, mul(L, V(L, ow), I(L, at->s[1])), I(L, at->p[1]));
      int gv = lb_let(b, "g",
                      fdiv(L, load(L, dy, here),
                           tofloat(L, avg_divisor(L, at, xs, hs, wsx))));
      int kh = lb_for(b, "kh", at->k[0]);
      int kw = lb_for(b, "kw", at->k[1]);
      Expr *ih = window_coord(L, oh, kh, at, 0),
           *iw = window_coord(L, ow, kw, at, 1);
      int opened = open_if(L, window_guard(L, ih, iw, at, xs, ys));
      lb_accum(b, dx, idx(L, V(L, n), V(L, c), ih, iw, xs), T(L, gv));
      close(L, opened + 2 + 2);
    } else {
      /* adaptive (and global) average pooling: PyTorch's windows */
      AdaptiveWindow a = adaptive_window(L, oh, ow, xs, ys);
      Expr *h0 = a.h0, *h1 = a.h1, *w0 = a.w0, *w1 = a.w1;
      int gv = lb_let(b, "g",
                      fdiv(L, load(L, dy, here),
                           tofloat(L, mul(L, sub(L, h1, h0), sub(L, w1, w0)))));
      int kh = lb_for(b, "kh", a.KH);
      int kw = lb_for(b, "kw", a.KW);
      Expr *ih = add(L, h0, V(L, kh)), *iw = add(L, w0, V(L, kw));
      lb_if(b, x_bin(L->p, X_AND, lt(L, ih, h1), lt(L, iw, w1)));
      lb_accum(b, dx, idx(L, V(L, n), V(L, c), ih, iw, xs), T(L, gv));
      close(L, 3 + 2);
    }
  }
  if (L->ep) {
    i = lb_for(b, "i", P);
    Expr *e = ncp(L, V(L, n), V(L, c), V(L, i), C, P);
    lb_store(b, dx, e, lower_epilogue(L, load(L, dx, e), V(L, c), e));
    close(L, 1);
  }
  close(L, 2);
}

/* --- element-wise and normalizations -------------------------------------- */

Expr *lower_act_grad(Lower *L, const Node *of, Expr *value, Expr *g) {
  int t = lb_let(&L->b, of->op == OP_LEAKY_RELU ? "x" : "y", value);
  switch (of->op) {
  case OP_RELU: return x_select(L->p, lt(L, F(L, 0), T(L, t)), g, F(L, 0));
  case OP_LEAKY_RELU:
    return x_select(L->p, lt(L, F(L, 0), T(L, t)), g,
                    mul(L, F(L, of->at.a), g));
  case OP_TANH: return mul(L, g, sub(L, F(L, 1), mul(L, T(L, t), T(L, t))));
  default: return mul(L, g, mul(L, T(L, t), sub(L, F(L, 1), T(L, t))));
  }
}

static void act_dx(Lower *L, Buffer *dx, Buffer *v, Buffer *dy) {
  const Node *nd = L->node;
  Shape s = nd->shape;
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int i = lb_for(b, "i", shape_numel(s));
  Expr *at = flat(L, V(L, n), V(L, i), s);
  lb_store(b, dx, at,
           lower_act_grad(L, nd->of, load(L, v, at), load(L, dy, at)));
  close(L, 2);
}

static void softmax_dx(Lower *L, Buffer *dx, Buffer *y, Buffer *dy) {
  Shape s = L->node->shape;
  int64_t C = s.d[0], P = shape_numel(s) / C;
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int p = lb_for(b, "p", P);
  int dot = lb_let(b, "dot", F(L, 0));
  int c = lb_for(b, "c", C);
  Expr *at = ncp(L, V(L, n), V(L, c), V(L, p), C, P);
  lb_set(b, dot, add(L, T(L, dot), mul(L, load(L, dy, at), load(L, y, at))));
  close(L, 1);
  c = lb_for(b, "c", C);
  at = ncp(L, V(L, n), V(L, c), V(L, p), C, P);
  lb_store(b, dx, at,
           mul(L, load(L, y, at), sub(L, load(L, dy, at), T(L, dot))));
  close(L, 3);
}

typedef struct GradCtx {
  Buffer *x, *dy;
  int mean, inv;
} GradCtx;

/* dy and dy * xhat */
static void grad_terms(Lower *L, const void *ctx, Expr *at, Expr **terms) {
  const GradCtx *c = ctx;
  int g = lb_let(&L->b, "g", load(L, c->dy, at));
  int xh =
      lb_let(&L->b, "xhat",
             mul(L, sub(L, load(L, c->x, at), T(L, c->mean)), T(L, c->inv)));
  terms[0] = T(L, g);
  terms[1] = mul(L, T(L, g), T(L, xh));
}

/* Batch norm's dx (training): with xhat = (x - mean) * inv over the
 * batch, dx = w * inv / M * (M * dy - sum(dy) - xhat * sum(dy * xhat)).
 * Frozen layers normalize with running statistics: dx = dy * w * inv. */
static void bn_grad(Lower *L, Buffer *out, Buffer *x, Buffer *dy, Buffer **ps,
                    int wgrad) {
  const Node *of = L->node->of;
  Shape s = of->shape;
  int64_t C = s.d[0], P = shape_numel(s) / C;
  int frozen = of->frozen;
  LoopBuilder *b = &L->b;
  int c = channel_loop(L, C, P);
  int mean, inv;
  bn_stats(L, x, ps, c, C, P, frozen, &mean, &inv);
  static const char *const names[] = {"sum_dy", "sum_dy_xhat"};
  /* xhat in float throughout (the mean rounded to float once): with the
   * double mean in it, gcc left the sums' lanes scalar, a third of
   * ResNet-18's bn1.dx */
  GradCtx ctx = {x, dy, lb_let(b, "mean_f", T(L, mean)), inv};
  int sums[2];
  wide_sums(L, c, C, P, 2, names, grad_terms, &ctx, sums);
  int sdy = sums[0], sdx = sums[1];
  int n, i;
  Expr *at;
  if (wgrad) {
    lb_store(b, out, V(L, c), T(L, sdx));
    close(L, 1);
    return;
  }
  Expr *w = load(L, role(of, ps, "weight"), V(L, c));
  int k = lb_let(b, "k", mul(L, w, T(L, inv)));
  Expr *M = batch_count(L, P);
  n = lb_for(b, "n", -1);
  i = lb_for(b, "i", P);
  at = ncp(L, V(L, n), V(L, c), V(L, i), C, P);
  Expr *r;
  if (frozen) {
    r = mul(L, load(L, dy, at), T(L, k));
  } else {
    Expr *xhat = mul(L, sub(L, load(L, x, at), T(L, mean)), T(L, inv));
    r = mul(L, fdiv(L, T(L, k), M),
            sub(L, sub(L, mul(L, M, load(L, dy, at)), T(L, sdy)),
                mul(L, xhat, T(L, sdx))));
  }
  lb_store(b, out, at, r);
  close(L, 3);
}

/* Layer, instance and group norm: the statistics are per sample and group,
 * so each group's dx is batch norm's formula over the group's L values,
 * with g = dy * weight. */
static void norm_grad(Lower *L, Buffer *out, Buffer *x, Buffer *dy, Buffer **ps,
                      int which) {
  const Node *of = L->node->of;
  Shape s = of->shape;
  int64_t numel = shape_numel(s), C = s.d[0], P = numel / C;
  int64_t groups = of->op == OP_LAYERNORM      ? 1
                   : of->op == OP_INSTANCENORM ? C
                                               : of->at.g;
  int64_t len = numel / groups;
  Buffer *w = role(of, ps, "weight");
  LoopBuilder *b = &L->b;
  if (which != 0)
    zero(L, out, L->node);
  int n = lb_for(b, "n", -1);
  int g = lb_for(b, "g", groups);
  Expr *base =
      mul(L, add(L, mul(L, V(L, n), I(L, groups)), V(L, g)), I(L, len));
#define PI(iv)                                                                 \
  (of->op == OP_LAYERNORM                                                      \
       ? V(L, iv)                                                              \
       : dvd(L, add(L, mul(L, V(L, g), I(L, len)), V(L, iv)), I(L, P)))
  if (which == 2) { /* bias: sum of dy */
    int i = lb_for(b, "i", len);
    lb_accum(b, out, PI(i), load(L, dy, add(L, base, V(L, i))));
    close(L, 3);
    return;
  }
  int sum = lb_let(b, "sum", F(L, 0));
  int i = lb_for(b, "i", len);
  lb_set(b, sum, add(L, T(L, sum), load(L, x, add(L, base, V(L, i)))));
  close(L, 1);
  int mean = lb_let(b, "mean", fdiv(L, T(L, sum), F(L, (double)len)));
  int sq = lb_let(b, "sq", F(L, 0));
  i = lb_for(b, "i", len);
  int dv =
      lb_let(b, "d", sub(L, load(L, x, add(L, base, V(L, i))), T(L, mean)));
  lb_set(b, sq, add(L, T(L, sq), mul(L, T(L, dv), T(L, dv))));
  close(L, 1);
  int inv = lb_let(b, "inv",
                   fdiv(L, F(L, 1),
                        x_un(L->p, X_SQRT,
                             add(L, fdiv(L, T(L, sq), F(L, (double)len)),
                                 F(L, of->at.eps)))));
  if (which == 1) { /* weight: sum of dy * xhat */
    i = lb_for(b, "i", len);
    Expr *at = add(L, base, V(L, i));
    lb_accum(b, out, PI(i),
             mul(L, load(L, dy, at),
                 mul(L, sub(L, load(L, x, at), T(L, mean)), T(L, inv))));
    close(L, 3);
    return;
  }
  int sg = lb_let(b, "sum_g", F(L, 0));
  int sgx = lb_let(b, "sum_g_xhat", F(L, 0));
  i = lb_for(b, "i", len);
  Expr *at = add(L, base, V(L, i));
  int gg = lb_let(b, "gv", mul(L, load(L, dy, at), load(L, w, PI(i))));
  lb_set(b, sg, add(L, T(L, sg), T(L, gg)));
  lb_set(b, sgx,
         add(L, T(L, sgx),
             mul(L, T(L, gg),
                 mul(L, sub(L, load(L, x, at), T(L, mean)), T(L, inv)))));
  close(L, 1);
  i = lb_for(b, "i", len);
  at = add(L, base, V(L, i));
  Expr *xhat = mul(L, sub(L, load(L, x, at), T(L, mean)), T(L, inv));
  Expr *gi = mul(L, load(L, dy, at), load(L, w, PI(i)));
  Expr *Lf = F(L, (double)len);
  lb_store(
      b, out, at,
      mul(L, fdiv(L, T(L, inv), Lf),
          sub(L, sub(L, mul(L, Lf, gi), T(L, sg)), mul(L, xhat, T(L, sgx)))));
#undef PI
  close(L, 3);
}

/* LRN: y_c = x_c * D_c^-beta with D_c = k + alpha/size * sum of x_j^2 over
 * c's window. dx_i = dy_i D_i^-beta - 2 alpha beta / size * x_i *
 * sum over the windows holding i of dy_c x_c D_c^(-beta-1). */
static Expr *lrn_d(Lower *L, Buffer *x, int n, Expr *c, int p, int64_t C,
                   int64_t P) {
  const Attrs *at = &L->node->of->at;
  LoopBuilder *b = &L->b;
  int sum = lb_let(b, "sum", F(L, 0));
  int j = lb_for(b, "j", at->size);
  Expr *cj = add(L, c, sub(L, V(L, j), I(L, at->size / 2)));
  lb_if(b,
        x_bin(L->p, X_AND, x_bin(L->p, X_LE, I(L, 0), cj), lt(L, cj, I(L, C))));
  int v = lb_let(b, "v", load(L, x, ncp(L, V(L, n), cj, V(L, p), C, P)));
  lb_set(b, sum, add(L, T(L, sum), mul(L, T(L, v), T(L, v))));
  close(L, 2);
  return add(L, F(L, at->lrn_k),
             mul(L, F(L, at->alpha / (double)at->size), T(L, sum)));
}

static void lrn_dx(Lower *L, Buffer *dx, Buffer *x, Buffer *dy) {
  const Node *of = L->node->of;
  const Attrs *at = &of->at;
  Shape s = of->shape;
  int64_t C = s.d[0], P = s.d[1] * s.d[2];
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int c = lb_for(b, "c", C);
  int p = lb_for(b, "p", P);
  int di = lb_let(b, "di", lrn_d(L, x, n, V(L, c), p, C, P));
  int acc = lb_let(b, "acc", F(L, 0));
  /* the windows holding channel c: those of channels c - size/2 + ... */
  int j = lb_for(b, "jj", at->size);
  Expr *cc = sub(L, add(L, V(L, c), I(L, at->size / 2)), V(L, j));
  lb_if(b,
        x_bin(L->p, X_AND, x_bin(L->p, X_LE, I(L, 0), cc), lt(L, cc, I(L, C))));
  int ci = lb_let(b, "cc", cc);
  int dc = lb_let(b, "dc", lrn_d(L, x, n, IT(L, ci), p, C, P));
  Expr *atc = ncp(L, V(L, n), IT(L, ci), V(L, p), C, P);
  lb_set(b, acc,
         add(L, T(L, acc),
             mul(L, mul(L, load(L, dy, atc), load(L, x, atc)),
                 lower_pow(L, T(L, dc), -at->beta - 1))));
  close(L, 2);
  Expr *here = ncp(L, V(L, n), V(L, c), V(L, p), C, P);
  Expr *r = sub(L, mul(L, load(L, dy, here), lower_pow(L, T(L, di), -at->beta)),
                mul(L,
                    mul(L, F(L, 2 * at->alpha * at->beta / (double)at->size),
                        load(L, x, here)),
                    T(L, acc)));
  lb_store(b, dx, here, r);
  close(L, 3);
}

/* --- data movement ------------------------------------------------------- */

static void slice(Lower *L, Buffer *dx, Buffer *dy) {
  const Node *nd = L->node, *of = nd->of;
  Shape xs = nd->shape, ys = of->shape;
  int64_t P = shape_numel(xs) / xs.d[0];
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int i = lb_for(b, "i", shape_numel(xs));
  Expr *src = add(
      L, add(L, mul(L, V(L, n), I(L, shape_numel(ys))), I(L, nd->offset * P)),
      V(L, i));
  lb_store(b, dx, flat(L, V(L, n), V(L, i), xs), load(L, dy, src));
  close(L, 2);
}

static void upsample_dx(Lower *L, Buffer *dx, Buffer *dy) {
  const Node *nd = L->node, *of = nd->of;
  Shape xs = nd->shape, ys = of->shape;
  int64_t S = of->at.scale;
  LoopBuilder *b = &L->b;
  if (strcmp(of->at.mode, "nearest") == 0) {
    int n = lb_for(b, "n", -1);
    int c = lb_for(b, "c", xs.d[0]);
    int h = lb_for(b, "h", xs.d[1]);
    int w = lb_for(b, "w", xs.d[2]);
    int acc = lb_let(b, "acc", F(L, 0));
    int r = lb_for(b, "r", S);
    int q = lb_for(b, "q", S);
    lb_set(b, acc,
           add(L, T(L, acc),
               load(L, dy,
                    idx(L, V(L, n), V(L, c),
                        add(L, mul(L, V(L, h), I(L, S)), V(L, r)),
                        add(L, mul(L, V(L, w), I(L, S)), V(L, q)), ys))));
    close(L, 2);
    lb_store(b, dx, idx(L, V(L, n), V(L, c), V(L, h), V(L, w), xs), T(L, acc));
    close(L, 4);
    return;
  }
  /* bilinear: each output spreads its gradient over the four inputs it
   * interpolated, with the forward's weights (see lower_upsample) */
  zero(L, dx, nd);
  for (int64_t rh = 0; rh < S; rh++)
    for (int64_t rw = 0; rw < S; rw++) {
      double fh = ((double)rh + 0.5) / (double)S - 0.5;
      double fw = ((double)rw + 0.5) / (double)S - 0.5;
      int n = lb_for(b, "n", -1);
      int c = lb_for(b, "c", xs.d[0]);
      int ih = lb_for(b, "ih", xs.d[1]);
      int iw = lb_for(b, "iw", xs.d[2]);
      Expr *h0, *w0, *lh, *lw;
      if (fh >= 0) {
        h0 = V(L, ih);
        lh = F(L, fh);
      } else {
        Expr *first = x_bin(L->p, X_EQ, V(L, ih), I(L, 0));
        h0 = x_select(L->p, first, I(L, 0), sub(L, V(L, ih), I(L, 1)));
        lh = x_select(L->p, first, F(L, 0), F(L, 1 + fh));
      }
      if (fw >= 0) {
        w0 = V(L, iw);
        lw = F(L, fw);
      } else {
        Expr *first = x_bin(L->p, X_EQ, V(L, iw), I(L, 0));
        w0 = x_select(L->p, first, I(L, 0), sub(L, V(L, iw), I(L, 1)));
        lw = x_select(L->p, first, F(L, 0), F(L, 1 + fw));
      }
      int vh0 = lb_let(b, "h0", h0), vw0 = lb_let(b, "w0", w0);
      Expr *h1 =
          x_bin(L->p, X_MIN, add(L, IT(L, vh0), I(L, 1)), I(L, xs.d[1] - 1));
      Expr *w1 =
          x_bin(L->p, X_MIN, add(L, IT(L, vw0), I(L, 1)), I(L, xs.d[2] - 1));
      int vh = lb_let(b, "lh", lh), vw = lb_let(b, "lw", lw);
      Expr *oh = add(L, mul(L, V(L, ih), I(L, S)), I(L, rh));
      Expr *ow = add(L, mul(L, V(L, iw), I(L, S)), I(L, rw));
      int g = lb_let(b, "g", load(L, dy, idx(L, V(L, n), V(L, c), oh, ow, ys)));
      Expr *Lh = T(L, vh), *Lw = T(L, vw), *G = T(L, g);
      Expr *one_h = sub(L, F(L, 1), Lh), *one_w = sub(L, F(L, 1), Lw);
      lb_accum(b, dx, idx(L, V(L, n), V(L, c), IT(L, vh0), IT(L, vw0), xs),
               mul(L, G, mul(L, one_h, one_w)));
      lb_accum(b, dx, idx(L, V(L, n), V(L, c), IT(L, vh0), w1, xs),
               mul(L, G, mul(L, one_h, Lw)));
      lb_accum(b, dx, idx(L, V(L, n), V(L, c), h1, IT(L, vw0), xs),
               mul(L, G, mul(L, Lh, one_w)));
      lb_accum(b, dx, idx(L, V(L, n), V(L, c), h1, w1, xs),
               mul(L, G, mul(L, Lh, Lw)));
      close(L, 4);
    }
}

static void crop_dx(Lower *L, Buffer *dx, Buffer *dy) {
  const Node *nd = L->node, *of = nd->of;
  Shape xs = nd->shape, ys = of->shape;
  LoopBuilder *b = &L->b;
  zero(L, dx, nd);
  int n = lb_for(b, "n", -1);
  int c = lb_for(b, "c", ys.d[0]);
  int h = lb_for(b, "h", ys.d[1]);
  int w = lb_for(b, "w", ys.d[2]);
  lb_store(b, dx,
           idx(L, V(L, n), V(L, c), add(L, V(L, h), I(L, of->at.p[0])),
               add(L, V(L, w), I(L, of->at.p[1])), xs),
           load(L, dy, idx(L, V(L, n), V(L, c), V(L, h), V(L, w), ys)));
  close(L, 4);
}

static void dropout_dx(Lower *L, Buffer *dx, Buffer *dy) {
  const Node *of = L->node->of;
  Shape s = L->node->shape;
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int i = lb_for(b, "i", shape_numel(s));
  Expr *at = flat(L, V(L, n), V(L, i), s);
  lb_store(b, dx, at,
           x_select(L->p, keep(L, of, at),
                    mul(L, load(L, dy, at), F(L, 1.0 / (1.0 - of->at.prob))),
                    F(L, 0)));
  close(L, 2);
}

/* The loss's gradient, for dloss = 1: cross-entropy's (softmax - onehot)
 * and mse's 2 (x - t), each over the values the loss averages. */
static void loss_dx(Lower *L, Buffer *dx, Buffer *x, Buffer *t) {
  const Node *of = L->node->of;
  Shape xs = L->node->shape;
  LoopBuilder *b = &L->b;
  if (of->op == OP_MSE) {
    int n = lb_for(b, "n", -1);
    int i = lb_for(b, "i", shape_numel(xs));
    Expr *at = flat(L, V(L, n), V(L, i), xs);
    lb_store(b, dx, at,
             fdiv(L, mul(L, F(L, 2), sub(L, load(L, x, at), load(L, t, at))),
                  batch_count(L, shape_numel(xs))));
    close(L, 2);
    return;
  }
  int64_t K = xs.d[0], P = shape_numel(xs) / K;
  int n = lb_for(b, "n", -1);
  int p = lb_for(b, "p", P);
  int m = lb_let(b, "m", F(L, -INFINITY));
  int k = lb_for(b, "k", K);
  lb_set(b, m,
         x_bin(L->p, X_MAX, T(L, m),
               load(L, x, ncp(L, V(L, n), V(L, k), V(L, p), K, P))));
  close(L, 1);
  int se = lb_let(b, "se", F(L, 0));
  k = lb_for(b, "k", K);
  lb_set(b, se,
         add(L, T(L, se),
             x_un(L->p, X_EXP,
                  sub(L, load(L, x, ncp(L, V(L, n), V(L, k), V(L, p), K, P)),
                      T(L, m)))));
  close(L, 1);
  int lab =
      lb_let(b, "label", load(L, t, add(L, mul(L, V(L, n), I(L, P)), V(L, p))));
  int scale = lb_let(b, "scale", fdiv(L, F(L, 1), batch_count(L, P)));
  k = lb_for(b, "k", K);
  Expr *at = ncp(L, V(L, n), V(L, k), V(L, p), K, P);
  Expr *soft =
      fdiv(L, x_un(L->p, X_EXP, sub(L, load(L, x, at), T(L, m))), T(L, se));
  Expr *onehot =
      x_select(L->p, x_bin(L->p, X_EQ, V(L, k), IT(L, lab)), F(L, 1), F(L, 0));
  lb_store(b, dx, at, mul(L, sub(L, soft, onehot), T(L, scale)));
  close(L, 3);
}

int lower_grad_node(Lower *L, Buffer *y, Buffer **in, Buffer **ps) {
  const Node *nd = L->node;
  switch (nd->op) {
  case OP_CONV_DX: conv_dx(L, y, in[0], in[1]); return 1;
  case OP_CONV_DW: conv_dw(L, y, in[0], in[1]); return 1;
  case OP_DECONV_DX: deconv_grad(L, y, in[0], in[1], 0); return 1;
  case OP_DECONV_DW: deconv_grad(L, y, in[0], in[1], 1); return 1;
  case OP_DENSE_DX: dense_dx(L, y, in[0], in[1]); return 1;
  case OP_DENSE_DW: dense_dw(L, y, in[0], in[1]); return 1;
  case OP_BIAS_GRAD: channel_sum(L, y, in[0], nd->of->shape); return 1;
  case OP_POOL_DX: pool_dx(L, y, in[0], in[1]); return 1;
  case OP_ACT_DX: act_dx(L, y, in[0], in[1]); return 1;
  case OP_SOFTMAX_DX: softmax_dx(L, y, in[0], in[1]); return 1;
  case OP_BN_DX: bn_grad(L, y, in[0], in[1], ps, 0); return 1;
  case OP_BN_DW: bn_grad(L, y, in[0], in[1], ps, 1); return 1;
  case OP_NORM_DX: norm_grad(L, y, in[0], in[1], ps, 0); return 1;
  case OP_NORM_DW: norm_grad(L, y, in[0], in[1], ps, 1); return 1;
  case OP_NORM_DB: norm_grad(L, y, NULL, in[0], ps, 2); return 1;
  case OP_LRN_DX: lrn_dx(L, y, in[0], in[1]); return 1;
  case OP_DROPOUT_DX: dropout_dx(L, y, in[0]); return 1;
  case OP_SLICE: slice(L, y, in[0]); return 1;
  case OP_UPSAMPLE_DX: upsample_dx(L, y, in[0]); return 1;
  case OP_CROP_DX: crop_dx(L, y, in[0]); return 1;
  case OP_LOSS_DX: loss_dx(L, y, in[0], in[1]); return 1;
  default: return 0; /* OP_PARAM: the parameter's own buffer */
  }
}
