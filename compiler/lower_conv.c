/* Tiled convolution nests, built as their schedule (schedule.h) says:
 *
 *   forward   for each sample, group and block of output channels, tiles
 *             of positions along the flattened output rows are
 *             accumulated in a local array over input channels and taps,
 *             then stored. With padding or a stride, the input is first
 *             copied zero-padded into a scratch buffer, split into planes
 *             of the stride's phases, so that every tap of a tile reads a
 *             contiguous run and no window needs a guard.
 *             conv_dx is the same nest: a forward convolution of dy,
 *             padded by d(k - 1) - p, with the kernel's input and output
 *             channels swapped and its taps reversed; at a stride above 1,
 *             one such convolution per phase of dx's rows and columns,
 *             each with the taps that reach it (dx_phases), or where a
 *             phase cannot be one, dy spread apart with zeros in the
 *             copy.
 *   weight    for each block of output channels, input channel, kernel
 *   gradient  row and block of kw taps, lanes of dot products of dy
 *             (copied along the same positions, zero where no output is)
 *             with each tap's run of the copy are accumulated over samples
 *             and tiles, then summed into dw.
 *
 * Every output element of the forward nest sums its bias, then channels
 * and taps, in the plain nest's order. */
#include "lower_impl.h"
#include "schedule.h"

#include <inttypes.h>

typedef struct Conv {
  Buffer *x, *y, *w, *bias; /* bias: NULL starts from zero */
  Shape xs, ys;             /* per sample */
  ConvGeom g;
  int flip; /* conv_dx: the weight of (oc, ic, kh, kw) is the forward
               kernel's (ic, oc, KH-1-kh, KW-1-kw) */
  /* conv_dx by stride phases (dx_phases): tap k of this convolution's
   * kernel is tap tap0 + step * k of the flipped kernel, of full[] taps,
   * and its output rows and columns go out0 + ostep * i of y's (ostep 0:
   * every row and column in order) */
  int64_t full[2], tap0[2], step[2], out0[2], ostep[2];
  ConvSchedule s;
  Buffer *acc;
  Buffer *packed;  /* chan_inner: the weights, packed (pack_weights) */
  int kept;        /* inference: the weights packed into the state's packed
                      area once after they change, not each call */
  Buffer *partial; /* chan_inner in passes (icb): the sums between them */
  int later;       /* the tiles store their sums as they are and a pass
                      over y's planes applies the epilogue
                      (epilogue_later, lower_epilogue_pass) */
  Expr *tile;      /* inference: the tile's index, when the tiles fetch
                      the next pass's weights (prefetch_next); NULL */
  int64_t tiles;   /* ... and how many */
  Buffer *stage;   /* a group's outputs: the chunk's channels, each a run
                      of the group's positions (schedule.h, stage) */
  Expr *stage_at;  /* where the tile's first output of the block's first
                      channel goes in stage; NULL: the tile stores to y */
  int n, grp;      /* loop variables: sample (-1: the windows' positions
                      span the batch), group (-1: one group) */
} Conv;

static Expr *group_base(Lower *L, const Conv *c, int64_t per) {
  return c->grp >= 0 ? mul(L, V(L, c->grp), I(L, per)) : I(L, 0);
}

/* The weight for local output channel ocl, local input channel icl. */
static Expr *weight(Lower *L, const Conv *c, Expr *ocl, Expr *icl, Expr *kh,
                    Expr *kw) {
  const ConvGeom *g = &c->g;
  int64_t Og = g->O / g->groups, Cg = g->C / g->groups;
  int64_t KH = g->KH, KW = g->KW;
  Expr *pair;
  if (c->flip) {
    pair = add(L, mul(L, add(L, group_base(L, c, Cg), icl), I(L, Og)), ocl);
    KH = c->full[0];
    KW = c->full[1];
    kh = sub(L, I(L, KH - 1),
             add(L, I(L, c->tap0[0]), mul(L, kh, I(L, c->step[0]))));
    kw = sub(L, I(L, KW - 1),
             add(L, I(L, c->tap0[1]), mul(L, kw, I(L, c->step[1]))));
  } else {
    pair = add(L, mul(L, add(L, group_base(L, c, Og), ocl), I(L, Cg)), icl);
  }
  Expr *e = add(L, mul(L, pair, I(L, KH)), kh);
  return load(L, c->w, add(L, mul(L, e, I(L, KW)), kw));
}

static Expr *sample(Lower *L, const Conv *c) {
  return c->n >= 0 ? V(L, c->n) : I(L, 0);
}

/* Where output (row, col) of channel ch of sample n goes in y. */
static Expr *y_at(Lower *L, const Conv *c, Expr *n, Expr *ch, Expr *row,
                  Expr *col) {
  if (c->ostep[0]) {
    row = add(L, mul(L, row, I(L, c->ostep[0])), I(L, c->out0[0]));
    col = add(L, mul(L, col, I(L, c->ostep[1])), I(L, c->out0[1]));
  }
  return idx_of(L, c->y, n, ch, row, col, c->ys);
}

/* A tap's offset along an axis in the copy's planes: the plane's phase
 * (the offset modulo the stride) and the shift within it. */
static Expr *tap_phase(Lower *L, Expr *off, int64_t phases) {
  return phases > 1 ? x_bin(L->p, X_MOD, off, I(L, phases)) : I(L, 0);
}

static Expr *tap_shift(Lower *L, Expr *off, int64_t phases) {
  return phases > 1 ? dvd(L, off, I(L, phases)) : off;
}

/* Element (row, col) of channel lane of block blk (schedule.h,
 * hwc_block; without blocks, blk is 0 and lane the channel) in phase
 * plane phase of sample n in the copy with channels innermost (hwc). */
static Expr *hwc_run(Lower *L, const Conv *c, Expr *n, Expr *phase, Expr *row,
                     Expr *col, Expr *blk, Expr *lane) {
  const ConvSchedule *s = &c->s;
  int64_t B = s->hwc_block ? s->hwc_block : c->g.C;
  if (s->hwc_block)
    n = add(L, mul(L, blk, I(L, L->p->batch)), n);
  Expr *at = add(L, mul(L, n, I(L, s->phase_h * s->phase_w)), phase);
  at = add(L, mul(L, at, I(L, s->plane_h)), row);
  at = add(L, mul(L, at, I(L, s->plane_w)), col);
  return add(L, mul(L, at, I(L, B)), lane);
}

/* The same for channel ch. */
static Expr *hwc(Lower *L, const Conv *c, Expr *n, Expr *phase, Expr *row,
                 Expr *col, Expr *ch) {
  int64_t B = c->s.hwc_block;
  if (!B)
    return hwc_run(L, c, n, phase, row, col, I(L, 0), ch);
  return hwc_run(L, c, n, phase, row, col, dvd(L, ch, I(L, B)),
                 x_bin(L->p, X_MOD, ch, I(L, B)));
}

/* What tap (kh, kw) of input channel icx reads at position pos (schedule.h,
 * positions): its phase's plane, shifted by the tap. */
static Expr *tap_read(Lower *L, const Conv *c, Expr *icx, Expr *kh, Expr *kw,
                      Expr *pos) {
  const ConvGeom *g = &c->g;
  int64_t PH = c->s.phase_h, PW = c->s.phase_w;
  Expr *offh = mul(L, kh, I(L, g->dh)), *offw = mul(L, kw, I(L, g->dw));
  if (c->s.hwc) { /* the copy, channels innermost */
    Expr *phase = PH * PW > 1 ? add(L, mul(L, tap_phase(L, offh, PH), I(L, PW)),
                                    tap_phase(L, offw, PW))
                              : I(L, 0);
    return load(L, c->x,
                hwc(L, c, V(L, c->n), phase, tap_shift(L, offh, PH),
                    add(L, pos, tap_shift(L, offw, PW)), icx));
  }
  if (c->x->hwc) /* x itself, channels innermost (lower_layout.c); the
                    column runs past the row as pos does */
    return load(L, c->x,
                idx_hwc(L, V(L, c->n), icx, offh, add(L, pos, offw), c->xs));
  Expr *plane = icx;
  if (PH * PW > 1)
    plane = add(
        L,
        mul(L, add(L, mul(L, icx, I(L, PH)), tap_phase(L, offh, PH)), I(L, PW)),
        tap_phase(L, offw, PW));
  return load(L, c->x,
              idx(L, V(L, c->n), plane, tap_shift(L, offh, PH),
                  add(L, pos, tap_shift(L, offw, PW)), c->xs));
}

/* Whether position p (column col of its row) is an output: one of its
 * row's first OW columns and, when the last tile runs past the positions
 * into the copy's zero rows, not past them. */
static Expr *is_output(Lower *L, const Conv *c, Expr *p, Expr *col) {
  const ConvSchedule *s = &c->s;
  Expr *keep = x_bin(L->p, X_LT, col, I(L, c->g.OW));
  if (s->pad_copy && s->tiles * s->width > s->positions)
    keep = x_bin(L->p, X_AND, keep, x_bin(L->p, X_LT, p, I(L, s->positions)));
  return keep;
}

/* The stores of a tile of whole rows (width a multiple of plane_w, p0 at
 * a row's start): each row's first OW columns, a run whose loop has no
 * test, so it vectorizes without masked stores (on Zen 3, 20 cycles
 * each: LeNet-5's c1 spent a fifth of its time in them). Rows past the
 * last output row, in the copy's zero rows, are skipped whole. */
static void aligned_rows(Lower *L, Conv *c, Expr *p0, int64_t width, Expr *ocx0,
                         int in_place) {
  const ConvSchedule *s = &c->s;
  LoopBuilder *b = &L->b;
  int64_t ocb = s->ocb, rows = width / s->plane_w;
  int j = lb_for(b, "j", ocb);
  int r = lb_for(b, "r", rows);
  Expr *row = x_itemp(
      L->p, lb_let(b, "row", add(L, dvd(L, p0, I(L, s->plane_w)), V(L, r))));
  int past = s->tiles * width > s->positions;
  if (past)
    lb_if(b, x_bin(L->p, X_LT, row, I(L, c->g.OH)));
  int i = lb_for(b, "i", c->g.OW);
  Expr *at = add(
      L,
      add(L, mul(L, V(L, j), I(L, width)), mul(L, V(L, r), I(L, s->plane_w))),
      V(L, i));
  Expr *yat = y_at(L, c, sample(L, c), add(L, ocx0, V(L, j)), row, V(L, i));
  Expr *v = load(L, c->acc, at);
  lb_store(b, c->y, yat,
           in_place ? v : lower_epilogue(L, v, add(L, ocx0, V(L, j)), yat));
  close(L, 3 + past);
}

/* Positions [p0, p0 + width) of every output row of the block's channels,
 * tap (kh, kw) reading its plane at p + shift; the positions past a row's
 * last output column, past the last output, or below from (stored by the
 * tile before), are not stored. */
static void flat_tile(Lower *L, Conv *c, Expr *p0, int64_t width, Expr *ocl0,
                      int64_t from) {
  const ConvGeom *g = &c->g;
  const ConvSchedule *s = &c->s;
  int64_t Og = g->O / g->groups, Cg = g->C / g->groups, ocb = s->ocb;
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
  lb_accum(b, c->acc, add(L, mul(L, V(L, j), I(L, width)), V(L, i)),
           mul(L, tap_read(L, c, icx, V(L, kh), V(L, kw), add(L, p0, V(L, i))),
               x_temp(L->p, wv)));
  close(L, 5);
  /* The stores: row by row when the schedule says so (aligned_rows when
   * the tile is whole rows; else each row a run of columns whose address
   * and test are affine in i, which C compilers vectorize as masked
   * stores, over the up to one more row than the tile spans), else
   * position by position. */
  int in_place =
      c->later || lower_epilogue_in_place(L, c->acc, ocb, width, ocx0, 0);
  if (s->row_stores && width % s->plane_w == 0 && from == 0) {
    aligned_rows(L, c, p0, width, ocx0, in_place);
    return;
  }
  int64_t rows = s->row_stores ? (width - 1) / s->plane_w + 2 : 0;
  j = lb_for(b, "j", ocb);
  int r = rows ? lb_for(b, "r", rows) : -1;
  int rv = rows
               ? lb_let(b, "row", add(L, dvd(L, p0, I(L, s->plane_w)), V(L, r)))
               : -1;
  i = lb_for(b, "i", width);
  int pv = lb_let(b, "p", add(L, p0, V(L, i)));
  Expr *p = x_itemp(L->p, pv);
  Expr *row, *col, *keep;
  if (rows) {
    row = x_itemp(L->p, rv);
    col = x_itemp(L->p,
                  lb_let(b, "col", sub(L, p, mul(L, row, I(L, s->plane_w)))));
    keep = x_bin(L->p, X_AND, x_bin(L->p, X_LE, I(L, 0), col),
                 is_output(L, c, p, col));
  } else {
    row = dvd(L, p, I(L, s->plane_w));
    col = x_bin(L->p, X_MOD, p, I(L, s->plane_w));
    keep = is_output(L, c, p, col);
  }
  if (from > 0)
    keep = x_bin(L->p, X_AND, keep, x_bin(L->p, X_LE, I(L, from), p));
  lb_if(b, keep);
  Expr *yat = y_at(L, c, sample(L, c), add(L, ocx0, V(L, j)), row, col);
  Expr *v = load(L, c->acc, add(L, mul(L, V(L, j), I(L, width)), V(L, i)));
  lb_store(b, c->y, yat,
           in_place ? v : lower_epilogue(L, v, add(L, ocx0, V(L, j)), yat));
  close(L, rows ? 4 : 3);
}

/* Where the packed weights (pack_weights) hold the weight of local input
 * channel icl, tap (kh, kw) and channel j of block bx (counted across
 * groups). */
static Expr *packed_at(Lower *L, const Conv *c, Expr *bx, Expr *icl, Expr *kh,
                       Expr *kw, Expr *j) {
  const ConvGeom *g = &c->g;
  Expr *at = add(L, mul(L, bx, I(L, g->C / g->groups)), icl);
  at = add(L, mul(L, at, I(L, g->KH)), kh);
  at = add(L, mul(L, at, I(L, g->KW)), kw);
  return add(L, mul(L, at, I(L, c->s.ocb)), j);
}

/* The sum so far of channel ocx0 + j at position p0 + i (loop variables
 * i, j), between passes over the input channels (schedule.h, icb): each
 * block's in the tile's order, a run per position (channel by channel,
 * a tile's loads and stores were gathers, 10-20% of ResNet-18's layer4
 * convolutions in 8 passes). */
static Expr *partial_at(Lower *L, const Conv *c, Expr *ocx0, Expr *p0, int i,
                        int j) {
  int64_t run = c->s.tiles * c->s.width;
  Expr *at = add(L, mul(L, sample(L, c), I(L, c->g.O)), ocx0);
  Expr *in = add(L, mul(L, add(L, p0, V(L, i)), I(L, c->s.ocb)), V(L, j));
  return add(L, mul(L, at, I(L, run)), in);
}

/* A 64-byte cache line, in floats; the most tiles a pass may have for
 * its tiles to fetch the next pass's weights (prefetch_next). */
enum { LINE_FLOATS = 16, PREFETCH_TILES = 64 };

/* Inference reads the kept packed weights from memory: a ResNet's
 * layer4 convolution holds 9.4 MB of them, and the model's do not stay
 * in cache from one call to the next. A pass's first tile, the one that
 * brings a run of the block's weights in, waited on memory at every tap
 * while the others found them in L2: ResNet-18's layer4 convolutions
 * took 2.9-3.0 ms a layer (batch 1, one thread, Xeon), 1.9 with weights
 * that stayed in cache. So each tile of a pass also fetches its share of
 * the run the next pass reads (the block's next input channels, or the
 * next chunk's block), spread over the steps of its loop k (of steps):
 * 2.0-2.2 ms; its 14 x 14 layer3 2.03 -> 1.85-1.89. Only where a pass
 * has few tiles (ResNet's 7 x 7 and 14 x 14 at batch 1, 9 and 37): over
 * many the first tile's wait is a small part of the pass (VGG16's 28 x
 * 28 layers, 140 tiles, measured the same either way, within the noise).
 * The pass's weights are run taps of ocb floats. */
static void prefetch_next(Lower *L, const Conv *c, Expr *bx, int icc, Expr *k,
                          int64_t steps, int64_t run) {
  if (!c->tile || c->tiles > PREFETCH_TILES)
    return;
  const ConvGeom *g = &c->g;
  int64_t ocb = c->s.ocb, K = g->C / g->groups * g->KH * g->KW;
  int64_t lines = run * ocb / LINE_FLOATS,
          share = (lines + c->tiles - 1) / c->tiles, /* lines a tile */
      each = (share + steps - 1) / steps,            /* lines a step */
      per = share < steps ? steps / share : 1;       /* steps a line */
  Expr *pass = icc >= 0 ? add(L, V(L, icc), I(L, 1)) : I(L, 1);
  Expr *next =
      mul(L, add(L, mul(L, bx, I(L, K)), mul(L, pass, I(L, run))), I(L, ocb));
  /* after a block's last pass, the next chunk's block */
  int64_t skip = (c->s.chunk - 1) * K * ocb;
  if (skip && icc >= 0)
    next = add(L, next,
               x_select(L->p, x_bin(L->p, X_EQ, V(L, icc), I(L, K / run - 1)),
                        I(L, skip), I(L, 0)));
  else if (skip)
    next = add(L, next, I(L, skip));
  Expr *first = add(L, mul(L, c->tile, I(L, share)),
                    dvd(L, mul(L, k, I(L, each)), I(L, per)));
  for (int64_t u = 0; u < each; u++) {
    Expr *at = x_itemp(
        L->p, lb_let(&L->b, "ahead",
                     add(L, next,
                         mul(L, add(L, first, I(L, u)), I(L, LINE_FLOATS)))));
    lb_prefetch(&L->b, c->packed,
                x_bin(L->p, X_MIN, at, I(L, c->packed->size - 1)));
  }
}

/* The same tile with the block's channels innermost (schedule.h,
 * chan_inner): acc[i * ocb + j] for position p0 + i and channel ocl0 + j,
 * each tap the position's input times the block's packed weights. */
static void chan_tile(Lower *L, Conv *c, Expr *p0, int64_t width, Expr *blk,
                      int64_t from, int icc) {
  const ConvGeom *g = &c->g;
  const ConvSchedule *s = &c->s;
  int64_t Og = g->O / g->groups, Cg = g->C / g->groups, ocb = s->ocb;
  int64_t icb = s->icb ? s->icb : Cg, last = Cg / icb - 1;
  LoopBuilder *b = &L->b;
  Expr *ocx0 = add(L, group_base(L, c, Og), mul(L, blk, I(L, ocb)));
  int i = lb_for(b, "i", width);
  int j = lb_for(b, "j", ocb);
  Expr *at = add(L, mul(L, V(L, i), I(L, ocb)), V(L, j));
  /* the sums so far, between passes over the input channels */
  Expr *part = icc >= 0 ? partial_at(L, c, ocx0, p0, i, j) : NULL;
  Expr *start = c->bias ? load(L, c->bias, add(L, ocx0, V(L, j))) : F(L, 0);
  if (part)
    start = x_select(L->p, x_bin(L->p, X_EQ, V(L, icc), I(L, 0)), start,
                     load(L, c->partial, part));
  lb_store(b, c->acc, at, start);
  close(L, 2);
  Expr *bx = add(L, group_base(L, c, Og / ocb), blk);
  int xv;
  if (s->windows) {
    /* a window's channels and taps are one run, as are the packed
     * weights' (one group): one loop, not three of which the innermost
     * is a kernel row's few taps */
    int64_t K = Cg * g->KH * g->KW, run = icb * g->KH * g->KW;
    int k = lb_for(b, "k", run);
    Expr *kx =
        icc >= 0 ? add(L, mul(L, V(L, icc), I(L, run)), V(L, k)) : V(L, k);
    prefetch_next(L, c, bx, icc, V(L, k), run, run);
    i = lb_for(b, "i", width);
    xv =
        lb_let(b, "xv",
               load(L, c->x, add(L, mul(L, add(L, p0, V(L, i)), I(L, K)), kx)));
    j = lb_for(b, "j", ocb);
    Expr *wat =
        add(L, mul(L, add(L, mul(L, bx, I(L, K)), kx), I(L, ocb)), V(L, j));
    lb_accum(b, c->acc, add(L, mul(L, V(L, i), I(L, ocb)), V(L, j)),
             mul(L, x_temp(L->p, xv), load(L, c->packed, wat)));
    close(L, 3);
  } else {
    int ic = lb_for(b, "ic", icb);
    prefetch_next(L, c, bx, icc, V(L, ic), icb, icb * g->KH * g->KW);
    int kh = lb_for(b, "kh", g->KH);
    int kw = lb_for(b, "kw", g->KW);
    i = lb_for(b, "i", width);
    Expr *icl =
        icc >= 0 ? add(L, mul(L, V(L, icc), I(L, icb)), V(L, ic)) : V(L, ic);
    Expr *icx = add(L, group_base(L, c, Cg), icl);
    xv = lb_let(b, "xv",
                tap_read(L, c, icx, V(L, kh), V(L, kw), add(L, p0, V(L, i))));
    j = lb_for(b, "j", ocb);
    at = add(L, mul(L, V(L, i), I(L, ocb)), V(L, j));
    lb_accum(b, c->acc, at,
             mul(L, x_temp(L->p, xv),
                 load(L, c->packed,
                      packed_at(L, c, bx, icl, V(L, kh), V(L, kw), V(L, j)))));
    close(L, 5);
  }
  if (part) { /* not the last pass: keep the sums; the last: store */
    lb_if(b, x_bin(L->p, X_LT, V(L, icc), I(L, last)));
    i = lb_for(b, "i", width);
    j = lb_for(b, "j", ocb);
    part = partial_at(L, c, ocx0, p0, i, j);
    lb_store(b, c->partial, part,
             load(L, c->acc, add(L, mul(L, V(L, i), I(L, ocb)), V(L, j))));
    close(L, 3);
    lb_if(b, x_bin(L->p, X_EQ, V(L, icc), I(L, last)));
  }
  int in_place =
      c->later || lower_epilogue_in_place(L, c->acc, width, ocb, ocx0, 1);
  i = lb_for(b, "i", width);
  Expr *p = x_itemp(L->p, lb_let(b, "p", add(L, p0, V(L, i))));
  Expr *n = sample(L, c), *row, *col, *keep;
  if (s->windows) { /* p is (sample, row, column) of the caller's samples */
    int64_t P = g->OH * g->OW;
    n = dvd(L, p, I(L, P));
    Expr *in = x_bin(L->p, X_MOD, p, I(L, P));
    row = dvd(L, in, I(L, g->OW));
    col = x_bin(L->p, X_MOD, in, I(L, g->OW));
    keep = x_bin(L->p, X_LT, p, mul(L, x_n(L->p), I(L, P)));
  } else {
    row = dvd(L, p, I(L, s->plane_w));
    col = x_bin(L->p, X_MOD, p, I(L, s->plane_w));
    keep = is_output(L, c, p, col);
  }
  if (from > 0)
    keep = x_bin(L->p, X_AND, keep, x_bin(L->p, X_LE, I(L, from), p));
  lb_if(b, keep);
  j = lb_for(b, "j", ocb);
  Expr *yat = y_at(L, c, n, add(L, ocx0, V(L, j)), row, col);
  Expr *v = load(L, c->acc, add(L, mul(L, V(L, i), I(L, ocb)), V(L, j)));
  Expr *out = in_place ? v : lower_epilogue(L, v, add(L, ocx0, V(L, j)), yat);
  if (c->stage_at) /* channel j's run in stage */
    lb_store(b, c->stage,
             add(L, c->stage_at,
                 add(L, mul(L, V(L, j), I(L, s->stage * width)), V(L, i))),
             out);
  else
    lb_store(b, c->y, yat, out);
  close(L, 3 + (part != NULL));
}

/* The stage's outputs to y (schedule.h, stage): each channel's run of
 * the group of tiles starting at position p0, its positions before end
 * (the tiles' own; the last, shifted tile stores its own) that are
 * outputs, written in order along y's plane. The run is at most a row
 * of positions long (schedule_stage), so it lies in the row of p0 and
 * the next: each a loop along the run whose test and address are affine
 * in q, which the compilers vectorize (a division and a remainder for
 * each output cost ResNet-18's conv1 1.3 ms). */
static void flush_stage(Lower *L, Conv *c, Expr *p0, Expr *ch0, int64_t chans,
                        int64_t end) {
  const ConvSchedule *s = &c->s;
  LoopBuilder *b = &L->b;
  int64_t run = s->stage * s->width, pw = s->plane_w, OW = c->g.OW;
  if (end > s->positions)
    end = s->positions;
  Expr *row = x_itemp(L->p, lb_let(b, "row", dvd(L, p0, I(L, pw))));
  Expr *col0 =
      x_itemp(L->p, lb_let(b, "col", sub(L, p0, mul(L, row, I(L, pw)))));
  Expr *left = x_itemp(L->p, lb_let(b, "left", sub(L, I(L, end), p0)));
  int j = lb_for(b, "j", chans);
  for (int next = 0; next < 2; next++) {
    int q = lb_for(b, "q", run);
    Expr *col = add(L, col0, V(L, q));
    if (next)
      col = sub(L, col, I(L, pw));
    Expr *keep = x_bin(L->p, X_AND, x_bin(L->p, X_LT, V(L, q), left),
                       x_bin(L->p, X_LT, col, I(L, OW)));
    if (next)
      keep = x_bin(L->p, X_AND, x_bin(L->p, X_LE, I(L, 0), col), keep);
    lb_if(b, keep);
    lb_store(b, c->y,
             y_at(L, c, sample(L, c), add(L, ch0, V(L, j)),
                  next ? add(L, row, I(L, 1)) : row, col),
             load(L, c->stage, add(L, mul(L, V(L, j), I(L, run)), V(L, q))));
    close(L, 2);
  }
  close(L, 1);
}

/* The weights in the order chan_tile reads them: for each group and
 * block of ocb output channels, input channel and tap, the block's ocb
 * weights in a run, read by every tile. Written each call, or in
 * inference (c->kept) into the state by the first call after the weights
 * change (lower_packed), on one thread: at batch 1 the pass each call
 * cost ResNet-18's 14 x 14 convolutions 7% (2.20 -> 2.05 ms a layer)
 * and ResNet-50 a tenth (96 -> 86 ms; Xeon, AVX-512, one thread). */
static void pack_weights(Lower *L, Conv *c) {
  const ConvGeom *g = &c->g;
  int64_t Og = g->O / g->groups, Cg = g->C / g->groups, ocb = c->s.ocb;
  int64_t size = g->O * Cg * g->KH * g->KW;
  Buffer *pk =
      c->kept ? lower_packed(L, size) : lower_scratch_once(L, "packed", size);
  LoopBuilder *b = &L->b;
  if (c->kept)
    lb_if(b, x_bin(L->p, X_EQ, load(L, L->p->packed_ok, I(L, 0)), I(L, 0)));
  /* groups, or else blocks, write apart: threads share them out where
   * they share the nest's work (ResNet-18's layer4 convolutions at batch
   * 8 on two threads, least of 3 runs: 8.6-9.3 -> 7.6-8.4 ms) */
  int par = c->s.parallel != PAR_NONE && !c->kept;
  c->grp = g->groups > 1 ? par ? lb_parallel_for(b, "g", g->groups)
                               : lb_for(b, "g", g->groups)
                         : -1;
  int ob = par && c->grp < 0 ? lb_parallel_for(b, "ob", Og / ocb)
                             : lb_for(b, "ob", Og / ocb);
  /* the destination in order: the runs of the block's ocb channels come
   * from ocb rows of the kernel read side by side (a run at a time, each
   * store a line apart, the forward pass's took a third as long as
   * ResNet-18's layer4 convolutions at batch 8); conv_dx's flipped
   * kernel reads its runs' weights a few taps apart */
  int ic = lb_for(b, "ic", Cg);
  int kh = lb_for(b, "kh", g->KH);
  int kw = lb_for(b, "kw", g->KW);
  int j = lb_for(b, "j", ocb);
  Expr *bx = add(L, group_base(L, c, Og / ocb), V(L, ob));
  lb_store(b, pk, packed_at(L, c, bx, V(L, ic), V(L, kh), V(L, kw), V(L, j)),
           weight(L, c, add(L, mul(L, V(L, ob), I(L, ocb)), V(L, j)), V(L, ic),
                  V(L, kh), V(L, kw)));
  close(L, 5 + (c->grp >= 0) + c->kept);
  c->packed = pk;
}

/* Columns of a row the copy with channels innermost writes at a time:
 * their C channels (16 KB at most) stay in L1 while each channel's run
 * is read. A whole row of VGG16's 224 x 224 layers (58 KB with the
 * padding) did not, and each of the 64 channels' passes over it missed
 * at every column: its features.2 41.2 -> 37.0 ms a call (one thread,
 * batch 1, with schedule_stage's stores; the copy by hand in the
 * generated code, the builds alternated). */
static int64_t hwc_columns(int64_t C) {
  int64_t cols = (16 << 10) / 4 / C;
  return cols < 1 ? 1 : cols > 16 ? 16 : cols;
}

/* The input, zero-padded into a scratch buffer of planes (schedule.h):
 * rows and columns exactly those the windows reach, then zero rows. The
 * convolution then reads it unguarded. */
static void pad_input(Lower *L, Conv *c) {
  const ConvGeom *g = &c->g;
  const ConvSchedule *s = &c->s;
  int64_t PH = s->phase_h, PW = s->phase_w;
  Shape ps = {3, {g->C * PH * PW, s->plane_h, s->plane_w, 0}};
  Buffer *pad = lower_scratch(L, "padded", ps);
  LoopBuilder *b = &L->b;
  /* channels innermost: a row at a time, each channel's run of it read
   * in order and written C apart, in blocks of columns whose copy stays
   * in L1 (hwc_columns) */
  int hw = s->hwc, ch = -1, a = -1, n;
  if (s->parallel == PAR_TILES) {
    /* the tiles' threads share out the copy too, by rows (channels
     * innermost) or channels: at batch 1 it had run on one of them */
    if (hw)
      a = lb_parallel_for(b, "a", s->plane_h);
    else
      ch = lb_parallel_for(b, "c", g->C);
    n = lb_for(b, "n", -1);
  } else {
    /* (the channel-lane weight gradients share out blocks, not samples,
     * but their copies' samples are apart too) */
    n = s->parallel == PAR_SAMPLES ||
                (s->parallel && (s->dw_chan || s->dw_ochan))
            ? lb_parallel_for(b, "n", -1)
            : lb_for(b, "n", -1);
  }
  if (!hw && ch < 0)
    ch = lb_for(b, "c", g->C);
  int rh = PH > 1 ? lb_for(b, "rh", PH) : -1;
  int rw = PW > 1 ? lb_for(b, "rw", PW) : -1;
  if (a < 0)
    a = lb_for(b, "a", s->plane_h);
  /* (from an input itself channels innermost, a row's columns in order,
   * each column's channels a run) */
  int runs = hw && c->x->hwc;
  int64_t cols = hw && !runs ? hwc_columns(g->C) : s->plane_w;
  if (cols >= s->plane_w)
    cols = s->plane_w;
  int qb =
      cols < s->plane_w ? lb_for(b, "qb", (s->plane_w + cols - 1) / cols) : -1;
  if (hw && !runs)
    ch = lb_for(b, "c", g->C);
  int q = lb_for(b, "q", cols);
  if (runs)
    ch = lb_for(b, "c", g->C);
  Expr *qx = qb >= 0 ? add(L, mul(L, V(L, qb), I(L, cols)), V(L, q)) : V(L, q);
  int guard = qb >= 0 && s->plane_w % cols;
  if (guard)
    lb_if(b, x_bin(L->p, X_LT, qx, I(L, s->plane_w)));
  /* the padded row a * PH + rh and column q * PW + rw */
  Expr *pr = rh >= 0 ? add(L, mul(L, V(L, a), I(L, PH)), V(L, rh)) : V(L, a);
  Expr *pc = rw >= 0 ? add(L, mul(L, qx, I(L, PW)), V(L, rw)) : qx;
  Expr *ih = sub(L, pr, I(L, g->ph)), *iw = sub(L, pc, I(L, g->pw));
  Expr *gh = in_range(L, ih, 0, g->H, -g->ph, PH * s->plane_h - 1 - g->ph);
  Expr *gw = in_range(L, iw, 0, g->W, -g->pw, PW * s->plane_w - 1 - g->pw);
  Expr *in = and_of(L, gh, gw);
  /* an input spread apart: the rows and columns between its own are 0
   * (the padded coordinate shifted by a multiple of u past the padding,
   * so that the remainder's operand is not negative) */
  int64_t u[2] = {g->uh > 1 ? g->uh : 1, g->uw > 1 ? g->uw : 1};
  int64_t lead[2] = {g->ph, g->pw};
  Expr **at[2] = {&ih, &iw}, *pos[2] = {pr, pc};
  for (int ax = 0; ax < 2; ax++) {
    if (u[ax] == 1)
      continue;
    int64_t shift = (lead[ax] + u[ax] - 1) / u[ax] * u[ax] - lead[ax];
    Expr *on = x_bin(
        L->p, X_EQ,
        x_bin(L->p, X_MOD, add(L, pos[ax], I(L, shift)), I(L, u[ax])), I(L, 0));
    in = and_of(L, in, on);
    *at[ax] = dvd(L, *at[ax], I(L, u[ax]));
  }
  Expr *plane = V(L, ch);
  if (rh >= 0)
    plane = add(L, mul(L, plane, I(L, PH)), V(L, rh));
  if (rw >= 0)
    plane = add(L, mul(L, plane, I(L, PW)), V(L, rw));
  Expr *phase = rh >= 0 ? V(L, rh) : I(L, 0);
  if (rw >= 0)
    phase = add(L, mul(L, phase, I(L, PW)), V(L, rw));
  lb_store(
      b, pad,
      hw ? hwc(L, c, V(L, n), phase, V(L, a), qx, V(L, ch))
         : idx(L, V(L, n), plane, V(L, a), qx, ps),
      x_select(L->p, in,
               load(L, c->x, idx_of(L, c->x, V(L, n), V(L, ch), ih, iw, c->xs)),
               F(L, 0)));
  close(L, 4 + (rh >= 0) + (rw >= 0) + (qb >= 0) + guard);
  c->x = pad;
  c->xs = ps;
}

/* The input as the windows of the batch's outputs (schedule.h,
 * windows): position p, of sample p / (OH OW), holds its window's input
 * channels and taps in a run, zero where the window reaches the padding
 * and throughout past the caller's samples (the last tile reads there). */
static void copy_windows(Lower *L, Conv *c) {
  const ConvGeom *g = &c->g;
  const ConvSchedule *s = &c->s;
  int64_t P = g->OH * g->OW, K = g->C * g->KH * g->KW;
  int64_t all = s->tiles * s->width;
  Buffer *win = lower_scratch_once(L, "windows", all * K);
  LoopBuilder *b = &L->b;
  int q = s->parallel ? lb_parallel_for(b, "p", all) : lb_for(b, "p", all);
  Expr *p = V(L, q);
  Expr *n = x_itemp(L->p, lb_let(b, "n", dvd(L, p, I(L, P))));
  Expr *at = x_itemp(L->p, lb_let(b, "at", x_bin(L->p, X_MOD, p, I(L, P))));
  Expr *oh = dvd(L, at, I(L, g->OW)), *ow = x_bin(L->p, X_MOD, at, I(L, g->OW));
  int ic = lb_for(b, "ic", g->C);
  int kh = lb_for(b, "kh", g->KH);
  int kw = lb_for(b, "kw", g->KW);
  Expr *ih = add(L, sub(L, mul(L, oh, I(L, g->sh)), I(L, g->ph)),
                 mul(L, V(L, kh), I(L, g->dh)));
  Expr *iw = add(L, sub(L, mul(L, ow, I(L, g->sw)), I(L, g->pw)),
                 mul(L, V(L, kw), I(L, g->dw)));
  Expr *in = x_bin(L->p, X_LT, p, mul(L, x_n(L->p), I(L, P)));
  Expr *gh = in_range(L, ih, 0, g->H, -g->ph,
                      (g->OH - 1) * g->sh - g->ph + (g->KH - 1) * g->dh);
  Expr *gw = in_range(L, iw, 0, g->W, -g->pw,
                      (g->OW - 1) * g->sw - g->pw + (g->KW - 1) * g->dw);
  in = and_of(L, and_of(L, in, gh), gw);
  Expr *k = add(
      L, mul(L, add(L, mul(L, V(L, ic), I(L, g->KH)), V(L, kh)), I(L, g->KW)),
      V(L, kw));
  lb_store(b, win, add(L, mul(L, p, I(L, K)), k),
           x_select(L->p, in,
                    load(L, c->x, idx_of(L, c->x, n, V(L, ic), ih, iw, c->xs)),
                    F(L, 0)));
  close(L, 4);
  c->x = win;
}

/* conv_dx's kernel copied into the forward convolution's order (each
 * output channel's input channels and taps in a run), for the tiles that
 * read it weight by weight: read in place, the flipped kernel's weights
 * for consecutive input channels lie a whole block of channels apart,
 * and ResNet-18's layer4 input gradients took 2.5 times its forward
 * convolutions. */
static void unflip_weights(Lower *L, Conv *c) {
  const ConvGeom *g = &c->g;
  int64_t Og = g->O / g->groups, Cg = g->C / g->groups;
  Buffer *f = lower_scratch_once(L, "unflipped", g->O * Cg * g->KH * g->KW);
  LoopBuilder *b = &L->b;
  c->grp = g->groups > 1 ? lb_for(b, "g", g->groups) : -1;
  int o = lb_for(b, "o", Og);
  int ic = lb_for(b, "ic", Cg);
  int kh = lb_for(b, "kh", g->KH);
  int kw = lb_for(b, "kw", g->KW);
  Expr *at =
      add(L, mul(L, add(L, group_base(L, c, Og), V(L, o)), I(L, Cg)), V(L, ic));
  at = add(L, mul(L, at, I(L, g->KH)), V(L, kh));
  lb_store(b, f, add(L, mul(L, at, I(L, g->KW)), V(L, kw)),
           weight(L, c, V(L, o), V(L, ic), V(L, kh), V(L, kw)));
  close(L, 4 + (c->grp >= 0));
  c->w = f;
  c->flip = 0;
}

/* Whether the tiles store their sums as they are and a pass over y's
 * planes applies the epilogue after them: in channels-innermost tiles
 * where it reads other tensors at each element (a residual, an
 * activation's value), whose stores are a position's channels, a plane
 * apart, and each such read a gather too, where the pass reads runs
 * (ResNet-18's conv_dx+add+act_dx at batch 8 took 15-40% longer than its
 * conv_dx+act_dx); in positions-innermost tiles where it is tanh, whose
 * constants, held in registers across the tile's loops, took gcc's
 * accumulators' (AVX-512: LeNet-5's c3 7.4 -> 5.5 us, a microbenchmark
 * of the emitted function; AVX2 within the noise). Not for dx_phases'
 * convolutions, which store a phase of y each. */
static int epilogue_later(const Lower *L, const Conv *c) {
  if (!L->ep || c->ostep[0] || c->y->hwc) /* (hwc: y's and the residual's
                                             channels are runs) */
    return 0;
  return c->s.chan_inner ? L->ep->residual || L->ep->value
                         : lower_epilogue_tanh(L);
}

static void lower_forward(Lower *L, Conv *c) {
  c->later = epilogue_later(L, c);
  if (c->s.chan_inner)
    pack_weights(L, c);
  else if (c->flip)
    unflip_weights(L, c);
  if (c->s.windows)
    copy_windows(L, c);
  else if (c->s.pad_copy)
    pad_input(L, c);
  const ConvGeom *g = &c->g;
  const ConvSchedule *s = &c->s;
  int64_t Og = g->O / g->groups;
  LoopBuilder *b = &L->b;
  c->acc = loop_local(L->p, b->k, "acc", s->ocb * s->width);
  if (s->stage)
    c->stage = loop_local(L->p, b->k, "stage",
                          s->chunk * s->ocb * s->stage * s->width);
  /* Samples or chunks of blocks of output channels outermost: either
   * writes apart, so threads can share them out. Within a chunk the tiles
   * go by once, each through the chunk's blocks: the chunk's weights
   * stay in cache while the input streams through once (schedule.h). */
  int64_t nob = Og / s->ocb, per = s->chunk, chunks = nob / per;
  int ch = -1, tiles_out = s->parallel == PAR_TILES, wins = s->windows;
  c->n = -1;
  if (s->parallel == PAR_SAMPLES) {
    c->n = lb_parallel_for(b, "n", -1);
    if (chunks > 1)
      ch = lb_for(b, "oc", chunks);
  } else if (!tiles_out) {
    if (chunks > 1)
      ch = s->parallel ? lb_parallel_for(b, "oc", chunks)
                       : lb_for(b, "oc", chunks);
    if (!wins)
      c->n = lb_for(b, "n", -1);
  }
  /* without a copy, a last tile that would run past the positions ends
   * at the last one instead */
  int64_t w = s->width, shifted = !s->pad_copy && s->tiles * w > s->positions;
  /* passes over the input channels (schedule.h, icb), each over the tiles */
  int64_t passes = s->icb ? g->C / g->groups / s->icb : 1;
  if (passes > 1) {
    Shape ps = {3, {g->O, 1, s->tiles * w, 0}};
    c->partial = wins ? lower_scratch_once(L, "partial", shape_numel(ps))
                      : lower_scratch(L, "partial", ps);
  }
  for (int last = 0; last < 2; last++) {
    if (last ? !shifted : s->tiles - shifted <= 0)
      continue;
    int t = -1, icc = -1;
    /* tiles, or groups of G of them whose outputs go through the stage */
    int64_t T = s->tiles - shifted, G = last ? 1 : s->stage ? s->stage : 1;
    int64_t groups = (T + G - 1) / G;
    if (tiles_out) { /* tiles, then chunks and samples within each */
      t = last ? -1 : lb_parallel_for(b, G > 1 ? "tg" : "t", groups);
      ch = chunks > 1 ? lb_for(b, "oc", chunks) : -1;
      if (!wins)
        c->n = lb_for(b, "n", -1);
      icc = passes > 1 ? lb_for(b, "icc", passes) : -1;
    } else {
      icc = passes > 1 ? lb_for(b, "icc", passes) : -1;
      if (!last)
        t = lb_for(b, G > 1 ? "tg" : "t", groups);
    }
    Expr *tile = t >= 0 ? V(L, t) : NULL;
    int tt = -1;
    c->stage_at = NULL;
    if (G > 1) {
      tt = lb_for(b, "tt", G);
      tile = x_itemp(L->p,
                     lb_let(b, "t", add(L, mul(L, tile, I(L, G)), V(L, tt))));
      if (T % G)
        lb_if(b, x_bin(L->p, X_LT, tile, I(L, T)));
      c->stage_at = mul(L, V(L, tt), I(L, w));
    }
    Expr *p0 = last ? I(L, s->positions - w) : mul(L, tile, I(L, w));
    c->tile = c->kept && !tiles_out ? tile : NULL;
    c->tiles = T;
    if (wins) /* the tiles of the caller's samples */
      lb_if(b, x_bin(L->p, X_LT, p0, mul(L, x_n(L->p), I(L, g->OH * g->OW))));
    int ob = lb_for(b, "ob", per);
    Expr *blk =
        ch >= 0 ? add(L, mul(L, V(L, ch), I(L, per)), V(L, ob)) : V(L, ob);
    Expr *ocl0 = mul(L, blk, I(L, s->ocb));
    c->grp = g->groups > 1 ? lb_for(b, "g", g->groups) : -1;
    int64_t from = last ? (s->tiles - 1) * w : 0;
    if (G > 1) /* the block's channels in stage */
      c->stage_at = add(L, c->stage_at, mul(L, V(L, ob), I(L, s->ocb * G * w)));
    if (s->chan_inner)
      chan_tile(L, c, p0, w, blk, from, icc);
    else
      flat_tile(L, c, p0, w, ocl0, from);
    close(L, 1 + wins + (c->grp >= 0));
    if (G > 1) {
      close(L, 1 + (T % G != 0));
      if (icc >= 0)
        lb_if(b, x_bin(L->p, X_EQ, V(L, icc), I(L, passes - 1)));
      flush_stage(L, c, mul(L, V(L, t), I(L, G * w)),
                  ch >= 0 ? mul(L, V(L, ch), I(L, per * s->ocb)) : I(L, 0),
                  per * s->ocb, T * w);
      close(L, icc >= 0);
    }
    close(L, (t >= 0) + (icc >= 0) + (tiles_out ? !wins + (ch >= 0) : 0));
  }
  if (!tiles_out)
    close(L, ch >= 0);
  /* each sample's planes while they are in cache, else all at the end */
  int by_sample = !tiles_out && !wins && s->parallel == PAR_SAMPLES;
  if (c->later && by_sample)
    lower_epilogue_pass(L, c->y, c->ys, c->n, 0);
  if (!tiles_out && !wins)
    close(L, 1);
  if (c->later && !by_sample)
    lower_epilogue_pass(L, c->y, c->ys, -1, s->parallel != PAR_NONE);
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
                at->d[1] ? at->d[1] : 1,
                1,
                1};
  return g;
}

static void describe(Lower *L, const ConvSchedule *s, ConvPass pass) {
  L->b.k->schedule = schedule_describe(L->p->a, s, pass);
}

/* The forward nest's tiles for g (conv_dx's too), for tiles of tile
 * lanes and a batch of batch samples; kept: inference, which keeps
 * packed weights. */
static ConvSchedule forward_tiles(const ConvGeom *g, int tile, int64_t batch,
                                  int kept) {
  ConvSchedule s = schedule_conv(g, CONV_FORWARD, tile);
  schedule_windows(g, &s, tile, batch, kept);
  return s;
}

/* Inference, where the program keeps packed weights (lower_keeps_packed). */
static int keeps(const Program *p) { return p->packed_ok && !p->train; }

/* ... then what threads share out and the chunks that takes. */
static ConvSchedule forward_schedule(const Program *p, const ConvGeom *g,
                                     int kept) {
  ConvSchedule s = forward_tiles(g, p->tile, p->batch, kept);
  if (s.tiled) {
    s.parallel = schedule_conv_parallel(g, &s, p->batch);
    schedule_chunk(g, &s);
  }
  return s;
}

/* The schedule lower_conv_tiled gives node nd's forward nest. */
static ConvSchedule node_schedule(const Program *p, const Node *nd,
                                  ConvGeom *g) {
  *g = geom(nd);
  ConvSchedule s = forward_schedule(p, g, keeps(p));
  if (s.tiled)
    schedule_stage(g, &s);
  return s;
}

/* Node nd's schedule where program p may keep activations channels
 * innermost (inference, tiled), in s; whether its tiles are channels
 * innermost, in one group. */
static int layout_schedule(const Program *p, const Node *nd, ConvSchedule *s) {
  if (nd->op != OP_CONV || !p->tile || p->train)
    return 0;
  ConvGeom g;
  *s = node_schedule(p, nd, &g);
  return s->tiled && s->chan_inner && g.groups == 1;
}

int lower_conv_hwc_out(const Program *p, const Node *nd) {
  ConvSchedule s;
  return layout_schedule(p, nd, &s) && !s.windows;
}

int lower_conv_hwc_in(const Program *p, const Node *nd) {
  ConvSchedule s;
  return layout_schedule(p, nd, &s) && !s.hwc_block;
}

int lower_conv_tiled(Lower *L, Buffer *y, Buffer *x, Buffer *w, Buffer *bias) {
  const Node *nd = L->node;
  Conv c = {.x = x, .y = y, .w = w, .bias = bias};
  c.xs = nd->in.v[0]->shape;
  c.ys = nd->shape;
  c.s = node_schedule(L->p, nd, &c.g);
  if (y->hwc) /* a position's channels a run: no set of L1 takes them all */
    c.s.stage = 0;
  /* from an input kept channels innermost, the copy with channels
   * innermost reads runs: no transposition to weigh (schedule.c, hwc) */
  if (x->hwc && c.s.chan_inner && c.s.pad_copy && !c.s.windows)
    c.s.hwc = 1;
  /* inference's weights stay put between calls, where the program has
   * somewhere to keep them packed (build, lower_keeps_packed) */
  c.kept = c.s.chan_inner && keeps(L->p);
  describe(L, &c.s, CONV_FORWARD);
  Kernel *k = L->b.k;
  if (c.kept)
    k->schedule = arena_printf(
        L->p->a, "%s; the packed weights kept between calls", k->schedule);
  if (x->hwc)
    k->schedule =
        arena_printf(L->p->a, "%s; x read channels innermost", k->schedule);
  if (y->hwc)
    k->schedule =
        arena_printf(L->p->a, "%s; y stored channels innermost", k->schedule);
  if (!c.s.tiled)
    return 0;
  lower_forward(L, &c);
  return 1;
}

int lower_keeps_packed(const Node *nd, int tile, int64_t batch) {
  if (!tile || nd->op != OP_CONV)
    return 0;
  ConvGeom g = geom(nd);
  return forward_tiles(&g, tile, batch, 1).chan_inner;
}

/* One axis of conv_dx's stride phase r (dx_phases): the flipped kernel's
 * taps that reach output rows r, r + s, ... (tap0, then every step-th),
 * how many (0: none), the rows' count and the phase convolution's
 * dilation and padding over dy. Returns 0 where the phase would start
 * past dy's first row (a negative padding), which the spread nest
 * covers instead. */
typedef struct PhaseAxis {
  int64_t tap0, step, taps, out, dil, pad;
} PhaseAxis;

static int64_t gcd(int64_t a, int64_t b) { return b ? gcd(b, a % b) : a; }

static int phase_axis(int64_t r, int64_t s, int64_t K, int64_t p, int64_t d,
                      int64_t in, PhaseAxis *a) {
  int64_t pad = d * (K - 1) - p; /* conv_dx's padding of spread dy */
  a->step = s / gcd(d, s);
  a->dil = d / gcd(d, s);
  a->out = in > r ? (in - r + s - 1) / s : 0;
  a->taps = 0;
  a->pad = 0;
  for (int64_t k = 0; k < K && k < a->step; k++) {
    int64_t off = r + k * d - pad;
    if (((off % s) + s) % s)
      continue;
    a->tap0 = k;
    a->taps = (K - 1 - k) / a->step + 1;
    a->pad = -off / s;
    return a->pad >= 0;
  }
  return 1;
}

/* conv_dx at a stride, one convolution per phase of dx's rows and
 * columns: output row r + s * i of the transposed convolution gets only
 * the taps whose spread dy rows are not the zeros between (every s-th),
 * so each phase is a stride-1 convolution of dy itself with those taps,
 * and the phases together do the forward's multiply-adds, not s^2 times
 * them as over dy spread with zeros. A phase no tap reaches (a 1 x 1
 * kernel's odd rows) is zero, through the epilogue. */
static int dx_phases(Lower *L, const ConvGeom *f, Buffer *dx, Buffer *dy,
                     Buffer *w) {
  PhaseAxis ph[2][8];
  int64_t s[2] = {f->sh, f->sw}, K[2] = {f->KH, f->KW}, pad[2] = {f->ph, f->pw},
          D[2] = {f->dh, f->dw}, in[2] = {f->H, f->W};
  if (s[0] > 8 || s[1] > 8)
    return 0;
  for (int a = 0; a < 2; a++)
    for (int64_t r = 0; r < s[a]; r++)
      if (!phase_axis(r, s[a], K[a], pad[a], D[a], in[a], &ph[a][r]))
        return 0;
  const Node *of = L->node->of;
  LoopBuilder *b = &L->b;
  const char *first = NULL;
  /* Phases no tap reaches are zero: first every element of dx through the
   * epilogue at zero, in order, which the other phases then overwrite
   * (the zero phases' strided stores alone cost more: ResNet-18's
   * layer2.0.downsample.0.dx, three quarters zero, took 7.7 ms with them
   * and 5.5 with this pass, batch 8). */
  int zeros = 0;
  for (int64_t rh = 0; rh < f->sh; rh++)
    for (int64_t rw = 0; rw < f->sw; rw++)
      zeros |= ph[0][rh].out && ph[1][rw].out &&
               (!ph[0][rh].taps || !ph[1][rw].taps);
  if (zeros) {
    Shape ys = of->in.v[0]->shape;
    int64_t P = shape_numel(ys) / f->C;
    int n = lb_for(b, "n", -1);
    int ch = lb_for(b, "c", f->C);
    int i = lb_for(b, "i", P);
    Expr *at = flat(L, V(L, n), add(L, mul(L, V(L, ch), I(L, P)), V(L, i)), ys);
    lb_store(b, dx, at, lower_epilogue(L, F(L, 0), V(L, ch), at));
    close(L, 3);
  }
  for (int64_t rh = 0; rh < f->sh; rh++)
    for (int64_t rw = 0; rw < f->sw; rw++) {
      PhaseAxis *h = &ph[0][rh], *v = &ph[1][rw];
      if (!h->out || !v->out || !h->taps || !v->taps)
        continue; /* no rows, or zero: the pass before */
      ConvGeom g = {f->groups, f->O,    f->OH,   f->OW, f->C, h->out,
                    v->out,    h->taps, v->taps, 1,     1,    h->pad,
                    v->pad,    h->dil,  v->dil,  1,     1};
      Conv c = {.x = dy,
                .y = dx,
                .w = w,
                .g = g,
                .flip = 1,
                .full = {f->KH, f->KW},
                .tap0 = {h->tap0, v->tap0},
                .step = {h->step, v->step},
                .out0 = {rh, rw},
                .ostep = {f->sh, f->sw}};
      c.xs = of->shape;
      c.ys = of->in.v[0]->shape;
      c.s = forward_schedule(L->p, &c.g, 0);
      if (!first)
        first = schedule_describe(L->p->a, &c.s, CONV_FORWARD);
      lower_forward(L, &c);
    }
  L->b.k->schedule = arena_printf(
      L->p->a, "dy in %" PRId64 " x %" PRId64 " stride phases, the first: %s",
      f->sh, f->sw, first ? first : "none");
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
                f.dw,
                1,
                1};
  if (g.ph < 0 || g.pw < 0)
    return 0; /* the plain scatter */
  if ((f.sh > 1 || f.sw > 1) && L->p->tile && dx_phases(L, &f, dx, dy, w))
    return 1;
  /* at a stride, dy spread apart by it, zeros between: the transposed
   * convolution as a direct one, stride^2 times the multiply-adds (most
   * of them by zero), in the tiled nest rather than a scatter */
  g.H = (f.OH - 1) * f.sh + 1;
  g.W = (f.OW - 1) * f.sw + 1;
  g.uh = f.sh;
  g.uw = f.sw;
  Conv c = {.x = dy,
            .y = dx,
            .w = w,
            .g = g,
            .flip = 1,
            .full = {f.KH, f.KW},
            .step = {1, 1}};
  c.xs = of->shape;
  c.ys = of->in.v[0]->shape;
  c.s = forward_schedule(L->p, &c.g, 0);
  describe(L, &c.s, CONV_FORWARD);
  if (!c.s.tiled)
    return 0;
  if (g.uh > 1 || g.uw > 1)
    L->b.k->schedule = arena_printf(
        L->p->a, "dy spread %" PRId64 " x %" PRId64 " apart with zeros; %s",
        g.uh, g.uw, L->b.k->schedule);
  lower_forward(L, &c);
  return 1;
}

/* dy along the positions of the copy's planes (schedule.h), zero where
 * no output is, through the last tile's end. */
static Buffer *flat_dy(Lower *L, Conv *c) {
  const ConvGeom *g = &c->g;
  const ConvSchedule *s = &c->s;
  int64_t P = s->tiles * s->width;
  Shape fs = {3, {g->O, 1, P, 0}};
  Buffer *f = lower_scratch(L, "dy_flat", fs);
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int o = lb_for(b, "o", g->O);
  int q = lb_for(b, "p", P);
  Expr *col = x_bin(L->p, X_MOD, V(L, q), I(L, s->plane_w));
  Expr *row = dvd(L, V(L, q), I(L, s->plane_w));
  lb_store(b, f, idx(L, V(L, n), V(L, o), I(L, 0), V(L, q), fs),
           x_select(L->p, is_output(L, c, V(L, q), col),
                    load(L, c->y, idx(L, V(L, n), V(L, o), row, col, c->ys)),
                    F(L, 0)));
  close(L, 3);
  return f;
}

/* Where the weight gradient's sums wait between samples (schedule.h,
 * samples_outer): lane a of block ob's input channel ic, kernel row kh
 * and block kc of kw taps, across groups. */
static Expr *sums_at(Lower *L, const Conv *c, Expr *ob, Expr *ic, int kh,
                     int kc, Expr *a) {
  const ConvGeom *g = &c->g;
  const ConvSchedule *s = &c->s;
  int64_t nob = g->O / g->groups / s->ocb, kcs = g->KW / s->kwb;
  Expr *at = add(L, group_base(L, c, nob), ob);
  at = add(L, mul(L, at, I(L, g->C / g->groups)), ic);
  at = add(L, mul(L, at, I(L, g->KH)), V(L, kh));
  at = add(L, mul(L, at, I(L, kcs)), kc >= 0 ? V(L, kc) : I(L, 0));
  return add(L, mul(L, at, I(L, s->ocb * s->kwb * s->width)), a);
}

/* Kernel column k of block kc of kwb kw taps (kc < 0: one block). */
static Expr *block_kw(Lower *L, int kc, int64_t kwb, int k) {
  return kc >= 0 ? add(L, mul(L, V(L, kc), I(L, kwb)), V(L, k)) : V(L, k);
}

/* The tiles of one sample (c->n) for one input channel, kernel row and
 * block of kw taps: lanes of dot products of dy with the tap's run. */
static void dw_tiles(Lower *L, Conv *c, Buffer *fy, Expr *ocl0, Expr *icx,
                     int kh, int kc) {
  const ConvGeom *g = &c->g;
  const ConvSchedule *s = &c->s;
  int64_t Og = g->O / g->groups, ocb = s->ocb, kwb = s->kwb, w = s->width;
  LoopBuilder *b = &L->b;
  int t = lb_for(b, "t", s->tiles);
  int j = lb_for(b, "j", ocb);
  int k = lb_for(b, "k", kwb);
  int l = lb_for(b, "l", w);
  Expr *kw = block_kw(L, kc, kwb, k);
  Expr *pos = add(L, mul(L, V(L, t), I(L, w)), V(L, l));
  Expr *ocx = add(L, add(L, group_base(L, c, Og), ocl0), V(L, j));
  lb_accum(b, c->acc,
           add(L, mul(L, add(L, mul(L, V(L, j), I(L, kwb)), V(L, k)), I(L, w)),
               V(L, l)),
           mul(L, load(L, fy, idx(L, V(L, c->n), ocx, I(L, 0), pos, fy->shape)),
               tap_read(L, c, icx, V(L, kh), kw, pos)));
  close(L, 4);
}

/* The sums of the lanes of acc (or of the kept sums, from) into dw. */
static void dw_store(Lower *L, Conv *c, Buffer *dw, Buffer *from, Expr *ocl0,
                     Expr *ob, Expr *ic, int kh, int kc) {
  const ConvGeom *g = &c->g;
  const ConvSchedule *s = &c->s;
  int64_t Og = g->O / g->groups, Cg = g->C / g->groups, kwb = s->kwb,
          w = s->width;
  LoopBuilder *b = &L->b;
  int j = lb_for(b, "j", s->ocb);
  int k = lb_for(b, "k", kwb);
  Expr *kw = block_kw(L, kc, kwb, k);
  Expr *base = mul(L, add(L, mul(L, V(L, j), I(L, kwb)), V(L, k)), I(L, w));
  int sum = lb_let(b, "sum", F(L, 0));
  int l = lb_for(b, "l", w);
  Expr *lane = add(L, base, V(L, l));
  lb_set(
      b, sum,
      add(L, x_temp(L->p, sum),
          load(L, from,
               from == c->acc ? lane : sums_at(L, c, ob, ic, kh, kc, lane))));
  close(L, 1);
  Expr *ocx = add(L, add(L, group_base(L, c, Og), ocl0), V(L, j));
  Expr *at =
      add(L, mul(L, add(L, mul(L, ocx, I(L, Cg)), ic), I(L, g->KH)), V(L, kh));
  lb_store(b, dw, add(L, mul(L, at, I(L, g->KW)), kw), x_temp(L->p, sum));
  close(L, 2);
}

/* The input row (or column) that output row out reads at kernel row k, in
 * the copy zero-padded in one plane per channel. */
static Expr *tap_at(Lower *L, Expr *out, int64_t stride, Expr *k,
                    int64_t dilation) {
  return add(L, mul(L, out, I(L, stride)), mul(L, k, I(L, dilation)));
}

/* A channel-lane tile's accumulators from its sums so far at base in
 * sums, or zero in the first chunk (sample n and row block rb 0; -1:
 * no such loop). */
static void sums_so_far(Lower *L, Conv *c, Buffer *sums, Expr *base,
                        int64_t tile, int n, int rb) {
  LoopBuilder *b = &L->b;
  Expr *first = NULL;
  if (n >= 0)
    first = x_bin(L->p, X_EQ, V(L, n), I(L, 0));
  if (rb >= 0) {
    Expr *r0 = x_bin(L->p, X_EQ, V(L, rb), I(L, 0));
    first = first ? x_bin(L->p, X_AND, first, r0) : r0;
  }
  int a = lb_for(b, "a", tile);
  Expr *so_far = load(L, sums, add(L, base, V(L, a)));
  lb_store(b, c->acc, V(L, a),
           first ? x_select(L->p, first, F(L, 0), so_far) : F(L, 0));
  close(L, 1);
}

/* ... and back into sums after the chunk. */
static void sums_keep(Lower *L, Conv *c, Buffer *sums, Expr *base,
                      int64_t tile) {
  LoopBuilder *b = &L->b;
  int a = lb_for(b, "a", tile);
  lb_store(b, sums, add(L, base, V(L, a)), load(L, c->acc, V(L, a)));
  close(L, 1);
}

/* The weight gradient with input channels in the lanes (schedule.h,
 * dw_chan): for each chunk of positions, block of input channels, block
 * of output channels (shared out among threads) and tap, the tile's sums
 * so far come from a scratch buffer, gain dy's element at every position
 * of the chunk times the tap's run of input channels there, and go back;
 * then dw is read out of the sums. The copy is channels innermost, so a
 * stride is a longer step between positions and needs no planes. */
static void dw_chan_nest(Lower *L, Conv *c, Buffer *dw) {
  const ConvGeom *g = &c->g;
  const ConvSchedule *s = &c->s;
  int64_t ocb = s->ocb, icw = s->width, nob = g->O / ocb, nib = g->C / icw;
  int64_t rows = s->dw_rows, rbs = g->OH / rows, tile = ocb * icw;
  LoopBuilder *b = &L->b;
  Buffer *sums = lower_scratch_once(L, "sums", g->O * g->C * g->KH * g->KW);
  /* Threads share out the blocks of input channels (each its own run of
   * the copy), or with one block the blocks of output channels, at the
   * top: the backends run a parallel loop only there. */
  int ib = -1, ob = -1;
  if (s->parallel && nib > 1)
    ib = lb_parallel_for(b, "ib", nib);
  else if (s->parallel)
    ob = lb_parallel_for(b, "ob", nob);
  int n = s->dw_all ? -1 : lb_for(b, "n", -1);
  int rb = rbs > 1 ? lb_for(b, "rb", rbs) : -1;
  if (ib < 0)
    ib = lb_for(b, "ib", nib);
  if (ob < 0)
    ob = lb_for(b, "ob", nob);
  int kh = lb_for(b, "kh", g->KH);
  int kw = lb_for(b, "kw", g->KW);
  /* the tile's sums: [ob][ib][kh][kw], then ocb x icw */
  Expr *at = add(L, mul(L, V(L, ob), I(L, nib)), V(L, ib));
  at = add(L, mul(L, at, I(L, g->KH)), V(L, kh));
  Expr *base = mul(L, add(L, mul(L, at, I(L, g->KW)), V(L, kw)), I(L, tile));
  sums_so_far(L, c, sums, base, tile, n, rb);
  int nn = n >= 0 ? n : lb_for(b, "n", -1);
  int r = lb_for(b, "r", rows);
  Expr *oh = rb >= 0 ? add(L, mul(L, V(L, rb), I(L, rows)), V(L, r)) : V(L, r);
  int ow = lb_for(b, "ow", g->OW);
  int i = lb_for(b, "i", ocb);
  Expr *oc = add(L, mul(L, V(L, ob), I(L, ocb)), V(L, i));
  int d =
      lb_let(b, "d", load(L, c->y, idx(L, V(L, nn), oc, oh, V(L, ow), c->ys)));
  int l = lb_for(b, "l", icw);
  Expr *row = tap_at(L, oh, g->sh, V(L, kh), g->dh);
  Expr *col = tap_at(L, V(L, ow), g->sw, V(L, kw), g->dw);
  lb_accum(
      b, c->acc, add(L, mul(L, V(L, i), I(L, icw)), V(L, l)),
      mul(L, x_temp(L->p, d),
          load(L, c->x,
               hwc_run(L, c, V(L, nn), I(L, 0), row, col, V(L, ib), V(L, l)))));
  close(L, 4 + (n < 0));
  sums_keep(L, c, sums, base, tile);
  close(L, 4 + (rb >= 0) + (n >= 0));
  /* dw[o][c][kh][kw] from the tiles' sums */
  int o = lb_for(b, "o", g->O);
  int ic = lb_for(b, "ic", g->C);
  kh = lb_for(b, "kh", g->KH);
  kw = lb_for(b, "kw", g->KW);
  at = add(L, mul(L, dvd(L, V(L, o), I(L, ocb)), I(L, nib)),
           dvd(L, V(L, ic), I(L, icw)));
  at = add(L, mul(L, at, I(L, g->KH)), V(L, kh));
  at = mul(L, add(L, mul(L, at, I(L, g->KW)), V(L, kw)), I(L, tile));
  at = add(L, at,
           add(L, mul(L, x_bin(L->p, X_MOD, V(L, o), I(L, ocb)), I(L, icw)),
               x_bin(L->p, X_MOD, V(L, ic), I(L, icw))));
  Expr *to = add(L, mul(L, V(L, o), I(L, g->C)), V(L, ic));
  to = add(L, mul(L, to, I(L, g->KH)), V(L, kh));
  lb_store(b, dw, add(L, mul(L, to, I(L, g->KW)), V(L, kw)), load(L, sums, at));
  close(L, 4);
}

/* Tap t of a dw_ochan tile of input-channel block ib and kw-tap block kc:
 * its input channel and kernel column. */
static void ochan_tap(Lower *L, const ConvSchedule *s, int ib, int kc, int t,
                      Expr **ic, Expr **kw) {
  *ic = add(L, mul(L, V(L, ib), I(L, s->ocb)), dvd(L, V(L, t), I(L, s->kwb)));
  *kw = add(L, mul(L, V(L, kc), I(L, s->kwb)),
            x_bin(L->p, X_MOD, V(L, t), I(L, s->kwb)));
}

/* The weight gradient with output channels in the lanes (schedule.h,
 * dw_ochan): dy copied channels innermost in blocks of the tile's
 * channels (a block's runs at consecutive positions adjacent), then for
 * each chunk of positions (as dw_chan's), block of output channels
 * (shared out among threads), block of input channels, kernel row and
 * block of kw taps, the tile's sums so far come from a scratch buffer,
 * gain each tap's input element (a broadcast) times dy's run of the
 * block's channels at every position of the chunk, and go back; then dw
 * is read out of the sums. */
static void dw_ochan_nest(Lower *L, Conv *c, Buffer *dw) {
  const ConvGeom *g = &c->g;
  const ConvSchedule *s = &c->s;
  int64_t ocw = s->width, cb = s->ocb, kb = s->kwb, taps = cb * kb;
  int64_t nob = g->O / ocw, nib = g->C / cb, nkc = g->KW / kb;
  int64_t rows = s->dw_rows, rbs = g->OH / rows, tile = taps * ocw;
  LoopBuilder *b = &L->b;
  /* [ob][n][oh][ow][ocw], each sample's block as ts */
  Shape ts = {3, {g->OH, g->OW, ocw, 0}};
  Buffer *dyt =
      lower_scratch_once(L, "dy_hwc", shape_numel(ts) * nob * L->p->batch);
  Buffer *sums = lower_scratch_once(L, "sums", g->O * g->C * g->KH * g->KW);
  /* written in order, a block's ocw rows of dy read side by side (written
   * ocw floats apart, the copy took longer than the tiles: ResNet-18's
   * conv1.dweight at batch 8) */
  int n = s->parallel ? lb_parallel_for(b, "n", -1) : lb_for(b, "n", -1);
  int bo = lb_for(b, "bo", nob);
  int oh = lb_for(b, "oh", g->OH);
  int ow = lb_for(b, "ow", g->OW);
  int lane = lb_for(b, "l", ocw);
  Expr *o = add(L, mul(L, V(L, bo), I(L, ocw)), V(L, lane));
  lb_store(b, dyt,
           idx(L, add(L, mul(L, V(L, bo), I(L, L->p->batch)), V(L, n)),
               V(L, oh), V(L, ow), V(L, lane), ts),
           load(L, c->y, idx(L, V(L, n), o, V(L, oh), V(L, ow), c->ys)));
  close(L, 5);
  /* threads share out the blocks of output channels, at the top */
  int ob = s->parallel ? lb_parallel_for(b, "ob", nob) : lb_for(b, "ob", nob);
  n = s->dw_all ? -1 : lb_for(b, "n", -1);
  int rb = rbs > 1 ? lb_for(b, "rb", rbs) : -1;
  int ib = lb_for(b, "ib", nib);
  int kh = lb_for(b, "kh", g->KH);
  int kc = lb_for(b, "kc", nkc);
  /* the tile's sums: [ob][ib][kh][kc], then taps x ocw */
  Expr *at = add(L, mul(L, V(L, ob), I(L, nib)), V(L, ib));
  at = add(L, mul(L, at, I(L, g->KH)), V(L, kh));
  Expr *base = mul(L, add(L, mul(L, at, I(L, nkc)), V(L, kc)), I(L, tile));
  sums_so_far(L, c, sums, base, tile, n, rb);
  int nn = n >= 0 ? n : lb_for(b, "n", -1);
  int r = lb_for(b, "r", rows);
  Expr *ohv = rb >= 0 ? add(L, mul(L, V(L, rb), I(L, rows)), V(L, r)) : V(L, r);
  ow = lb_for(b, "ow", g->OW);
  int t = lb_for(b, "t", taps);
  Expr *ic, *kw;
  ochan_tap(L, s, ib, kc, t, &ic, &kw);
  Expr *row = tap_at(L, ohv, g->sh, V(L, kh), g->dh);
  Expr *col = tap_at(L, V(L, ow), g->sw, kw, g->dw);
  int xv =
      lb_let(b, "xv", load(L, c->x, idx(L, V(L, nn), ic, row, col, c->xs)));
  int l = lb_for(b, "l", ocw);
  Expr *bn = add(L, mul(L, V(L, ob), I(L, L->p->batch)), V(L, nn));
  lb_accum(b, c->acc, add(L, mul(L, V(L, t), I(L, ocw)), V(L, l)),
           mul(L, x_temp(L->p, xv),
               load(L, dyt, idx(L, bn, ohv, V(L, ow), V(L, l), ts))));
  close(L, 4 + (n < 0));
  sums_keep(L, c, sums, base, tile);
  close(L, 4 + (rb >= 0) + (n >= 0));
  /* dw[o][c][kh][kw] from the tiles' sums */
  ob = lb_for(b, "ob", nob);
  ib = lb_for(b, "ib", nib);
  kh = lb_for(b, "kh", g->KH);
  kc = lb_for(b, "kc", nkc);
  t = lb_for(b, "t", taps);
  l = lb_for(b, "l", ocw);
  ochan_tap(L, s, ib, kc, t, &ic, &kw);
  Expr *oc = add(L, mul(L, V(L, ob), I(L, ocw)), V(L, l));
  Expr *to =
      add(L, mul(L, add(L, mul(L, oc, I(L, g->C)), ic), I(L, g->KH)), V(L, kh));
  at = add(L, mul(L, V(L, ob), I(L, nib)), V(L, ib));
  at = add(L, mul(L, at, I(L, g->KH)), V(L, kh));
  at = add(L, mul(L, add(L, mul(L, at, I(L, nkc)), V(L, kc)), I(L, tile)),
           add(L, mul(L, V(L, t), I(L, ocw)), V(L, l)));
  lb_store(b, dw, add(L, mul(L, to, I(L, g->KW)), kw), load(L, sums, at));
  close(L, 6);
}

/* The weight gradient: for each block of output channels, input channel,
 * kernel row and block of kw taps, lanes of dot products of dy with the
 * tap's run of the copy, over samples and tiles of positions, then their
 * sums. With samples outermost (schedule.h), each sample goes through
 * every input channel and tap, its sums kept in a scratch buffer. */
int lower_conv_dw_tiled(Lower *L, Buffer *dw, Buffer *x, Buffer *dy) {
  const Node *of = L->node->of;
  /* c.y is dy, read; the result goes to dw */
  Conv c = {.x = x, .y = dy, .g = geom(of)};
  c.xs = of->in.v[0]->shape;
  c.ys = of->shape;
  const ConvGeom *g = &c.g;
  c.s = schedule_dw(g, L->p->tile, L->p->batch);
  describe(L, &c.s, CONV_WEIGHT);
  if (!c.s.tiled)
    return 0;
  const ConvSchedule *s = &c.s;
  pad_input(L, &c);
  /* every nest's tile: ocb x kwb x width accumulators */
  int64_t size = s->ocb * s->kwb * s->width;
  c.acc = loop_local(L->p, L->b.k, "acc", size);
  if (s->dw_chan || s->dw_ochan) {
    c.grp = -1;
    if (s->dw_chan)
      dw_chan_nest(L, &c, dw);
    else
      dw_ochan_nest(L, &c, dw);
    return 1;
  }
  Buffer *fy = flat_dy(L, &c);
  int64_t Og = g->O / g->groups, Cg = g->C / g->groups, ocb = s->ocb,
          kwb = s->kwb;
  LoopBuilder *b = &L->b;
  Buffer *sums =
      s->samples_outer
          ? lower_scratch_once(L, "sums", g->O * Cg * g->KH * g->KW * s->width)
          : NULL;
  /* groups and blocks of output channels write apart */
  c.grp = g->groups <= 1 ? -1
          : s->parallel  ? lb_parallel_for(b, "g", g->groups)
                         : lb_for(b, "g", g->groups);
  /* in blocks of output-channel blocks by input channels (schedule.h,
   * dw_ob and dw_ic) when the rows of all of them pass L2 */
  int64_t OB = s->dw_ob ? s->dw_ob : 1, IB = s->dw_ic ? s->dw_ic : Cg;
  int obo = s->parallel && c.grp < 0 ? lb_parallel_for(b, "ob", Og / ocb / OB)
                                     : lb_for(b, "ob", Og / ocb / OB);
  int64_t kcs = g->KW / kwb;
  if (!sums) {
    int ico = IB < Cg ? lb_for(b, "icc", Cg / IB) : -1;
    int obi = OB > 1 ? lb_for(b, "obi", OB) : -1;
    Expr *obv =
        obi >= 0 ? add(L, mul(L, V(L, obo), I(L, OB)), V(L, obi)) : V(L, obo);
    Expr *ocl0 = mul(L, obv, I(L, ocb));
    int ici = lb_for(b, "ic", IB);
    Expr *icv =
        ico >= 0 ? add(L, mul(L, V(L, ico), I(L, IB)), V(L, ici)) : V(L, ici);
    Expr *icx = add(L, group_base(L, &c, Cg), icv);
    int kh = lb_for(b, "kh", g->KH);
    int kc = kcs > 1 ? lb_for(b, "kc", kcs) : -1;
    int a = lb_for(b, "a", size);
    lb_store(b, c.acc, V(L, a), F(L, 0));
    close(L, 1);
    c.n = lb_for(b, "n", -1);
    dw_tiles(L, &c, fy, ocl0, icx, kh, kc);
    close(L, 1);
    dw_store(L, &c, dw, c.acc, ocl0, obv, icv, kh, kc);
    close(L, 3 + (kc >= 0) + (ico >= 0) + (obi >= 0) + (c.grp >= 0));
    return 1;
  }
  Expr *ocl0 = mul(L, V(L, obo), I(L, ocb));
  for (int part = 0; part < 3; part++) {
    /* 0: the sums zeroed; 1: each sample's tiles added to them; 2: dw */
    c.n = part == 1 ? lb_for(b, "n", -1) : -1;
    int ic = lb_for(b, "ic", Cg);
    Expr *icx = add(L, group_base(L, &c, Cg), V(L, ic));
    int kh = lb_for(b, "kh", g->KH);
    int kc = kcs > 1 ? lb_for(b, "kc", kcs) : -1;
    if (part == 2) {
      dw_store(L, &c, dw, sums, ocl0, V(L, obo), V(L, ic), kh, kc);
    } else {
      int a = lb_for(b, "a", size);
      Expr *at = sums_at(L, &c, V(L, obo), V(L, ic), kh, kc, V(L, a));
      lb_store(b, part ? c.acc : sums, part ? V(L, a) : at,
               part ? load(L, sums, at) : F(L, 0));
      close(L, 1);
      if (part) {
        dw_tiles(L, &c, fy, ocl0, icx, kh, kc);
        a = lb_for(b, "a", size);
        lb_store(b, sums, sums_at(L, &c, V(L, obo), V(L, ic), kh, kc, V(L, a)),
                 load(L, c.acc, V(L, a)));
        close(L, 1);
      }
    }
    close(L, 2 + (kc >= 0) + (part == 1));
  }
  close(L, 1 + (c.grp >= 0));
  return 1;
}
