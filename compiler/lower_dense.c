/* Tiled dense-layer nests, as their schedule (schedule.h) says. The
 * in-features are contiguous in x, w, dx and dw, so they are the
 * innermost loop everywhere:
 *
 *   forward  each output of a block keeps lanes of partial sums over the
 *            in-features (a tile's lanes, the leftover tile in the
 *            first ones), folded in halves to 8 and added to the bias in y,
 *            lane by lane across the block's outputs; the epilogue
 *            follows as a pass over y;
 *   dx       a tile of in-features of one sample sums dy[n, o] w[o, i]
 *            over the outputs o, in order;
 *   dw       a block of outputs by a tile of in-features sums dy[n, o]
 *            x[n, i] over the samples, in order.
 *
 * dx and dw sum every element in the plain nest's order; the forward pass
 * reorders its sums into lanes (within float32 rounding). */
#include "lower_impl.h"
#include "schedule.h"

static void describe(Lower *L, const DenseSchedule *s, DensePass pass) {
  L->b.k->schedule = schedule_describe_dense(L->p->a, s, pass);
}

static Expr *at2(Lower *L, Expr *row, int64_t len, Expr *col) {
  return add(L, mul(L, row, I(L, len)), col);
}

/* Forward: lanes [0, width) of each output of the block take in-features
 * [i0, i0 + width). */
static void fwd_piece(Lower *L, Buffer *acc, Buffer *x, Buffer *w, int n,
                      Expr *o0, Expr *i0, int64_t width, int64_t lanes,
                      int64_t ob, int64_t in) {
  LoopBuilder *b = &L->b;
  int j = lb_for(b, "j", ob);
  int l = lb_for(b, "l", width);
  Expr *i = add(L, i0, V(L, l));
  lb_accum(b, acc, add(L, mul(L, V(L, j), I(L, lanes)), V(L, l)),
           mul(L, load(L, x, at2(L, V(L, n), in, i)),
               load(L, w, at2(L, add(L, o0, V(L, j)), in, i))));
  close(L, 2);
}

/* Forward: acc[j * lanes + l] += acc[j * lanes + from + l] for l < count,
 * for each output j of the block. */
static void fold_lanes(Lower *L, Buffer *acc, int64_t ob, int64_t lanes,
                       int64_t from, int64_t count) {
  LoopBuilder *b = &L->b;
  int j = lb_for(b, "j", ob);
  int l = lb_for(b, "l", count);
  Expr *at = add(L, mul(L, V(L, j), I(L, lanes)), V(L, l));
  lb_accum(b, acc, at, load(L, acc, add(L, at, I(L, from))));
  close(L, 2);
}

int lower_dense_tiled(Lower *L, Buffer *y, Buffer *x, Buffer *w, Buffer *bias) {
  const Node *nd = L->node;
  int64_t in = nd->in.v[0]->shape.d[0], out = nd->shape.d[0];
  DenseSchedule s = schedule_dense(in, out, DENSE_FORWARD, L->p->tile);
  describe(L, &s, DENSE_FORWARD);
  if (!s.tiled)
    return 0;
  LoopBuilder *b = &L->b;
  int64_t lanes = s.width;
  Buffer *acc = loop_local(L->p, b->k, "acc", s.ob * lanes);
  /* samples or blocks of outputs write apart: threads can share them */
  Parallel par = schedule_parallel(in * out, L->p->batch, out / s.ob, 1);
  int ob, n;
  if (par == PAR_SAMPLES) {
    n = lb_parallel_for(b, "n", -1);
    ob = lb_for(b, "ob", out / s.ob);
  } else {
    ob = par ? lb_parallel_for(b, "ob", out / s.ob)
             : lb_for(b, "ob", out / s.ob);
    n = lb_for(b, "n", -1);
  }
  Expr *o0 = mul(L, V(L, ob), I(L, s.ob));
  int a = lb_for(b, "a", s.ob * lanes);
  lb_store(b, acc, V(L, a), F(L, 0));
  close(L, 1);
  if (s.tiles > 0) {
    int t = lb_for(b, "t", s.tiles);
    fwd_piece(L, acc, x, w, n, o0, mul(L, V(L, t), I(L, s.width)), s.width,
              lanes, s.ob, in);
    close(L, 1);
  }
  /* the leftover in-features go to the first lanes: lanes of their own,
   * folded in after, were scalar code in gcc's hands (LeNet-5's f6, 120
   * in-features: 1.35 against 0.97 us with AVX2's same 16 lanes) */
  if (s.rem > 0)
    fwd_piece(L, acc, x, w, n, o0, I(L, s.tiles * s.width), s.rem, lanes, s.ob,
              in);
  /* The lanes fold in halves down to 8, then each lane of the block's
   * outputs is added to their sums in y, a vector across the outputs: one
   * chain of dependent adds over all lanes took LeNet-5's f6 longer than
   * its multiply-adds (56 adds an output; 3.1 against 2.0 us folded), and
   * an output's 8 lanes summed on their own, then its epilogue, were
   * scalar code gcc spread over hundreds of shuffles (f5 4.4 against 1.6
   * us, AVX-512). The epilogue is a pass over y after the nest (lower.c),
   * vectorized across the outputs too. Each output still sums its bias,
   * then lanes 0 to 7 in order. */
  int64_t h = s.width;
  for (; h > 8 && h % 2 == 0; h /= 2)
    fold_lanes(L, acc, s.ob, lanes, h / 2, h / 2);
  int j = lb_for(b, "j", s.ob);
  Expr *o = add(L, o0, V(L, j));
  lb_store(b, y, at2(L, V(L, n), out, o), bias ? load(L, bias, o) : F(L, 0));
  close(L, 1);
  int l = lb_for(b, "l", h);
  j = lb_for(b, "j", s.ob);
  lb_accum(b, y, at2(L, V(L, n), out, add(L, o0, V(L, j))),
           load(L, acc, add(L, mul(L, V(L, j), I(L, lanes)), V(L, l))));
  close(L, 4);
  return 1;
}

/* dx: in-features [i0, i0 + width) of sample n. */
static void dx_piece(Lower *L, Buffer *acc, Buffer *dx, Buffer *dy, Buffer *w,
                     int n, Expr *i0, int64_t width, int64_t in, int64_t out) {
  LoopBuilder *b = &L->b;
  int l = lb_for(b, "l", width);
  lb_store(b, acc, V(L, l), F(L, 0));
  close(L, 1);
  int o = lb_for(b, "o", out);
  int d = lb_let(b, "d", load(L, dy, at2(L, V(L, n), out, V(L, o))));
  l = lb_for(b, "l", width);
  lb_accum(b, acc, V(L, l),
           mul(L, x_temp(L->p, d),
               load(L, w, at2(L, V(L, o), in, add(L, i0, V(L, l))))));
  close(L, 2);
  l = lb_for(b, "l", width);
  Expr *at = at2(L, V(L, n), in, add(L, i0, V(L, l)));
  lb_store(b, dx, at, lower_epilogue(L, load(L, acc, V(L, l)), NULL, at));
  close(L, 1);
}

int lower_dense_dx_tiled(Lower *L, Buffer *dx, Buffer *dy, Buffer *w) {
  const Node *of = L->node->of;
  int64_t in = of->in.v[0]->shape.d[0], out = of->shape.d[0];
  DenseSchedule s = schedule_dense(in, out, DENSE_DX, L->p->tile);
  describe(L, &s, DENSE_DX);
  if (!s.tiled)
    return 0;
  LoopBuilder *b = &L->b;
  Buffer *acc = loop_local(L->p, b->k, "acc", s.width);
  int n = lb_for(b, "n", -1);
  if (s.tiles > 0) {
    int t = lb_for(b, "t", s.tiles);
    dx_piece(L, acc, dx, dy, w, n, mul(L, V(L, t), I(L, s.width)), s.width, in,
             out);
    close(L, 1);
  }
  if (s.rem > 0)
    dx_piece(L, acc, dx, dy, w, n, I(L, s.tiles * s.width), s.rem, in, out);
  close(L, 1);
  return 1;
}

/* dw: outputs [o0, o0 + ob) by in-features [i0, i0 + width). */
static void dw_piece(Lower *L, Buffer *acc, Buffer *dw, Buffer *x, Buffer *dy,
                     Expr *o0, Expr *i0, int64_t width, int64_t ob, int64_t in,
                     int64_t out) {
  LoopBuilder *b = &L->b;
  int a = lb_for(b, "a", ob * width);
  lb_store(b, acc, V(L, a), F(L, 0));
  close(L, 1);
  int n = lb_for(b, "n", -1);
  int j = lb_for(b, "j", ob);
  int d =
      lb_let(b, "d", load(L, dy, at2(L, V(L, n), out, add(L, o0, V(L, j)))));
  int l = lb_for(b, "l", width);
  lb_accum(b, acc, add(L, mul(L, V(L, j), I(L, width)), V(L, l)),
           mul(L, x_temp(L->p, d),
               load(L, x, at2(L, V(L, n), in, add(L, i0, V(L, l))))));
  close(L, 3);
  j = lb_for(b, "j", ob);
  l = lb_for(b, "l", width);
  lb_store(b, dw, at2(L, add(L, o0, V(L, j)), in, add(L, i0, V(L, l))),
           load(L, acc, add(L, mul(L, V(L, j), I(L, width)), V(L, l))));
  close(L, 2);
}

int lower_dense_dw_tiled(Lower *L, Buffer *dw, Buffer *x, Buffer *dy) {
  const Node *of = L->node->of;
  int64_t in = of->in.v[0]->shape.d[0], out = of->shape.d[0];
  DenseSchedule s = schedule_dense(in, out, DENSE_WEIGHT, L->p->tile);
  describe(L, &s, DENSE_WEIGHT);
  if (!s.tiled)
    return 0;
  LoopBuilder *b = &L->b;
  Buffer *acc = loop_local(L->p, b->k, "acc", s.ob * s.width);
  int ob = lb_for(b, "ob", out / s.ob);
  Expr *o0 = mul(L, V(L, ob), I(L, s.ob));
  if (s.tiles > 0) {
    int t = lb_for(b, "t", s.tiles);
    dw_piece(L, acc, dw, x, dy, o0, mul(L, V(L, t), I(L, s.width)), s.width,
             s.ob, in, out);
    close(L, 1);
  }
  if (s.rem > 0)
    dw_piece(L, acc, dw, x, dy, o0, I(L, s.tiles * s.width), s.rem, s.ob, in,
             out);
  close(L, 1);
  return 1;
}
