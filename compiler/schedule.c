/* The schedule heuristic for convolutions, in one place.
 *
 * A tiled convolution keeps a block of output channels times a tile of
 * output positions in accumulators (a local array the C compiler and LLVM
 * keep in vector registers) while it walks the input channels and taps;
 * the tile's positions are the innermost loop, contiguous in memory.
 *
 * The sizes come from a small cost model of the target's vector unit
 * (schedule.h: AVX2's 16 registers of 8 floats, or AVX-512's 32 of 16;
 * two loads and two multiply-add pairs per cycle): a tile of ocb channels
 * by width positions costs per tap max(ocb * v / 2, (ocb + v) / 2) + 1/2
 * cycles for its v vector operations (full vectors; leftover lanes cost
 * about as much as vectors each), with at most 12 or 24 accumulator
 * registers; the plan with the fewest cycles wins. The weight gradient
 * sums over positions instead: its accumulators are ocb channels by kwb
 * kw taps by width lanes, summed at the end; or it puts channels in the
 * lanes (dw_chan, dw_ochan).
 *
 * Both take the rows of a plane as one run of positions (schedule.h,
 * positions): tiles then span row ends, so narrow images (LeNet's
 * 10 columns, ResNet's 7 and 14) still fill whole vectors, at the price
 * of computing the columns past each row's end and dropping them. With
 * padding or a stride, the input is first copied zero-padded, in planes
 * of the stride's phases, so a strided window's taps read contiguous runs
 * too.
 *
 * Tiling changes no result of the forward pass: each output still sums
 * its bias, then channels and taps in order. The weight gradient's sums
 * are split into lanes, which reorders them (within float32 rounding). */
#include "schedule.h"

#include <inttypes.h>

enum { ROW_STORE_WORK = 32, PACK_POSITIONS = 128 };

/* Accumulator registers a tile may take: 12 of AVX2's 16, 24 of AVX-512's
 * 32, the rest for the loads, broadcasts and addresses. */
static int64_t max_acc(int lanes) { return lanes >= TARGET_AVX512 ? 24 : 12; }

/* Channels innermost (schedule.h, chan_inner), for the forward pass: 4
 * or 3 vectors of channels of packed weights (32 or 24 with AVX2, 64 or
 * 48 with AVX-512) by as many positions as the accumulators allow (3 or
 * 4; 6 or 8). The weights' vectors are aligned runs and the input a
 * broadcast scalar, where positions innermost read each tap's input at
 * an offset of one float more than the last (a third to a half of those
 * loads cross a cache line) and broadcast each weight apart: gcc's code
 * for ResNet-18's 64-channel 3x3 layer ran at 33 GFLOP/s positions
 * innermost and 50 channels innermost, packing included (microbenchmarks
 * of both nests). In training the packing is a pass over the weights
 * each call, so it pays where every weight meets many positions: at 14 x
 * 14 it still won (45 against 40 GFLOP/s), at 7 x 7 it lost (24 against
 * 31). Inference packs once and keeps the copy (lower_conv.c,
 * pack_weights), but 7 x 7 still does not take it: ResNet-18's layer4
 * at batch 1 (Xeon, AVX-512, one thread) took 2.75 ms positions
 * innermost, 5.0-5.5 packing each call and 2.78 packed once, its weights
 * (9.4 MB a layer) streaming from memory either way.
 *
 * With a kernel wider than 1 x 1 and 16 input channels or more, the
 * input is copied with its channels innermost (schedule.h, hwc), so that
 * a tile's broadcasts, every input channel at a few positions, read a
 * few contiguous runs: from the planes of NCHW they were as many pages
 * as channels and kernel rows (VGG16's features.7: 95 ms, 66 from the
 * copy). A 1 x 1 layer reads one row per channel, and the transposing
 * copy cost more than it saved (ResNet-50's layer1.1.conv1: 2.5 ms
 * without, 4.7 with), as it did at a stride of 2 (layer2.0.conv2: 5.3
 * against 6.4 ms). */
static int chan_lanes(const ConvGeom *g, int L, ConvSchedule *s) {
  int64_t og = g->O / g->groups;
  int64_t lanes = og % (4 * L) == 0 ? 4 * L : og % (3 * L) == 0 ? 3 * L : 0;
  /* An image's first layer (fewer than 16 input channels: no copy with
   * channels innermost) takes 2 vectors by twice the positions, each
   * weight vector then meeting 12 positions' broadcasts of adjacent
   * floats: ResNet-18's conv1 4.1 -> 3.0 ms at batch 1 (training, batch
   * 8: 30-31 -> 22), AlexNet's 2.9 -> 2.2; VGG16's 3 x 3 features.0 2.6
   * against 2.8, within the noise. Layers of more channels lost (ResNet-18's
   * layer2.0.conv1, 64 in: 9.6 -> 22 ms). Not where 2 vectors are 16
   * floats or fewer (AVX2), which gcc unrolls (schedule_conv). */
  if (g->C / g->groups < 16 && og % (2 * L) == 0 && 2 * L > 16)
    lanes = 2 * L;
  if (!lanes)
    return 0;
  s->chan_inner = 1;
  s->ocb = lanes;
  s->kwb = 1;
  s->width = max_acc(L) / (lanes / L);
  return 1;
}

static int chan_inner(const ConvGeom *g, ConvPass pass, int L,
                      ConvSchedule *s) {
  if (pass != CONV_FORWARD || g->OH * g->OW < PACK_POSITIONS ||
      (g->C / g->groups) * g->KH * g->KW <= ROW_STORE_WORK)
    return 0;
  return chan_lanes(g, L, s);
}

/* The vector operations a row of width columns takes: full vectors,
 * then a half vector, then single lanes. */
static int64_t vectors(int64_t width, int L) {
  return width / L + width % L / (L / 2) + width % (L / 2);
}

/* Cycles per tap of a forward tile of ocb channels by width positions:
 * the broadcast weights and the input's vectors, then the multiply-adds. */
static double tile_cost(int64_t ocb, int64_t width, int L) {
  double v = (double)vectors(width, L), ops = ocb * v / 2, mem = (ocb + v) / 2;
  return (ops > mem ? ops : mem) + 0.5;
}

/* Cycles per tile of the weight gradient with ocb channels by kwb taps by
 * width lanes: dy's vectors for each channel, x's for each tap. */
static double dw_cost(int64_t ocb, int64_t kwb, int64_t width, int L) {
  double v = (double)vectors(width, L), ops = ocb * kwb * v / 2,
         mem = (ocb + kwb) * v / 2;
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
  if (!tile)
    return s;
  /* The rows run as one stretch of positions, in a copy when there is
   * padding or a stride (the weight gradient always copies: its last tile
   * runs past the positions). The copy costs a few percent of the work;
   * guarded windows, strided loads and narrow rows (ResNet's 7 and 14
   * columns) would cost more. */
  ConvGeom p = padded_geom(g);
  int L = tile, inner = chan_inner(g, pass, L, &s);
  s.hwc = inner && g->KH * g->KW > 1 && g->C / g->groups >= 16 && g->sh == 1 &&
          g->sw == 1 && g->uh <= 1 && g->uw <= 1;
  /* (windows past the input's last row or column: conv_dx's stride
   * phases, whose padding is at the end) */
  s.pad_copy = pass == CONV_WEIGHT || g->sh > 1 || g->sw > 1 || g->ph != 0 ||
               g->pw != 0 || g->uh > 1 || g->uw > 1 || s.hwc || p.H > g->H ||
               p.W > g->W;
  s.phase_h = s.pad_copy ? g->sh : 1;
  s.phase_w = s.pad_copy ? g->sw : 1;
  s.plane_h = s.pad_copy ? (p.H + s.phase_h - 1) / s.phase_h : g->H;
  s.plane_w = s.pad_copy ? (p.W + s.phase_w - 1) / s.phase_w : g->W;
  s.positions = (g->OH - 1) * s.plane_w + g->OW;
  int64_t wi = s.positions, og = g->O / g->groups;
  double best = -1;
  int n = L / 2; /* widths of 8, 16, ... up to 4 vectors */
  for (int i = inner ? n + 1 : 0; i <= n; i++) {
    int64_t w = i < n ? (i + 1) * 8 : wi; /* one tile, if narrow */
    /* The last tile is a whole one: past the positions into the copy's
     * zero rows, or without a copy ending at the last position
     * (schedule.h); without a copy, w = wi is one exact tile. Tiles are
     * wider than 16 when they can be: gcc unrolls a loop of 16 or fewer
     * iterations completely, and then vectorizes the tile across the
     * wrong loop or leaves part of it in memory (2 to 10 times slower);
     * LLVM does as well either way. */
    if (w <= 0 || (w > wi && !s.pad_copy) ||
        (i == n && (s.pad_copy || w > 4 * L || (w % L && wi > L))))
      continue;
    if (w <= 16 && (s.pad_copy || wi >= 24))
      continue;
    double tiles = (double)((wi + w - 1) / w);
    for (int64_t ocb = 1; ocb <= og && ocb <= 16; ocb++) {
      if (og % ocb)
        continue;
      for (int64_t kwb = 1; kwb <= (pass == CONV_WEIGHT ? g->KW : 1); kwb++) {
        if (g->KW % kwb ||
            ((ocb > 1 || kwb > 1) && ocb * kwb * vectors(w, L) > max_acc(L)))
          continue;
        double cost = (double)(og / ocb) * tiles *
                      (pass == CONV_WEIGHT
                           ? (double)(g->KW / kwb) * dw_cost(ocb, kwb, w, L)
                           : tile_cost(ocb, w, L));
        if (best < 0 || cost < best - 1e-9) {
          best = cost;
          s.ocb = ocb;
          s.kwb = kwb;
          s.width = w;
        }
      }
    }
  }
  s.tiled = 1;
  s.tiles = (wi + s.width - 1) / s.width;
  /* Row by row, a tile's stores vectorize as masked stores, which cost
   * AVX2 on Zen 3 about 20 cycles each: they pay where an output is a few
   * multiply-adds (LeNet-5's c1, 25: its stores went from a third of the
   * layer to a tenth) and cost 10-15% where it is hundreds (VGG16), whose
   * scalar stores are a rounding error beside the arithmetic. AVX-512's
   * masked stores are plain stores under a mask register, and paid below
   * 512 (LeNet-5's c3, 150 an output, whose scalar stores each divided by
   * the row's width: 13.7 -> 8.6 us; its c3.dx at batch 64, 400: 0.92 ->
   * 0.80 ms), though not at 512 and 1024 (ResNet-50's 1 x 1 layer4.1.conv3
   * and the stride-2 layer4.0.downsample.0, 7 x 7 outputs: 1.75 -> 2.28
   * and 2.52 -> 3.12 ms with them), nor at 4,608 (a 3 x 3 layer of 512
   * channels, within the noise). A tile of whole rows stores them with no
   * mask at all (lower_conv.c, aligned_rows). */
  int64_t work = (g->C / g->groups) * g->KH * g->KW;
  s.row_stores = pass != CONV_WEIGHT && !s.chan_inner &&
                 (L >= TARGET_AVX512 ? work < 16 * ROW_STORE_WORK
                                     : work <= ROW_STORE_WORK);
  if (s.pad_copy) { /* the last tile's reads, deepest tap */
    int64_t reach = s.tiles * s.width +
                    (g->KH - 1) * g->dh / s.phase_h * s.plane_w +
                    (g->KW - 1) * g->dw / s.phase_w;
    if (reach > s.plane_h * s.plane_w)
      s.plane_h = (reach + s.plane_w - 1) / s.plane_w;
  }
  return s;
}

/* Bytes the windows' copy may take (ResNet-18's layer4 at batch 64: 58
 * MB). */
enum { WINDOWS_BYTES = 64 << 20 };

/* Small images leave many of the positions a tile computes idle: the
 * columns and rows of the padding that the flattened rows run through,
 * and the last tile's spare ones (ResNet-18's 7 x 7 layer4: 49 outputs
 * of 64 positions, positions innermost). Taking every output of the
 * batch as a position, each tile's are outputs (all but the batch's last
 * tile), with channels innermost: the input is copied as every output's
 * window, input channels then taps, a convolution then being a matrix
 * product of those runs with the packed weights. ResNet-18's layer4 at
 * batch 8, one thread (Xeon, AVX-512; the least of 3 runs each, with
 * pack_weights' and the passes' new orders): its 3 x 3 convolutions
 * 21 -> 17 ms, their input gradients 27 -> 17-19. In inference (kept:
 * the weights packed once and kept) the packing costs nothing a call, and
 * with the next pass's weights fetched while the tiles work (lower_conv.c,
 * prefetch_next) the 7 x 7 layer4 at batch 1 took 2.2 ms a layer against
 * 2.9 positions innermost (one thread). */
void schedule_windows(const ConvGeom *g, ConvSchedule *s, int tile,
                      int64_t batch, int kept) {
  int64_t P = g->OH * g->OW, NP = batch * P, K = g->C * g->KH * g->KW;
  if (!s->tiled || !tile || g->groups != 1 || g->uh > 1 || g->uw > 1 ||
      (NP < PACK_POSITIONS && !kept) || K <= ROW_STORE_WORK)
    return;
  /* already 4 of 5 positions outputs (ResNet-18's 14 x 14 layer3: 196 of
   * 222): the copy, about as large as the work's inputs, would not pay */
  if (5 * P >= 4 * s->tiles * s->width)
    return;
  ConvSchedule w = {0};
  if (!chan_lanes(g, tile, &w))
    return;
  w.tiled = 1;
  w.windows = w.pad_copy = 1;
  w.phase_h = w.phase_w = 1;
  w.positions = NP;
  w.tiles = (NP + w.width - 1) / w.width;
  if (w.tiles * w.width * K * 4 > WINDOWS_BYTES)
    return;
  *s = w;
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

/* With channels innermost a block is 24 or 32 channels, so a layer of 64
 * has 2 blocks, too few to share out: its tiles are shared instead (they
 * write apart too), each thread reading every block's weights. */
Parallel schedule_conv_parallel(const ConvGeom *g, const ConvSchedule *s,
                                int64_t batch) {
  int64_t work = schedule_conv_work(g), blocks = g->O / g->groups / s->ocb;
  Parallel par = schedule_parallel(work, batch, blocks, !s->windows);
  if (s->chan_inner && par != PAR_SAMPLES && blocks < 4 &&
      work * batch >= PARALLEL_WORK && s->tiles >= 2)
    par = PAR_TILES;
  return par;
}

/* The chunks of positions of the weight gradient's channel lanes. */
static const char *chunks(Arena *a, const ConvSchedule *s) {
  if (s->dw_all)
    return "every sample's positions at once";
  return arena_printf(
      a, "each sample's positions %" PRId64 " output rows at a time",
      s->dw_rows);
}

const char *schedule_describe(Arena *a, const ConvSchedule *s, ConvPass pass) {
  if (!s->tiled)
    return "plain (tiling off)";
  if (s->dw_ochan)
    return arena_printf(a,
                        "input copied zero-padded, dy channels innermost; "
                        "accumulators: %" PRId64 " output channels x %" PRId64
                        " input channels x %" PRId64
                        " kw taps, over %s; sums kept between chunks%s",
                        s->width, s->ocb, s->kwb, chunks(a, s),
                        s->parallel ? "; blocks shared out among threads" : "");
  if (s->dw_chan)
    return arena_printf(
        a,
        "input copied zero-padded, channels innermost; accumulators: %" PRId64
        " output channels x %" PRId64 " input channels of a tap, over %s; "
        "sums kept between chunks%s",
        s->ocb, s->width, chunks(a, s),
        s->parallel ? "; blocks shared out among threads" : "");
  const char *acc =
      pass == CONV_WEIGHT
          ? arena_printf(a,
                         "accumulators: %" PRId64 " output channels x %" PRId64
                         " kw taps x %" PRId64 " lanes of positions",
                         s->ocb, s->kwb, s->width)
      : s->chan_inner ? arena_printf(a,
                                     "weights packed by blocks of %" PRId64
                                     " output channels; accumulators: %" PRId64
                                     " positions x %" PRId64 " output channels",
                                     s->ocb, s->width, s->ocb)
                      : arena_printf(a,
                                     "accumulators: %" PRId64
                                     " output channels x %" PRId64 " positions",
                                     s->ocb, s->width);
  if (s->icb)
    acc = arena_printf(a, "%s; input channels in passes of %" PRId64, acc,
                       s->icb);
  if (s->samples_outer)
    acc = arena_printf(a, "%s; samples outermost, sums kept between them", acc);
  if (s->dw_ob)
    acc = arena_printf(a,
                       "%s; in blocks of %" PRId64 " output blocks by %" PRId64
                       " input channels",
                       acc, s->dw_ob, s->dw_ic);
  if (s->chunk)
    acc = arena_printf(a, "%s; tiles through chunks of %" PRId64 " blocks", acc,
                       s->chunk);
  if (s->stage)
    acc = arena_printf(a,
                       "%s; outputs through a stage of %" PRId64
                       " tiles, a channel's run at a time",
                       acc, s->stage);
  if (s->parallel)
    acc = arena_printf(a, "%s; %s shared out among threads", acc,
                       s->parallel == PAR_SAMPLES ? "samples"
                       : s->parallel == PAR_TILES ? "tiles"
                       : s->chunk                 ? "chunks"
                                                  : "blocks");
  const char *copy =
      !s->pad_copy ? ""
      : s->phase_h * s->phase_w > 1
          ? arena_printf(a,
                         "input copied zero-padded into %" PRId64 " x %" PRId64
                         " planes of the stride's phases%s; ",
                         s->phase_h, s->phase_w,
                         s->hwc ? ", channels innermost" : "")
      : s->hwc ? "input copied zero-padded, channels innermost; "
               : "input copied zero-padded; ";
  if (s->row_stores)
    acc = arena_printf(a, "%s; stores row by row", acc);
  int64_t spare = s->tiles * s->width - s->positions;
  if (s->windows)
    return arena_printf(a,
                        "every output of the batch a position, %" PRId64
                        " of them, the input copied as their windows; %s; "
                        "%" PRId64 " tiles (%" PRId64 " spare positions)",
                        s->positions, acc, s->tiles, spare);
  const char *last =
      spare == 0    ? ""
      : s->pad_copy ? arena_printf(a, " (%" PRId64 " spare positions)", spare)
                    : " (the last ending at the last position)";
  return arena_printf(a,
                      "%srows flattened to %" PRId64
                      " positions%s; %s; %" PRId64 " tiles%s, no guards",
                      copy, s->positions,
                      pass == CONV_WEIGHT ? ", dy copied along them" : "", acc,
                      s->tiles, last);
}

int64_t largest_divisor(int64_t n, int64_t most) {
  for (int64_t d = most < n ? most : n; d > 1; d--)
    if (n % d == 0)
      return d;
  return 1;
}

/* Bytes of weights a chunk may hold: half of this core class's L2 (512
 * KB), the rest for the tile's input rows and the stores. Without chunks,
 * a block's weights stay in cache but the whole input streams through
 * once per block: VGG16's 224 x 224 layers then ran at half the rate of
 * its small ones. */
enum { CHUNK_BYTES = 256 << 10 };

/* A block's weights for all its input channels can pass the L2 cache:
 * VGG16's 512-channel layers hold 590 KB a block, which every tile of 3
 * positions read again from L3. In passes of icb input channels they
 * stay. */
static int64_t input_chunk(const ConvGeom *g, const ConvSchedule *s) {
  int64_t cg = g->C / g->groups, per = s->ocb * g->KH * g->KW * 4;
  if (!s->chan_inner || cg * per <= CHUNK_BYTES)
    return 0;
  return largest_divisor(cg, CHUNK_BYTES / per < 1 ? 1 : CHUNK_BYTES / per);
}

/* The weight gradient reads, for each block of channels, input channel
 * and tap, dy's rows for the block and the input's plane in every sample.
 * When a batch of them passes the budget of L2 the loop reads them from
 * L3 once per tap: LeNet-5's c1.dweight at batch 64 (957 KB for each of
 * its 25 taps) ran at 8 GFLOP/s. Samples outermost, one sample's rows
 * stay in cache through all the taps, and the tiles' sums wait in a
 * scratch buffer between samples (a few loads and stores per tile). */
void schedule_dw_order(const ConvGeom *g, ConvSchedule *s, int64_t batch) {
  /* bytes of a block's dy rows and of an input channel's planes */
  int64_t rows = s->ocb * s->tiles * s->width * batch * 4,
          planes =
              s->phase_h * s->phase_w * s->plane_h * s->plane_w * batch * 4;
  s->samples_outer = s->tiled && batch > 1 && g->KH * g->KW / s->kwb > 1 &&
                     rows + planes > CHUNK_BYTES;
  /* Else the blocks of output channels each read every input channel's
   * plane in every sample, and the input channels every block's rows:
   * when all of them pass L2, ResNet-18's layer4 read 1.5 MB of planes
   * again for each of its 512 channels (135 ms of a 3.5 s training
   * step). Blocks of both whose rows fit half of L2 each keep them. */
  if (!s->tiled || s->samples_outer)
    return;
  int64_t nob = g->O / g->groups / s->ocb, cg = g->C / g->groups;
  if (nob * rows + cg * planes <= CHUNK_BYTES)
    return;
  int64_t most = CHUNK_BYTES / 2 / rows;
  if (s->parallel == PAR_BLOCKS && g->groups <= 1 && most > nob / 4)
    most = nob / 4; /* 4 outer blocks at least, for threads */
  s->dw_ob = largest_divisor(nob, most < 1 ? 1 : most);
  s->dw_ic = largest_divisor(cg, CHUNK_BYTES / 2 / planes);
}

/* What the weight gradients with channels in the lanes share: a tiled nest
 * over the input copied zero-padded in one plane per channel (a stride is
 * a longer step between positions), threads sharing its blocks of output
 * channels. */
static void dw_lanes_copy(const ConvGeom *g, ConvSchedule *s, int64_t batch,
                          int64_t blocks) {
  ConvGeom p = padded_geom(g);
  s->tiled = s->pad_copy = 1;
  s->phase_h = s->phase_w = 1;
  s->plane_h = p.H;
  s->plane_w = p.W;
  s->positions = g->OH * g->OW;
  s->tiles = 1;
  s->parallel = schedule_parallel(schedule_conv_work(g), batch, blocks, 0);
}

/* The weight gradient with input channels in the lanes (schedule.h,
 * dw_chan). The nest over positions sums, for each tap, dy's element (a
 * broadcast) times a run of input channels at the tap's shift, into ocb x
 * width accumulators: the forward pass's channels-innermost tile turned
 * round, with every position of the batch as its reduction. The lanes'
 * nest does the same work as dot products along positions, but with few
 * positions (ResNet's 7 x 7 and 14 x 14) its tiles were short and their
 * lane sums long. ResNet-18 at batch 8 on one core (Xeon, AVX-512):
 * layer4's weight gradients took 91-97 ms that way, 20 with AVX-512's
 * tiles here, and layer1's 66-70 against 15-17; the same code built
 * for AVX2 (-march=haswell), 104 against 57-61 and 71-73 against 55-61.
 * Needs the input channels in whole vectors. */
static int dw_chan(const ConvGeom *g, int L, int64_t batch, ConvSchedule *s) {
  if (g->groups != 1 || g->C % L || g->uh > 1 || g->uw > 1)
    return 0;
  double best = -1;
  for (int64_t v = 1; v <= 4; v++) {
    if (g->C % (v * L))
      continue;
    for (int64_t ocb = 1; ocb * v <= max_acc(L); ocb++) {
      if (g->O % ocb)
        continue;
      /* cycles per vector multiply-add: the broadcasts and loads, or the
       * multiply-adds; then more chains to hide their latency */
      double fma = (double)(ocb * v), mem = (double)(ocb + v);
      double cost = (fma > mem ? fma : mem) / fma - 1e-3 * fma;
      if (best < 0 || cost < best) {
        best = cost;
        s->ocb = ocb;
        s->width = v * L;
      }
    }
  }
  if (s->ocb * (s->width / L) < 8) /* too few chains for the latency */
    return 0;
  ConvGeom p = padded_geom(g);
  dw_lanes_copy(g, s, batch, g->O / s->ocb);
  s->dw_chan = s->hwc = 1;
  s->hwc_block = s->width;
  s->kwb = 1;
  /* chunks whose run of the copy (width channels) fits half of L2 */
  int64_t run = s->width * 4 * p.W;
  s->dw_all = run * p.H * batch <= CHUNK_BYTES;
  int64_t most = (CHUNK_BYTES / run - (g->KH - 1) * g->dh) / g->sh;
  s->dw_rows = s->dw_all ? g->OH : largest_divisor(g->OH, most < 1 ? 1 : most);
  return 1;
}

/* The weight gradient with output channels in the lanes (schedule.h,
 * dw_ochan), where the input channels do not fill a vector but the
 * output channels do: LeNet-5's c3 (6 in, 16 out) and the first layer of
 * an image network (3 in). Per position, each of the tile's taps is one
 * broadcast of the input and a multiply-add with dy's run of channels.
 * The taps of a tile are at most 16, which gcc unrolls completely; the
 * run is longer than 16 channels, which gcc would unroll too and then
 * leave scalar (LeNet-5's c3.dweight: 2.1 ms positions in lanes, 6.2 with
 * its 16 channels in them). */
static int dw_ochan(const ConvGeom *g, int L, int64_t batch, ConvSchedule *s) {
  if (g->groups != 1 || g->O % L || g->uh > 1 || g->uw > 1)
    return 0;
  double best = -1;
  for (int64_t v = 1; v <= 4; v++) {
    if (g->O % (v * L) || v * L <= 16) /* gcc: schedule_conv's widths */
      continue;
    for (int64_t cb = 1; cb <= g->C; cb++)
      for (int64_t kb = 1; kb <= g->KW; kb++) {
        int64_t t = cb * kb;
        if (g->C % cb || g->KW % kb || t > 16 || v * t > max_acc(L))
          continue;
        double fma = (double)(v * t), mem = (double)(t + v);
        double cost = (fma > mem ? fma : mem) / fma - 1e-3 * fma;
        if (best < 0 || cost < best) {
          best = cost;
          s->width = v * L;
          s->ocb = cb;
          s->kwb = kb;
        }
      }
  }
  if (best < 0 || s->ocb * s->kwb * (s->width / L) < 8)
    return 0;
  dw_lanes_copy(g, s, batch, g->O / s->width);
  s->dw_ochan = 1;
  /* chunks whose rows of dy's block (width channels) fit half of L2 */
  int64_t run = s->width * 4 * g->OW;
  s->dw_all = run * g->OH * batch <= CHUNK_BYTES;
  int64_t most = CHUNK_BYTES / run;
  s->dw_rows = s->dw_all ? g->OH : largest_divisor(g->OH, most < 1 ? 1 : most);
  return 1;
}

ConvSchedule schedule_dw(const ConvGeom *g, int tile, int64_t batch) {
  ConvSchedule s = {0};
  if (tile && (dw_chan(g, tile, batch, &s) || dw_ochan(g, tile, batch, &s)))
    return s;
  /* With AVX-512's tiles (24 registers, 16-float lanes of positions) the
   * positions-innermost nest ran slower than with AVX2's wherever it was
   * measured: samples outermost, a tile loads and stores its sums at
   * every sample, and a load of x splits across two cache lines at every
   * tap past the first (ResNet-18's layer1 and layer2, batch 8, before
   * dw_chan took them: 76-84 ms against 60-67); in blocks, LeNet-5's
   * c3.dweight (batch 64) 2.1-2.3 against 1.7-1.8 ms and AlexNet's grouped
   * conv4.dweight and conv5.dweight (batch 8) 80 and 54 against 39-41 and
   * 26-28 ms. (Only ResNet-18's layer3, in blocks, had gained from them,
   * 31-36 against 57-59 ms, before dw_chan took it.) The nest now serves
   * only layers the channel lanes do not take: few channels, groups. So
   * AVX2's widths are tried, lanes first, before it is built. */
  if (tile == TARGET_AVX512)
    return schedule_dw(g, TARGET_AVX2, batch);
  s = schedule_conv(g, CONV_WEIGHT, tile);
  if (!s.tiled)
    return s;
  s.parallel = schedule_parallel(
      schedule_conv_work(g), batch,
      g->groups > 1 ? g->groups : g->O / g->groups / s.ocb, 0);
  schedule_dw_order(g, &s, batch);
  return s;
}

void schedule_chunk(const ConvGeom *g, ConvSchedule *s) {
  int64_t nob = g->O / g->groups / s->ocb;
  s->icb = input_chunk(g, s);
  int64_t icb = s->icb ? s->icb : g->C / g->groups;
  int64_t block = s->ocb * icb * g->KH * g->KW * g->groups * 4;
  int64_t most = CHUNK_BYTES / block;
  if (s->parallel == PAR_BLOCKS && most > nob / 4)
    most = nob / 4; /* chunks for 4 threads at least */
  s->chunk = largest_divisor(nob, most < 1 ? 1 : most);
}

/* The L1 data cache's sets (32 KB of 8 ways, 48 KB of 12: 64 sets of
 * 64-byte lines), and the most lines of one set a tile may write. */
enum { L1_SETS = 64, L1_WAYS = 8 };

/* A channels-innermost tile writes each of its positions' chunk of
 * channels a plane apart. Where the planes' size is a multiple of a few
 * kilobytes, those lines fall in a few of L1's sets, and the next tile,
 * writing the same lines' next positions, finds them evicted: VGG16's 224
 * x 224 planes (49 pages) put all 64 channels' lines in one set, its
 * 112 x 112 ones in 4. There the tiles of a group put their outputs in a
 * stage of 12 KB or so, by channel, and each channel's run of positions
 * is written out in order. VGG16's features.2 (one thread, batch 1, the
 * builds alternated): 49.6 -> 41.2 ms (by hand in its generated code),
 * 37.0 with hwc_columns' copy. */
void schedule_stage(const ConvGeom *g, ConvSchedule *s) {
  int64_t bytes = g->OH * g->OW * 4, lines = bytes / 64;
  if (!s->chan_inner || s->windows || g->groups > 1 || bytes % 64)
    return;
  int64_t sets = L1_SETS, chans = s->chunk * s->ocb;
  for (int64_t l = lines % L1_SETS; l % 2 == 0 && sets > 1; l /= 2)
    sets /= 2; /* the sets the planes' lines fall in: 64 / gcd(lines, 64) */
  if (chans / sets <= L1_WAYS)
    return;
  s->stage = (48 + s->width - 1) / s->width; /* 3 lines a channel */
  while (s->stage > 1 && (chans * s->stage * s->width * 4 > (24 << 10) ||
                          s->stage * s->width > s->plane_w))
    s->stage--; /* (flush_stage: a run spans two rows at most) */
  if (s->stage < 2)
    s->stage = 0;
}

/* Dense layers are a matrix product with one small side (the batch), so
 * they are bound by loading w: the forward pass keeps 16 lanes, a cache
 * line of w, for each of up to 4 outputs (2 vectors of AVX2, 1 of
 * AVX-512). Rows of w read 16 floats at a time stream at twice the rate
 * gcc's code reached reading 8 rows of 8 (AlexNet's fc6: 7 against 14
 * GB/s); AVX-512's 32 lanes left fc6 as it was and LeNet-5's f5 folding
 * 32 lanes into 16 (4.4 against 1.6 us with the sums across outputs,
 * lower_dense.c). dx keeps 4 vectors of in-features, dw 4 outputs by 3
 * vectors. */
DenseSchedule schedule_dense(int64_t in, int64_t out, DensePass pass,
                             int tile) {
  DenseSchedule s = {0};
  int64_t L = tile; /* lanes of a vector */
  if (!tile || in < L)
    return s;
  s.tiled = 1;
  switch (pass) {
  case DENSE_FORWARD:
    s.ob = largest_divisor(out, 4);
    s.width = in >= 16 ? 16 : L;
    break;
  case DENSE_DX:
    s.ob = 1;
    s.width = in >= 4 * L ? 4 * L : in / L * L;
    break;
  case DENSE_WEIGHT:
    /* 3 vectors, not 2: gcc unrolls a 16-lane loop completely and
     * vectorizes it across the wrong loop (LeNet-5's f5.dweight ran at
     * 4.6 GFLOP/s with 16 lanes, 40 with 24) */
    s.ob = largest_divisor(out, 4);
    s.width = in >= 3 * L ? 3 * L : L;
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
