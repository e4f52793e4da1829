/* The schedule heuristic for convolutions, in one place.
 *
 * A tiled convolution keeps a block of output channels times a tile of
 * output columns in accumulators (a local array the C compiler and LLVM
 * keep in vector registers) while it walks the input channels and taps;
 * the tile's columns are the innermost loop, contiguous in memory. Only
 * the rows and columns whose windows reach into the padding need bounds
 * checks, so the interior is split from the border: rows [row0, row1) and
 * columns [col0, col1) read no padding.
 *
 * The sizes come from a small cost model of this machine class (AVX2:
 * 8 floats per vector, 16 vector registers, two loads and two multiply-
 * add pairs per cycle): a tile of ocb channels by width columns costs per
 * tap max(ocb * v / 2, (ocb + v) / 2) + 1/2 cycles for its v vector
 * operations (width/8 full vectors; leftover lanes cost about as much as
 * vectors each), with at most 12 accumulator registers; the plan with the
 * fewest cycles per output row wins. The weight gradient sums over columns
 * instead: its accumulators are ocb channels by every kw tap by width
 * lanes, summed at the end.
 *
 * At stride 1 the rows of a plane are taken as one run of positions
 * (schedule.h, flat): tiles then span row ends, so narrow images (LeNet's
 * 10 columns, ResNet's 7 and 14) still fill whole vectors, at the price
 * of computing the W - OW columns past each row's end and dropping them.
 * A padded input is first copied into a zero-padded buffer.
 *
 * Tiling changes no result of the forward pass: each output still sums
 * its bias, then channels and taps in order. The weight gradient's sums
 * are split into lanes, which reorders them (within float32 rounding). */
#include "schedule.h"

#include <inttypes.h>

enum { LANES = 8, MAX_ACC = 12 };

/* The vector operations a row of width columns takes: full vectors,
 * then a half vector, then single lanes. */
static int64_t vectors(int64_t width) {
  return width / LANES + width % LANES / (LANES / 2) + width % (LANES / 2);
}

/* The first output position whose window starts inside the input, and
 * one past the last whose window ends inside it, along one axis. */
static void interior(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p,
                     int64_t d, int64_t *lo, int64_t *hi) {
  int64_t first = p <= 0 ? 0 : (p + s - 1) / s;
  int64_t reach = in - 1 + p - (k - 1) * d; /* oh * s must not pass it */
  int64_t last = reach < 0 ? 0 : reach / s + 1;
  if (first > out)
    first = out;
  if (last > out)
    last = out;
  if (last < first)
    last = first;
  *lo = first;
  *hi = last;
}

/* Cycles per tap of a tile of ocb channels by width columns (forward),
 * or of ocb channels by kw taps by width lanes (weight gradient). */
static double tile_cost(int64_t ocb, int64_t width, int64_t kw) {
  if (width <= 0)
    return 0;
  double v = (double)vectors(width), acc = (double)ocb * kw * v;
  double loads = (double)ocb + (double)kw * v;
  double ops = acc / 2, mem = loads / 2;
  return (ops > mem ? ops : mem) + 0.5;
}

ConvGeom padded_geom(const ConvGeom *g) {
  ConvGeom p = *g;
  p.H = (g->OH - 1) * g->sh + (g->KH - 1) * g->dh + 1;
  p.W = (g->OW - 1) * g->sw + (g->KW - 1) * g->dw + 1;
  p.ph = p.pw = 0;
  return p;
}

ConvSchedule schedule_conv(const ConvGeom *g, ConvPass pass, int tile) {
  ConvSchedule s = {0};
  interior(g->H, g->OH, g->KH, g->sh, g->ph, g->dh, &s.row0, &s.row1);
  interior(g->W, g->OW, g->KW, g->sw, g->pw, g->dw, &s.col0, &s.col1);
  if (!tile)
    return s;
  /* Guarded windows cost several times an interior one: when more than
   * a quarter of the outputs have them, copying the input into a padded
   * buffer (a few percent of the work) is cheaper. At a column stride
   * above 1 the copy also splits each row into its phases, which makes
   * the tiles' loads contiguous. */
  int64_t inner = (s.row1 - s.row0) * (s.col1 - s.col0);
  int flat = pass == CONV_FORWARD && g->sh == 1 && g->sw == 1;
  int copy =
      pass == CONV_FORWARD && (g->sw > 1 || 4 * inner < 3 * g->OH * g->OW);
  if (flat || copy) { /* every window inside the (copied) input */
    ConvGeom p = padded_geom(g);
    s.pad_copy = copy || g->ph != 0 || g->pw != 0;
    s.phases = copy ? g->sw : 1;
    s.flat = flat;
    s.positions = flat ? (g->OH - 1) * p.W + g->OW : 0;
    s.row0 = s.col0 = 0;
    s.row1 = g->OH;
    s.col1 = g->OW;
  }
  int64_t og = g->O / g->groups, wi = s.flat ? s.positions : s.col1 - s.col0;
  int64_t kw = pass == CONV_WEIGHT ? g->KW : 1;
  static const int64_t widths[] = {8, 16, 24, 32};
  double best = -1;
  for (int i = 0; i <= 4; i++) {
    int64_t w = i < 4 ? widths[i] : wi; /* the whole interior, if narrow */
    /* tiles of whole vectors: a tile with leftover lanes is unrolled into
     * scalar code by the C compiler rather than vectorized */
    if (w <= 0 || w > wi || (i == 4 && (w > 32 || (w % LANES && wi > LANES))))
      continue;
    if (pass == CONV_WEIGHT && w > 16)
      continue;
    for (int64_t ocb = 1; ocb <= og && ocb <= 16; ocb++) {
      int64_t regs =
          vectors(w) > vectors(wi % w) ? vectors(w) : vectors(wi % w);
      if (og % ocb || (ocb > 1 && ocb * kw * regs > MAX_ACC))
        continue;
      double row =
          (double)(og / ocb) * ((double)(wi / w) * tile_cost(ocb, w, kw) +
                                tile_cost(ocb, wi % w, kw));
      if (best < 0 || row < best - 1e-9) {
        best = row;
        s.ocb = ocb;
        s.width = w;
      }
    }
  }
  if (best < 0) { /* no interior column: one channel at a time, guarded */
    s.ocb = 1;
    s.width = 1;
  }
  s.tiled = 1;
  s.tiles = wi / s.width;
  s.rem = wi % s.width;
  return s;
}

int64_t schedule_conv_work(const ConvGeom *g) {
  return g->O * g->OH * g->OW * (g->C / g->groups) * g->KH * g->KW;
}

Parallel schedule_parallel(int64_t work, int64_t batch, int64_t blocks,
                           int by_sample) {
  if (work * batch < PARALLEL_WORK)
    return PAR_NONE;
  /* samples first: as many as threads or more, each a whole pass */
  if (by_sample && batch >= 4)
    return PAR_SAMPLES;
  return blocks >= 2 ? PAR_BLOCKS : PAR_NONE;
}

const char *schedule_describe(Arena *a, const ConvSchedule *s, ConvPass pass) {
  if (!s->tiled)
    return "plain (tiling off)";
  const char *acc =
      pass == CONV_WEIGHT
          ? arena_printf(a,
                         "accumulators: %" PRId64
                         " output channels x kw taps x "
                         "%" PRId64 " column lanes",
                         s->ocb, s->width)
          : arena_printf(
                a, "accumulators: %" PRId64 " output channels x %" PRId64 " %s",
                s->ocb, s->width, s->flat ? "positions" : "output columns");
  if (s->parallel)
    acc = arena_printf(a, "%s; %s shared out among threads", acc,
                       s->parallel == PAR_SAMPLES ? "samples" : "blocks");
  if (s->flat)
    return arena_printf(a,
                        "%srows flattened to %" PRId64
                        " positions; %s; %" PRId64 " tiles + %" PRId64
                        ", no guards",
                        s->pad_copy ? "input copied zero-padded; " : "",
                        s->positions, acc, s->tiles, s->rem);
  if (s->pad_copy)
    return arena_printf(a,
                        "input copied zero-padded%s; %s; columns in %" PRId64
                        " tiles + %" PRId64 ", no guards",
                        s->phases > 1 ? ", rows split into the stride's phases"
                                      : "",
                        acc, s->tiles, s->rem);
  return arena_printf(a,
                      "%s; interior columns [%" PRId64 ", %" PRId64
                      ") in %" PRId64 " tiles + %" PRId64 ", rows [%" PRId64
                      ", %" PRId64 ") unguarded, padding borders guarded",
                      acc, s->col0, s->col1, s->tiles, s->rem, s->row0,
                      s->row1);
}

static int64_t largest_divisor(int64_t n, int64_t most) {
  for (int64_t d = most < n ? most : n; d > 1; d--)
    if (n % d == 0)
      return d;
  return 1;
}

/* Dense layers are a matrix product with one small side (the batch), so
 * they are bound by loading w: the forward pass keeps 8 lanes for each of
 * up to 8 outputs (8 accumulators, 9 loads per 8 multiply-adds); dx
 * keeps 4 vectors of in-features, dw 4 outputs by 2 vectors. */
DenseSchedule schedule_dense(int64_t in, int64_t out, DensePass pass,
                             int tile) {
  DenseSchedule s = {0};
  if (!tile || in < LANES)
    return s;
  s.tiled = 1;
  switch (pass) {
  case DENSE_FORWARD:
    s.ob = largest_divisor(out, 8);
    s.width = LANES;
    break;
  case DENSE_DX:
    s.ob = 1;
    s.width = in >= 4 * LANES ? 4 * LANES : in / LANES * LANES;
    break;
  case DENSE_WEIGHT:
    s.ob = largest_divisor(out, 4);
    s.width = in >= 2 * LANES ? 2 * LANES : LANES;
    break;
  }
  s.tiles = in / s.width;
  s.rem = in % s.width;
  return s;
}

const char *schedule_describe_dense(Arena *a, const DenseSchedule *s,
                                    DensePass pass) {
  if (!s->tiled)
    return "plain (tiling off)";
  if (pass == DENSE_FORWARD)
    return arena_printf(a,
                        "accumulators: %" PRId64 " outputs x %" PRId64
                        " lanes of in-features (%" PRId64 " tiles + %" PRId64
                        "), summed at the end",
                        s->ob, s->width, s->tiles, s->rem);
  return arena_printf(a,
                      "accumulators: %" PRId64 " %s x %" PRId64
                      " in-features (%" PRId64 " tiles + %" PRId64 ")",
                      s->ob, pass == DENSE_DX ? "sample" : "outputs", s->width,
                      s->tiles, s->rem);
}
