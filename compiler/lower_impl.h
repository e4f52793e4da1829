/* What the lowering files share: the state of lowering one node and small
 * builders for index arithmetic. Private to lower*.c. */
#ifndef CNNC_LOWER_IMPL_H
#define CNNC_LOWER_IMPL_H

#include "fuse.h"
#include "lower.h"

/* What a fused kernel (fuse.h) applies to every value its head computes
 * before storing it: a batch norm's per-channel scale and shift (computed
 * at the kernel's start), a residual added at the same element, and an
 * activation. */
typedef struct Epilogue {
  Buffer *scale, *shift;
  Buffer *residual;
  const Node *act;
  const Node *act_dx; /* backward: times its activation's derivative */
  Buffer *value;      /* at the activation's value there */
} Epilogue;

typedef struct Lower {
  Program *p;
  LoopBuilder b;
  const Node *node;
  const Epilogue *ep; /* NULL outside a fused kernel's head */
  int ep_used;        /* the head's nest applied ep in its stores */
} Lower;

static inline Expr *I(Lower *L, int64_t v) { return x_int(L->p, v); }
static inline Expr *F(Lower *L, double v) { return x_float(L->p, v); }
static inline Expr *V(Lower *L, int var) { return x_var(L->p, var); }
static inline Expr *add(Lower *L, Expr *a, Expr *b) {
  return x_bin(L->p, X_ADD, a, b);
}
static inline Expr *sub(Lower *L, Expr *a, Expr *b) {
  return x_bin(L->p, X_SUB, a, b);
}
static inline Expr *mul(Lower *L, Expr *a, Expr *b) {
  return x_bin(L->p, X_MUL, a, b);
}
static inline Expr *dvd(Lower *L, Expr *a, Expr *b) {
  return x_bin(L->p, X_DIV, a, b);
}
static inline Expr *load(Lower *L, Buffer *b, Expr *i) {
  return x_load(L->p, b, i);
}

/* The element (n, c, h, w) of a per-sample [C, H, W] tensor. */
static inline Expr *idx(Lower *L, Expr *n, Expr *c, Expr *h, Expr *w, Shape s) {
  int64_t C = s.d[0], H = s.rank == 3 ? s.d[1] : 1,
          W = s.rank == 3 ? s.d[2] : 1;
  Expr *e = add(L, mul(L, n, I(L, C)), c);
  e = add(L, mul(L, e, I(L, H)), h);
  return add(L, mul(L, e, I(L, W)), w);
}

/* The same element where the buffer keeps channels innermost
 * (Buffer.hwc): sample n's rows, each row's columns, each column's C
 * channels. */
static inline Expr *idx_hwc(Lower *L, Expr *n, Expr *c, Expr *h, Expr *w,
                            Shape s) {
  int64_t C = s.d[0], H = s.rank == 3 ? s.d[1] : 1,
          W = s.rank == 3 ? s.d[2] : 1;
  Expr *e = add(L, mul(L, n, I(L, H)), h);
  e = add(L, mul(L, e, I(L, W)), w);
  return add(L, mul(L, e, I(L, C)), c);
}

/* Element (n, c, h, w) of buffer b, of per-sample shape s, in b's layout:
 * planes, or channels innermost (Buffer.hwc). */
static inline Expr *idx_of(Lower *L, const Buffer *b, Expr *n, Expr *c, Expr *h,
                           Expr *w, Shape s) {
  return b->hwc ? idx_hwc(L, n, c, h, w, s) : idx(L, n, c, h, w, s);
}

/* The element i of sample n, the sample seen as flat. */
static inline Expr *flat(Lower *L, Expr *n, Expr *i, Shape s) {
  return add(L, mul(L, n, I(L, shape_numel(s))), i);
}

/* a && b, where either may be the integer 1 of a test that always holds
 * (in_range's), which is then left out. */
static inline Expr *and_of(Lower *L, Expr *a, Expr *b) {
  return a->k == X_INT ? b : b->k == X_INT ? a : x_bin(L->p, X_AND, a, b);
}

/* lo <= e < hi, leaving out halves that always hold. */
static inline Expr *in_range(Lower *L, Expr *e, int64_t lo, int64_t hi,
                             int64_t min_e, int64_t max_e) {
  Expr *c = I(L, 1);
  if (min_e < lo)
    c = x_bin(L->p, X_LE, I(L, lo), e);
  if (max_e >= hi) {
    c = and_of(L, c, x_bin(L->p, X_LT, e, I(L, hi)));
  }
  return c;
}

static inline int open_if(Lower *L, Expr *cond) {
  if (cond->k == X_INT)
    return 0;
  lb_if(&L->b, cond);
  return 1;
}

static inline void close(Lower *L, int n) {
  while (n-- > 0)
    lb_end(&L->b);
}

/* Sliding windows (conv, pools): the input coordinate of output o and
 * kernel tap k along one axis, and whether it can leave the input. */
static inline Expr *window_coord(Lower *L, int o, int k, const Attrs *at,
                                 int ax) {
  return add(L, sub(L, mul(L, V(L, o), I(L, at->s[ax])), I(L, at->p[ax])),
             mul(L, V(L, k), I(L, at->d[ax] ? at->d[ax] : 1)));
}

static inline Expr *window_guard(Lower *L, Expr *ih, Expr *iw, const Attrs *at,
                                 Shape x, Shape y) {
  int64_t dh = at->d[0] ? at->d[0] : 1, dw = at->d[1] ? at->d[1] : 1;
  int64_t maxh = (y.d[1] - 1) * at->s[0] - at->p[0] + (at->k[0] - 1) * dh;
  int64_t maxw = (y.d[2] - 1) * at->s[1] - at->p[1] + (at->k[1] - 1) * dw;
  return and_of(L, in_range(L, ih, 0, x.d[1], -at->p[0], maxh),
                in_range(L, iw, 0, x.d[2], -at->p[1], maxw));
}

/* A transposed convolution: the output position input i's tap k reaches
 * along one axis, and whether that can leave the output (xs: its input,
 * ys: its output). */
static inline Expr *deconv_out(Lower *L, int i, int k, const Attrs *at,
                               int ax) {
  return add(L, sub(L, mul(L, V(L, i), I(L, at->s[ax])), I(L, at->p[ax])),
             mul(L, V(L, k), I(L, at->d[ax])));
}

static inline Expr *deconv_guard(Lower *L, Expr *oh, Expr *ow, const Attrs *at,
                                 Shape xs, Shape ys) {
  int64_t maxh =
      (xs.d[1] - 1) * at->s[0] - at->p[0] + (at->k[0] - 1) * at->d[0];
  int64_t maxw =
      (xs.d[2] - 1) * at->s[1] - at->p[1] + (at->k[1] - 1) * at->d[1];
  Expr *gh = in_range(L, oh, 0, ys.d[1], -at->p[0], maxh);
  Expr *gw = in_range(L, ow, 0, ys.d[2], -at->p[1], maxw);
  return and_of(L, gh, gw);
}

/* Output rows (or columns) from, from + 1, ... of a pool, count of
 * them. */
typedef struct Span {
  int64_t from, count;
} Span;

/* The outputs of a pool whose windows lie inside x along axis ax (0:
 * rows, 1: columns): those from the first whose window starts at 0 or
 * past it to the last whose window ends inside. */
static inline Span inside(const Attrs *at, Shape xs, Shape ys, int ax) {
  int64_t s = at->s[ax], p = at->p[ax], d = at->d[ax] ? at->d[ax] : 1;
  int64_t reach = (at->k[ax] - 1) * d, in = xs.d[1 + ax], out = ys.d[1 + ax];
  int64_t lo = (p + s - 1) / s, hi = in - 1 + p - reach;
  hi = hi < 0 ? -1 : hi / s;
  if (hi > out - 1)
    hi = out - 1;
  if (lo > out)
    lo = out;
  return (Span){lo, hi >= lo ? hi - lo + 1 : 0};
}

/* A pool's outputs in five spans of rows r[i] by columns q[i]: the rows
 * whose windows reach past the top, then in the rows between, the
 * columns whose windows reach past the left, those whose windows lie
 * inside x, those reaching past the right; then the rows reaching past
 * the bottom. Only the third needs no test of its taps. */
static inline void pool_spans(const Attrs *at, Shape xs, Shape ys, Span r[5],
                              Span q[5]) {
  Span in_r = inside(at, xs, ys, 0), in_q = inside(at, xs, ys, 1);
  Span cols = {0, ys.d[2]};
  Span top = {0, in_r.count ? in_r.from : ys.d[1]};
  Span bottom = {in_r.from + in_r.count,
                 in_r.count ? ys.d[1] - in_r.from - in_r.count : 0};
  Span left = {0, in_q.count ? in_q.from : ys.d[2]};
  Span right = {in_q.from + in_q.count,
                in_q.count ? ys.d[2] - in_q.from - in_q.count : 0};
  Span rr[5] = {top, in_r, in_r, in_r, bottom};
  Span qq[5] = {cols, left, in_q, right, cols};
  for (int i = 0; i < 5; i++) {
    r[i] = rr[i];
    q[i] = qq[i];
  }
}

/* Tap (kh, kw) of output (oh, ow), in span rows r by columns q of a
 * pool's outputs: where its window starts (hs, ws) and the tap falls
 * (ih, iw) in x, and the test of x's edges it needs, an integer 1 where
 * every window of the span lies inside (for open_if). */
typedef struct SpanTap {
  Expr *hs, *ws, *ih, *iw, *guard;
} SpanTap;

static inline SpanTap span_tap(Lower *L, const Attrs *at, Shape xs, Span r,
                               Span q, Expr *oh, Expr *ow, int kh, int kw) {
  int64_t dh = at->d[0] ? at->d[0] : 1, dw = at->d[1] ? at->d[1] : 1;
  SpanTap t;
  t.hs = sub(L, mul(L, oh, I(L, at->s[0])), I(L, at->p[0]));
  t.ws = sub(L, mul(L, ow, I(L, at->s[1])), I(L, at->p[1]));
  t.ih = add(L, t.hs, mul(L, V(L, kh), I(L, dh)));
  t.iw = add(L, t.ws, mul(L, V(L, kw), I(L, dw)));
  /* the taps' least and greatest coordinates over the span */
  int64_t h0 = r.from * at->s[0] - at->p[0],
          h1 = (r.from + r.count - 1) * at->s[0] - at->p[0] +
               (at->k[0] - 1) * dh;
  int64_t w0 = q.from * at->s[1] - at->p[1],
          w1 = (q.from + q.count - 1) * at->s[1] - at->p[1] +
               (at->k[1] - 1) * dw;
  t.guard = and_of(L, in_range(L, t.ih, 0, xs.d[1], h0, h1),
                   in_range(L, t.iw, 0, xs.d[2], w0, w1));
  return t;
}

/* Average pooling's divisor for the window that starts at (hs, ws): its
 * taps, padding included, as PyTorch counts them, but not the part of a
 * ceil-mode window that hangs past the padding. */
static inline Expr *avg_divisor(Lower *L, const Attrs *at, Shape xs, Expr *hs,
                                Expr *ws) {
  if (!at->ceil)
    return I(L, at->k[0] * at->k[1]);
  Expr *hn =
      x_bin(L->p, X_MIN, I(L, at->k[0]), sub(L, I(L, xs.d[1] + at->p[0]), hs));
  Expr *wn =
      x_bin(L->p, X_MIN, I(L, at->k[1]), sub(L, I(L, xs.d[2] + at->p[1]), ws));
  return mul(L, hn, wn);
}

/* Adaptive (and global) average pooling's window of output (oh, ow), as
 * PyTorch's: rows [h0, h1) and columns [w0, w1) of input x, at most KH x
 * KW of them. */
typedef struct AdaptiveWindow {
  Expr *h0, *h1, *w0, *w1;
  int64_t KH, KW;
} AdaptiveWindow;

static inline AdaptiveWindow adaptive_window(Lower *L, int oh, int ow, Shape x,
                                             Shape y) {
  int64_t H = x.d[1], W = x.d[2], OH = y.d[1], OW = y.d[2];
  AdaptiveWindow a;
  a.KH = (H + OH - 1) / OH + 1;
  a.KW = (W + OW - 1) / OW + 1;
  a.KH = a.KH > H ? H : a.KH;
  a.KW = a.KW > W ? W : a.KW;
  a.h0 = dvd(L, mul(L, V(L, oh), I(L, H)), I(L, OH));
  a.h1 =
      dvd(L, add(L, mul(L, add(L, V(L, oh), I(L, 1)), I(L, H)), I(L, OH - 1)),
          I(L, OH));
  a.w0 = dvd(L, mul(L, V(L, ow), I(L, W)), I(L, OW));
  a.w1 =
      dvd(L, add(L, mul(L, add(L, V(L, ow), I(L, 1)), I(L, W)), I(L, OW - 1)),
          I(L, OW));
  return a;
}

/* An activation-arena buffer of shape s per sample that only the kernel
 * being lowered uses, named after its node and what. */
Buffer *lower_scratch(Lower *L, const char *what, Shape s);
/* The same, numel elements for the whole batch. */
Buffer *lower_scratch_once(Lower *L, const char *what, int64_t numel);
/* A buffer of numel floats in the state's packed area, kept between
 * calls: the node's weights packed once (Program.packed_ok). */
Buffer *lower_packed(Lower *L, int64_t numel);
/* Whether inference packs the weights of convolution nd (chan_inner,
 * schedule.h) once and keeps them, for tiles of tile lanes and a batch
 * of batch samples. */
int lower_keeps_packed(const Node *nd, int tile, int64_t batch);
/* Whether convolution nd's tiles in program p could store its outputs
 * channels innermost (Buffer.hwc): channels-innermost tiles, not as
 * windows, in one group (then without a stage, which only spreads
 * stores a plane apart over L1's sets). */
int lower_conv_hwc_out(const Program *p, const Node *nd);
/* Whether they could read its input so: channels-innermost tiles, in one
 * group, that read the input itself (no copy) or a copy made channels
 * innermost (pad_input) or as windows (copy_windows). */
int lower_conv_hwc_in(const Program *p, const Node *nd);
/* Which activations program p keeps channels innermost (lower_layout.c),
 * its buffers made (nbuf, by node id) and before any kernel. */
void lower_layouts(Program *p, const Graph *g, Chain **chain, const int *needed,
                   Buffer **nbuf);

/* The value v of element at (channel ch) of the head's output, as the
 * chain's last node has it; v itself without an epilogue. ch may be NULL
 * when the epilogue has no scale. */
Expr *lower_epilogue(Lower *L, Expr *v, Expr *ch, Expr *at);

/* The epilogue as a pass over y's planes (s per sample): those of sample n
 * (a loop variable already open), or of every sample (n < 0), their loop
 * shared out among threads when parallel. For a head whose nest does not
 * apply it in its stores: the plain nests, which accumulate in y itself,
 * and the convolution tiles that leave it for later (lower_conv.c,
 * epilogue_later). */
void lower_epilogue_pass(Lower *L, Buffer *y, Shape s, int n, int parallel);

/* base raised to e, as powf(base, e) but, when e is a multiple of 1/4 up
 * to 2 in size, as products of base, its square root and the root of
 * that (within 2 ulps of powf): a call of powf costs about 15 ns and
 * keeps the nest from vectorizing, where sqrtf is one instruction. */
Expr *lower_pow(Lower *L, Expr *base, double e);

/* The epilogue applied in place to rows x width accumulators (row j of
 * channel ch0 + j, or column i of channel ch0 + i when by_column), when it has
 * no residual and ends in tanh; 0 (and nothing built) otherwise. Its clamps and
 * its rational function are three loops: gcc does not vectorize a select whose
 * value feeds arithmetic (under its default trapping math), but does one stored
 * as it is. The stores after it then take the values as they are. */
int lower_epilogue_in_place(Lower *L, Buffer *acc, int64_t rows, int64_t width,
                            Expr *ch0, int by_column);
/* Whether the epilogue ends in tanh and has no residual (what
 * lower_epilogue_in_place takes). */
int lower_epilogue_tanh(const Lower *L);

/* g times the derivative of activation node of, at its value (its output;
 * its input for leaky_relu). */
Expr *lower_act_grad(Lower *L, const Node *of, Expr *value, Expr *g);

/* Convolution nests as their schedule says (lower_conv.c); each returns 0
 * when the schedule is the plain nest, which the caller then builds. */
int lower_conv_tiled(Lower *L, Buffer *y, Buffer *x, Buffer *w, Buffer *bias);
int lower_conv_dx_tiled(Lower *L, Buffer *dx, Buffer *dy, Buffer *w);
int lower_conv_dw_tiled(Lower *L, Buffer *dw, Buffer *x, Buffer *dy);
/* The same for dense layers (lower_dense.c). */
int lower_dense_tiled(Lower *L, Buffer *y, Buffer *x, Buffer *w, Buffer *bias);
int lower_dense_dx_tiled(Lower *L, Buffer *dx, Buffer *dy, Buffer *w);
int lower_dense_dw_tiled(Lower *L, Buffer *dw, Buffer *x, Buffer *dy);

/* Lowers an internal (autodiff) operator or a forward operator in training
 * mode; returns 0 when the node has no kernel of its own. */
int lower_grad_node(Lower *L, Buffer *y, Buffer **in, Buffer **ps);
/* The forward kernels whose training mode differs (batch norm, dropout)
 * and the loss; returns 0 when the node computes as in eval mode. */
int lower_train_node(Lower *L, Buffer *y, Buffer **in, Buffer **ps);

#endif
