/* Tiled convolution nests, built as their schedule (schedule.h) says:
 *
 *   forward   for each sample, group, output row and block of output
 *             channels, tiles of output columns are accumulated in a
 *             local array over input channels and taps, then stored.
 *             conv_dx at stride 1 is the same nest: a forward convolution
 *             of dy, padded by d(k - 1) - p, with the kernel's input and
 *             output channels swapped and its taps reversed.
 *   weight    for each block of output channels, input channel and kernel
 *   gradient  row, lanes of column sums for every kw tap are accumulated
 *             over samples and output rows, then summed into dw.
 *
 * Rows and columns whose windows reach into the padding get bounds checks;
 * the interior has none. When the schedule says so, the forward nest first
 * copies its input zero-padded into a scratch activation (split into the
 * stride's phases at a column stride above 1) and needs no checks; at
 * stride 1 its tiles then run along the flattened rows. Every output
 * element of the forward nest sums its bias, then channels and taps, in
 * the plain nest's order. */
#include "lower_impl.h"
#include "schedule.h"

typedef struct Conv {
  Buffer *x, *y, *w, *bias; /* bias: NULL starts from zero */
  Shape xs, ys;             /* per sample */
  ConvGeom g;
  int flip; /* conv_dx: the weight of (oc, ic, kh, kw) is the forward
               kernel's (ic, oc, KH-1-kh, KW-1-kw) */
  ConvSchedule s;
  Buffer *acc;
  int n, grp; /* loop variables: sample, group (-1: one group) */
  int64_t wq; /* the input's rows are split into phases of this length */
} Conv;

static Expr *group_base(Lower *L, const Conv *c, int64_t per) {
  return c->grp >= 0 ? mul(L, V(L, c->grp), I(L, per)) : I(L, 0);
}

/* The weight for local output channel ocl, local input channel icl. */
static Expr *weight(Lower *L, const Conv *c, Expr *ocl, Expr *icl, Expr *kh,
                    Expr *kw) {
  const ConvGeom *g = &c->g;
  int64_t Og = g->O / g->groups, Cg = g->C / g->groups;
  Expr *pair;
  if (c->flip) {
    pair = add(L, mul(L, add(L, group_base(L, c, Cg), icl), I(L, Og)), ocl);
    kh = sub(L, I(L, g->KH - 1), kh);
    kw = sub(L, I(L, g->KW - 1), kw);
  } else {
    pair = add(L, mul(L, add(L, group_base(L, c, Og), ocl), I(L, Cg)), icl);
  }
  Expr *e = add(L, mul(L, pair, I(L, g->KH)), kh);
  return load(L, c->w, add(L, mul(L, e, I(L, g->KW)), kw));
}

/* The guard lo <= coordinate < hi of positions [first, last) along an
 * axis, taps included; constant true in the interior. */
static Expr *axis_guard(Lower *L, Expr *coord, int64_t in, int64_t first,
                        int64_t last, int64_t s, int64_t p, int64_t k,
                        int64_t d) {
  return in_range(L, coord, 0, in, first * s - p,
                  (last - 1) * s - p + (k - 1) * d);
}

/* Forward: output columns [col, col + width) of row oh for the block of
 * output channels starting at local channel ocl0. Rows [r0, r1) and
 * columns [c0, c1) bound the guards' ranges. */
static void fwd_tile(Lower *L, Conv *c, Expr *oh, Expr *col, int64_t width,
                     Expr *ocl0, int64_t r0, int64_t r1, int64_t c0,
                     int64_t c1) {
  const ConvGeom *g = &c->g;
  int64_t Og = g->O / g->groups, Cg = g->C / g->groups, ocb = c->s.ocb;
  LoopBuilder *b = &L->b;
  Expr *ocx0 = add(L, group_base(L, c, Og), ocl0);
  int j = lb_for(b, "j", ocb);
  int i = lb_for(b, "i", width);
  Expr *at = add(L, mul(L, V(L, j), I(L, width)), V(L, i));
  lb_store(b, c->acc, at,
           c->bias ? load(L, c->bias, add(L, ocx0, V(L, j))) : F(L, 0));
  close(L, 2);
  int ic = lb_for(b, "ic", Cg);
  int kh = lb_for(b, "kh", g->KH);
  Expr *ih = add(L, sub(L, mul(L, oh, I(L, g->sh)), I(L, g->ph)),
                 mul(L, V(L, kh), I(L, g->dh)));
  int gh =
      open_if(L, axis_guard(L, ih, g->H, r0, r1, g->sh, g->ph, g->KH, g->dh));
  int kw = lb_for(b, "kw", g->KW);
  j = lb_for(b, "j", ocb);
  int wv =
      lb_let(b, "wv",
             weight(L, c, add(L, ocl0, V(L, j)), V(L, ic), V(L, kh), V(L, kw)));
  i = lb_for(b, "i", width);
  Expr *iw =
      add(L, sub(L, mul(L, add(L, col, V(L, i)), I(L, g->sw)), I(L, g->pw)),
          mul(L, V(L, kw), I(L, g->dw)));
  int gw =
      open_if(L, axis_guard(L, iw, g->W, c0, c1, g->sw, g->pw, g->KW, g->dw));
  if (c->wq) { /* tap kw reads phase kw*dw % sw, shifted by kw*dw / sw */
    Expr *tap = mul(L, V(L, kw), I(L, g->dw));
    iw = add(L,
             add(L, mul(L, x_bin(L->p, X_MOD, tap, I(L, g->sw)), I(L, c->wq)),
                 add(L, col, V(L, i))),
             dvd(L, tap, I(L, g->sw)));
  }
  Expr *icx = add(L, group_base(L, c, Cg), V(L, ic));
  lb_accum(b, c->acc, add(L, mul(L, V(L, j), I(L, width)), V(L, i)),
           mul(L, load(L, c->x, idx(L, V(L, c->n), icx, ih, iw, c->xs)),
               x_temp(L->p, wv)));
  close(L, gw + 1 + 1 + 1 + gh + 1 + 1);
  j = lb_for(b, "j", ocb);
  i = lb_for(b, "i", width);
  Expr *yat = idx(L, V(L, c->n), add(L, ocx0, V(L, j)), oh,
                  add(L, col, V(L, i)), c->ys);
  lb_store(b, c->y, yat,
           lower_epilogue(
               L,
               load(L, c->acc, add(L, mul(L, V(L, j), I(L, width)), V(L, i))),
               add(L, ocx0, V(L, j)), yat));
  close(L, 2);
}

/* Flat (stride 1, no padding): positions [p0, p0 + width) of every row
 * of the block's channels, each tap reading in[p + kh*dh*W + kw*dw]; the
 * positions past a row's last output column are not stored. */
static void flat_tile(Lower *L, Conv *c, Expr *p0, int64_t width, Expr *ocl0) {
  const ConvGeom *g = &c->g;
  int64_t Og = g->O / g->groups, Cg = g->C / g->groups, ocb = c->s.ocb;
  LoopBuilder *b = &L->b;
  Expr *ocx0 = add(L, group_base(L, c, Og), ocl0);
  int j = lb_for(b, "j", ocb);
  int i = lb_for(b, "i", width);
  lb_store(b, c->acc, add(L, mul(L, V(L, j), I(L, width)), V(L, i)),
           c->bias ? load(L, c->bias, add(L, ocx0, V(L, j))) : F(L, 0));
  close(L, 2);
  int ic = lb_for(b, "ic", Cg);
  int kh = lb_for(b, "kh", g->KH);
  int kw = lb_for(b, "kw", g->KW);
  j = lb_for(b, "j", ocb);
  int wv =
      lb_let(b, "wv",
             weight(L, c, add(L, ocl0, V(L, j)), V(L, ic), V(L, kh), V(L, kw)));
  i = lb_for(b, "i", width);
  Expr *icx = add(L, group_base(L, c, Cg), V(L, ic));
  Expr *at = add(L, add(L, p0, V(L, i)), mul(L, V(L, kw), I(L, g->dw)));
  lb_accum(b, c->acc, add(L, mul(L, V(L, j), I(L, width)), V(L, i)),
           mul(L,
               load(L, c->x,
                    idx(L, V(L, c->n), icx, mul(L, V(L, kh), I(L, g->dh)), at,
                        c->xs)),
               x_temp(L->p, wv)));
  close(L, 5);
  j = lb_for(b, "j", ocb);
  i = lb_for(b, "i", width);
  int pv = lb_let(b, "p", add(L, p0, V(L, i)));
  Expr *p = x_itemp(L->p, pv);
  Expr *col = x_bin(L->p, X_MOD, p, I(L, g->W));
  lb_if(b, x_bin(L->p, X_LT, col, I(L, g->OW)));
  Expr *yat = idx(L, V(L, c->n), add(L, ocx0, V(L, j)), dvd(L, p, I(L, g->W)),
                  col, c->ys);
  lb_store(b, c->y, yat,
           lower_epilogue(
               L,
               load(L, c->acc, add(L, mul(L, V(L, j), I(L, width)), V(L, i))),
               add(L, ocx0, V(L, j)), yat));
  close(L, 3);
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* The accumulators: the widest piece of a row. */
static int64_t acc_width(const ConvSchedule *s, int64_t out) {
  return max64(max64(s->width, s->rem), max64(s->col0, out - s->col1));
}

/* The input, zero-padded into a scratch buffer: rows and columns exactly
 * those the windows reach. The convolution then reads it unguarded. */
static void pad_input(Lower *L, Conv *c) {
  const ConvGeom *g = &c->g;
  ConvGeom p = padded_geom(g);
  int64_t S = c->s.phases > 1 ? c->s.phases : 1, wq = (p.W + S - 1) / S;
  Shape ps = {3, {g->C, p.H, S * wq, 0}};
  Buffer *pad = lower_scratch(L, "padded", ps);
  LoopBuilder *b = &L->b;
  int n = c->s.parallel == PAR_SAMPLES ? lb_parallel_for(b, "n", -1)
                                       : lb_for(b, "n", -1);
  int ch = lb_for(b, "c", g->C);
  int r = lb_for(b, "h", p.H);
  int phase = S > 1 ? lb_for(b, "r", S) : -1;
  int q = lb_for(b, "w", wq);
  /* the padded column q * S + r */
  Expr *pc =
      phase >= 0 ? add(L, mul(L, V(L, q), I(L, S)), V(L, phase)) : V(L, q);
  Expr *ih = sub(L, V(L, r), I(L, g->ph)), *iw = sub(L, pc, I(L, g->pw));
  Expr *gh = in_range(L, ih, 0, g->H, -g->ph, p.H - 1 - g->ph);
  Expr *gw = in_range(L, iw, 0, g->W, -g->pw, S * wq - 1 - g->pw);
  Expr *in = gh->k == X_INT   ? gw
             : gw->k == X_INT ? gh
                              : x_bin(L->p, X_AND, gh, gw);
  Expr *at =
      phase >= 0 ? add(L, mul(L, V(L, phase), I(L, wq)), V(L, q)) : V(L, q);
  lb_store(b, pad, idx(L, V(L, n), V(L, ch), V(L, r), at, ps),
           x_select(L->p, in,
                    load(L, c->x, idx(L, V(L, n), V(L, ch), ih, iw, c->xs)),
                    F(L, 0)));
  close(L, 4 + (phase >= 0));
  c->x = pad;
  c->xs = ps;
  c->g = p;
  c->wq = S > 1 ? wq : 0;
}

static void lower_forward(Lower *L, Conv *c) {
  if (c->s.pad_copy)
    pad_input(L, c);
  const ConvGeom *g = &c->g;
  const ConvSchedule *s = &c->s;
  int64_t Og = g->O / g->groups;
  LoopBuilder *b = &L->b;
  c->acc = loop_local(L->p, b->k, "acc", s->ocb * acc_width(s, g->OW));
  /* samples or blocks of output channels outermost: either writes apart,
   * so threads can share them out; a block's weights stay in cache for
   * every row */
  int ob;
  if (s->parallel == PAR_SAMPLES) {
    c->n = lb_parallel_for(b, "n", -1);
    ob = lb_for(b, "ob", Og / s->ocb);
  } else {
    ob = s->parallel ? lb_parallel_for(b, "ob", Og / s->ocb)
                     : lb_for(b, "ob", Og / s->ocb);
    c->n = lb_for(b, "n", -1);
  }
  Expr *ocl0 = mul(L, V(L, ob), I(L, s->ocb));
  c->grp = g->groups > 1 ? lb_for(b, "g", g->groups) : -1;
  if (s->flat) {
    if (s->tiles > 0) {
      int t = lb_for(b, "t", s->tiles);
      flat_tile(L, c, mul(L, V(L, t), I(L, s->width)), s->width, ocl0);
      close(L, 1);
    }
    if (s->rem > 0)
      flat_tile(L, c, I(L, s->tiles * s->width), s->rem, ocl0);
    close(L, 2 + (c->grp >= 0));
    return;
  }
  int64_t rows[4] = {0, s->row0, s->row1, g->OH};
  for (int seg = 0; seg < 3; seg++) {
    int64_t r0 = rows[seg], r1 = rows[seg + 1];
    if (r1 <= r0)
      continue;
    int ohv = lb_for(b, "oh", r1 - r0);
    Expr *oh = add(L, V(L, ohv), I(L, r0));
    if (s->col0 > 0)
      fwd_tile(L, c, oh, I(L, 0), s->col0, ocl0, r0, r1, 0, s->col0);
    if (s->tiles > 0) {
      int t = lb_for(b, "t", s->tiles);
      fwd_tile(L, c, oh, add(L, mul(L, V(L, t), I(L, s->width)), I(L, s->col0)),
               s->width, ocl0, r0, r1, s->col0, s->col1);
      close(L, 1);
    }
    if (s->rem > 0)
      fwd_tile(L, c, oh, I(L, s->col0 + s->tiles * s->width), s->rem, ocl0, r0,
               r1, s->col0, s->col1);
    if (s->col1 < g->OW)
      fwd_tile(L, c, oh, I(L, s->col1), g->OW - s->col1, ocl0, r0, r1, s->col1,
               g->OW);
    close(L, 1);
  }
  close(L, 2 + (c->grp >= 0));
}

static ConvGeom geom(const Node *of) {
  const Attrs *at = &of->at;
  Shape xs = of->in.v[0]->shape, ys = of->shape;
  ConvGeom g = {at->groups,
                xs.d[0],
                xs.d[1],
                xs.d[2],
                ys.d[0],
                ys.d[1],
                ys.d[2],
                at->k[0],
                at->k[1],
                at->s[0],
                at->s[1],
                at->p[0],
                at->p[1],
                at->d[0] ? at->d[0] : 1,
                at->d[1] ? at->d[1] : 1};
  return g;
}

static void describe(Lower *L, const ConvSchedule *s, ConvPass pass) {
  L->b.k->schedule = schedule_describe(L->p->a, s, pass);
}

int lower_conv_tiled(Lower *L, Buffer *y, Buffer *x, Buffer *w, Buffer *bias) {
  const Node *nd = L->node;
  Conv c = {.x = x, .y = y, .w = w, .bias = bias, .g = geom(nd)};
  c.xs = nd->in.v[0]->shape;
  c.ys = nd->shape;
  c.s = schedule_conv(&c.g, CONV_FORWARD, L->p->tile);
  if (c.s.tiled)
    c.s.parallel = schedule_parallel(schedule_conv_work(&c.g), L->p->batch,
                                     c.g.O / c.g.groups / c.s.ocb, 1);
  describe(L, &c.s, CONV_FORWARD);
  if (!c.s.tiled)
    return 0;
  lower_forward(L, &c);
  return 1;
}

int lower_conv_dx_tiled(Lower *L, Buffer *dx, Buffer *dy, Buffer *w) {
  const Node *of = L->node->of;
  ConvGeom f = geom(of);
  ConvGeom g = {f.groups,
                f.O,
                f.OH,
                f.OW,
                f.C,
                f.H,
                f.W,
                f.KH,
                f.KW,
                1,
                1,
                f.dh * (f.KH - 1) - f.ph,
                f.dw * (f.KW - 1) - f.pw,
                f.dh,
                f.dw};
  if (f.sh != 1 || f.sw != 1 || g.ph < 0 || g.pw < 0)
    return 0; /* the plain scatter */
  Conv c = {.x = dy, .y = dx, .w = w, .g = g, .flip = 1};
  c.xs = of->shape;
  c.ys = of->in.v[0]->shape;
  c.s = schedule_conv(&g, CONV_FORWARD, L->p->tile);
  if (c.s.tiled)
    c.s.parallel = schedule_parallel(schedule_conv_work(&g), L->p->batch,
                                     g.O / g.groups / c.s.ocb, 1);
  describe(L, &c.s, CONV_FORWARD);
  if (!c.s.tiled)
    return 0;
  lower_forward(L, &c);
  return 1;
}

/* Lanes of each (channel, kw) accumulator of the weight gradient: the
 * tiles', the narrower tile's, and one for the guarded columns. Each
 * piece has lanes of its own, so no two pieces touch the same element
 * with different widths (which would defeat register allocation). */
static int64_t dw_lanes(const ConvSchedule *s, int64_t ow) {
  return s->width + s->rem + (s->col0 > 0 || s->col1 < ow);
}

/* Weight gradient: columns [col, col + width) of row oh into lanes
 * [lane, lane + width) of every (channel, kw) accumulator; guarded
 * columns [c0, c1) go one by one into lane `lane`. */
static void dw_piece(Lower *L, Conv *c, Expr *ih, Expr *oh, Expr *col,
                     int64_t width, int64_t lane, int guarded, Expr *ocl0,
                     Expr *icx, int64_t c0, int64_t c1) {
  const ConvGeom *g = &c->g;
  int64_t Og = g->O / g->groups, lanes = dw_lanes(&c->s, g->OW);
  LoopBuilder *b = &L->b;
  int cv = guarded ? lb_for(b, "ow", width) : -1;
  int j = lb_for(b, "j", c->s.ocb);
  int kw = lb_for(b, "kw", g->KW);
  int l = guarded ? -1 : lb_for(b, "l", width);
  Expr *ow = add(L, col, V(L, guarded ? cv : l));
  Expr *iw = add(L, sub(L, mul(L, ow, I(L, g->sw)), I(L, g->pw)),
                 mul(L, V(L, kw), I(L, g->dw)));
  int gw = guarded ? open_if(L, axis_guard(L, iw, g->W, c0, c1, g->sw, g->pw,
                                           g->KW, g->dw))
                   : 0;
  Expr *slot = add(
      L, mul(L, add(L, mul(L, V(L, j), I(L, g->KW)), V(L, kw)), I(L, lanes)),
      I(L, lane));
  if (!guarded)
    slot = add(L, slot, V(L, l));
  Expr *ocx = add(L, add(L, group_base(L, c, Og), ocl0), V(L, j));
  lb_accum(b, c->acc, slot,
           mul(L, load(L, c->y, idx(L, V(L, c->n), ocx, oh, ow, c->ys)),
               load(L, c->x, idx(L, V(L, c->n), icx, ih, iw, c->xs))));
  close(L, gw + 3);
}

int lower_conv_dw_tiled(Lower *L, Buffer *dw, Buffer *x, Buffer *dy) {
  const Node *of = L->node->of;
  /* c.y is dy, read; the result goes to dw */
  Conv c = {.x = x, .y = dy, .g = geom(of)};
  c.xs = of->in.v[0]->shape;
  c.ys = of->shape;
  const ConvGeom *g = &c.g;
  c.s = schedule_conv(g, CONV_WEIGHT, L->p->tile);
  if (c.s.tiled)
    c.s.parallel = schedule_parallel(
        schedule_conv_work(g), L->p->batch,
        g->groups > 1 ? g->groups : g->O / g->groups / c.s.ocb, 0);
  describe(L, &c.s, CONV_WEIGHT);
  if (!c.s.tiled)
    return 0;
  const ConvSchedule *s = &c.s;
  int64_t Og = g->O / g->groups, Cg = g->C / g->groups;
  int64_t lanes = dw_lanes(s, g->OW), size = s->ocb * g->KW * lanes;
  LoopBuilder *b = &L->b;
  c.acc = loop_local(L->p, b->k, "acc", size);
  /* groups and blocks of output channels write apart */
  c.grp = g->groups <= 1 ? -1
          : s->parallel  ? lb_parallel_for(b, "g", g->groups)
                         : lb_for(b, "g", g->groups);
  int ob = s->parallel && c.grp < 0 ? lb_parallel_for(b, "ob", Og / s->ocb)
                                    : lb_for(b, "ob", Og / s->ocb);
  Expr *ocl0 = mul(L, V(L, ob), I(L, s->ocb));
  int ic = lb_for(b, "ic", Cg);
  Expr *icx = add(L, group_base(L, &c, Cg), V(L, ic));
  int kh = lb_for(b, "kh", g->KH);
  int a = lb_for(b, "a", size);
  lb_store(b, c.acc, V(L, a), F(L, 0));
  close(L, 1);
  c.n = lb_for(b, "n", -1);
  int ohv = lb_for(b, "oh", g->OH);
  Expr *oh = V(L, ohv);
  Expr *ih = add(L, sub(L, mul(L, oh, I(L, g->sh)), I(L, g->ph)),
                 mul(L, V(L, kh), I(L, g->dh)));
  int gh =
      open_if(L, axis_guard(L, ih, g->H, 0, g->OH, g->sh, g->ph, g->KH, g->dh));
  int64_t edge = s->width + s->rem; /* the guarded columns' lane */
  if (s->col0 > 0)
    dw_piece(L, &c, ih, oh, I(L, 0), s->col0, edge, 1, ocl0, icx, 0, s->col0);
  if (s->tiles > 0) {
    int t = lb_for(b, "t", s->tiles);
    dw_piece(L, &c, ih, oh,
             add(L, mul(L, V(L, t), I(L, s->width)), I(L, s->col0)), s->width,
             0, 0, ocl0, icx, s->col0, s->col1);
    close(L, 1);
  }
  if (s->rem > 0)
    dw_piece(L, &c, ih, oh, I(L, s->col0 + s->tiles * s->width), s->rem,
             s->width, 0, ocl0, icx, s->col0, s->col1);
  if (s->col1 < g->OW)
    dw_piece(L, &c, ih, oh, I(L, s->col1), g->OW - s->col1, edge, 1, ocl0, icx,
             s->col1, g->OW);
  close(L, gh + 2);
  int j = lb_for(b, "j", s->ocb);
  int kw = lb_for(b, "kw", g->KW);
  Expr *base =
      mul(L, add(L, mul(L, V(L, j), I(L, g->KW)), V(L, kw)), I(L, lanes));
  int sum = lb_let(b, "sum", F(L, 0));
  int l = lb_for(b, "l", lanes);
  lb_set(b, sum,
         add(L, x_temp(L->p, sum), load(L, c.acc, add(L, base, V(L, l)))));
  close(L, 1);
  Expr *ocx = add(L, add(L, group_base(L, &c, Og), ocl0), V(L, j));
  Expr *at =
      add(L, mul(L, add(L, mul(L, ocx, I(L, Cg)), V(L, ic)), I(L, g->KH)),
          V(L, kh));
  lb_store(b, dw, add(L, mul(L, at, I(L, g->KW)), V(L, kw)), x_temp(L->p, sum));
  close(L, 2 + 3 + 1 + (c.grp >= 0));
  return 1;
}
