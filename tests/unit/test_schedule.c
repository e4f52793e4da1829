/* Schedules (schedule.c) and the tiled nests lowering builds from them:
 * the positions of the copy's planes are those of the outputs, every
 * window stays in its plane's row, the tiles cover the positions and the
 * last one's reads stay inside the copy, blocks divide the channels; lowering
 * records the schedule on its kernel, with local accumulator arrays, and
 * -fno-tile (tile 0) gives the plain nests. That tiled and plain nests compute
 * the same values is the oracle tests' job (make check runs them both ways);
 * test_jit compares the backends on the tiled nests. */
#include <string.h>

#include "testutil.h"

#include "lower.h"
#include "schedule.h"

static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p,
                        int64_t d) {
  return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* The accumulator registers a target's tiles may take (schedule.c). */
static int64_t acc_regs(int lanes) { return lanes == TARGET_AVX512 ? 24 : 12; }

static void check_for(const ConvGeom *g, ConvPass pass, int L) {
  ConvSchedule s = schedule_conv(g, pass, L);
  assert_true(s.tiled);
  assert_true(s.ocb >= 1 && (g->O / g->groups) % s.ocb == 0);
  assert_true(s.width >= 1);
  assert_false(schedule_conv(g, pass, 0).tiled);
  if (pass == CONV_WEIGHT)
    assert_true(s.kwb >= 1 && g->KW % s.kwb == 0);
  ConvGeom p = padded_geom(g);
  /* the weight gradient always copies: its last tile runs past */
  int copy = pass == CONV_WEIGHT || g->sh > 1 || g->sw > 1 || g->ph > 0 ||
             g->pw > 0 || g->uh > 1 || g->uw > 1 || s.hwc;
  if (s.chan_inner) { /* 4 or 3 vectors of channels by a few positions;
                         an image's first layer 2 of more than 16 floats */
    assert_int_equal(pass, CONV_FORWARD);
    assert_true(s.ocb == 4 * L || s.ocb == 3 * L ||
                (s.ocb == 2 * L && 2 * L > 16 && g->C / g->groups < 16));
    assert_int_equal(s.width * s.ocb, acc_regs(L) * L);
    assert_true(g->OH * g->OW >= 128);
    assert_false(s.row_stores);
  }
  if (s.hwc) /* channels innermost in the copy: kernels past 1 x 1, stride 1 */
    assert_true(s.chan_inner && g->KH * g->KW > 1 && g->sh == 1 && g->sw == 1 &&
                g->uh <= 1 && g->uw <= 1);
  assert_int_equal(s.pad_copy, copy);
  int64_t PH = copy ? g->sh : 1, PW = copy ? g->sw : 1;
  assert_int_equal(s.phase_h, PH);
  assert_int_equal(s.phase_w, PW);
  assert_int_equal(s.plane_w, copy ? (p.W + PW - 1) / PW : g->W);
  assert_int_equal(s.positions, (g->OH - 1) * s.plane_w + g->OW);
  /* a window's last tap stays in its row of the plane */
  assert_true(g->OW - 1 + (g->KW - 1) * g->dw / PW < s.plane_w);
  /* the tiles cover the positions, the last at most a tile past them */
  int64_t covered = s.tiles * s.width;
  assert_true(covered >= s.positions);
  /* the tile fits the registers: runs of 8 lanes, or one tile */
  if (!s.chan_inner && (s.ocb > 1 || s.kwb > 1))
    assert_true(s.ocb * s.kwb * ((s.width + L - 1) / L) <= acc_regs(L));
  assert_true(s.chan_inner || s.width % 8 == 0 || s.tiles == 1);
  assert_true(covered - s.positions < s.width);
  int64_t reach =
      covered + (g->KH - 1) * g->dh / PH * s.plane_w + (g->KW - 1) * g->dw / PW;
  if (pass == CONV_FORWARD) /* chunks: whole blocks that fit the cache */
    for (int par = PAR_NONE; par <= PAR_BLOCKS; par++) {
      ConvSchedule t = s;
      t.parallel = par;
      schedule_chunk(g, &t);
      int64_t cg = g->C / g->groups, icb = t.icb ? t.icb : cg;
      assert_true(t.icb == 0 || (t.chan_inner && cg % t.icb == 0));
      int64_t nob = g->O / g->groups / t.ocb,
              block = t.ocb * icb * g->KH * g->KW * g->groups * 4;
      if (t.icb) /* passes: a block's weights for them fit the cache */
        assert_true(block <= 256 << 10);
      assert_true(t.chunk >= 1 && nob % t.chunk == 0);
      assert_true(t.chunk == 1 || t.chunk * block <= 256 << 10);
      if (par == PAR_BLOCKS) /* at least 4 chunks to share out */
        assert_true(t.chunk == 1 || nob / t.chunk >= 4);
    }
  if (copy) /* the deepest tap of the last tile reads inside its plane */
    assert_true(reach <= s.plane_h * s.plane_w);
  else /* the last tile ends at the last position instead */
    assert_true(covered == s.positions || s.width <= s.positions);
}

static void check(const ConvGeom *g, ConvPass pass) {
  check_for(g, pass, TARGET_AVX2);
  check_for(g, pass, TARGET_AVX512);
}

static void interior_and_tiles(void **state) {
  static const int64_t sizes[] = {1, 5, 7, 10, 14, 28, 56};
  static const int64_t ks[] = {1, 3, 5, 7};
  int n = 0;
  for (size_t a = 0; a < sizeof sizes / sizeof *sizes; a++)
    for (size_t b = 0; b < sizeof ks / sizeof *ks; b++)
      for (int64_t st = 1; st <= 2; st++)
        for (int64_t p = 0; p <= 3; p++)
          for (int64_t d = 1; d <= 2; d++)
            for (int64_t groups = 1; groups <= 2; groups++) {
              int64_t H = sizes[a], k = ks[b];
              int64_t OH = out_size(H, k, st, p, d);
              if (OH < 1)
                continue;
              ConvGeom g = {groups,
                            4 * groups,
                            H,
                            H + 1,
                            6 * groups,
                            OH,
                            out_size(H + 1, k, st, p, d),
                            k,
                            k,
                            st,
                            st,
                            p,
                            p,
                            d,
                            d,
                            1,
                            1};
              if (g.OW < 1)
                continue;
              check(&g, CONV_FORWARD);
              check(&g, CONV_WEIGHT);
              /* conv_dx's input spread apart at stride st: copied */
              ConvGeom u = g;
              u.sh = u.sw = 1;
              u.uh = u.uw = st;
              u.OH = out_size(H, k, 1, p, d);
              u.OW = out_size(H + 1, k, 1, p, d);
              if (u.OH >= 1 && u.OW >= 1)
                check(&u, CONV_FORWARD);
              n++;
            }
  assert_true(n > 300);
  (void)state;
}

/* Channels innermost where the outputs are many and the channels divide
 * into blocks of 32 or 24; the copy channels innermost for kernels past
 * 1 x 1 at stride 1; input channels in passes when a block's weights
 * pass 256 KB. */
static void channels_innermost(void **state) {
  static const struct {
    int64_t C, H, O, k, s, p;
    int chan_inner, hwc;
    int64_t ocb, icb;
  } cases[] = {
      {64, 56, 64, 3, 1, 1, 1, 1, 32, 0},     /* ResNet-18 layer1 */
      {512, 28, 512, 3, 1, 1, 1, 1, 32, 128}, /* VGG16 features.19 */
      {64, 20, 48, 3, 1, 1, 1, 1, 24, 0},     /* 24 lanes */
      {512, 7, 512, 3, 1, 1, 0, 0, 0, 0},     /* 49 positions: too few */
      {256, 56, 64, 1, 1, 0, 1, 0, 32, 0},    /* 1 x 1: no copy */
      {64, 56, 128, 3, 2, 1, 1, 0, 32, 0},    /* stride 2: NCHW planes */
      {16, 28, 6, 5, 1, 2, 0, 0, 0, 0},       /* 6 channels */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    int64_t OH = out_size(cases[i].H, cases[i].k, cases[i].s, cases[i].p, 1);
    ConvGeom g = {1,          cases[i].C, cases[i].H, cases[i].H, cases[i].O,
                  OH,         OH,         cases[i].k, cases[i].k, cases[i].s,
                  cases[i].s, cases[i].p, cases[i].p, 1,          1,
                  1,          1};
    ConvSchedule s = schedule_conv(&g, CONV_FORWARD, TARGET_AVX2);
    schedule_chunk(&g, &s);
    assert_int_equal(s.chan_inner, cases[i].chan_inner);
    assert_int_equal(s.hwc, cases[i].hwc);
    if (cases[i].chan_inner)
      assert_int_equal(s.ocb, cases[i].ocb);
    assert_int_equal(s.icb, cases[i].icb);
    check(&g, CONV_FORWARD);
    assert_false(schedule_conv(&g, CONV_WEIGHT, TARGET_AVX2).chan_inner);
  }
  /* an image's first layer (ResNet's conv1): with AVX-512, 2 vectors of
   * channels by 12 positions; with AVX2, 4 by 3 (2 would be 16 floats) */
  ConvGeom c1 = {1, 3, 224, 224, 64, 112, 112, 7, 7, 2, 2, 3, 3, 1, 1, 1, 1};
  ConvSchedule w = schedule_conv(&c1, CONV_FORWARD, TARGET_AVX512);
  assert_true(w.chan_inner && w.ocb == 32 && w.width == 12);
  ConvSchedule n = schedule_conv(&c1, CONV_FORWARD, TARGET_AVX2);
  assert_true(n.chan_inner && n.ocb == 32 && n.width == 3);
  check_for(&c1, CONV_FORWARD, TARGET_AVX512);
  (void)state;
}

/* The batch's outputs as the positions (schedule_windows): ResNet-18's
 * 7 x 7 layer4 at batch 8, whose flattened rows leave a quarter of the
 * positions idle, on both targets: every tile's positions outputs but
 * the last's spare ones, channels innermost, and threads not sharing
 * out samples (the positions span them). Not at batch 1 (too few
 * positions to pay for packing the weights) unless the weights are
 * packed once and kept (inference), nor where 4 of 5 positions
 * are outputs already (layer3's 14 x 14), nor with groups, nor where the
 * copy would pass 64 MB (batch 128), nor over dy spread apart. */
static void batch_windows(void **state) {
  ConvGeom l4 = {1, 512, 7, 7, 512, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  int targets[] = {TARGET_AVX2, TARGET_AVX512};
  for (int t = 0; t < 2; t++) {
    int L = targets[t];
    ConvSchedule s = schedule_conv(&l4, CONV_FORWARD, L);
    assert_false(s.chan_inner);
    schedule_windows(&l4, &s, L, 8, 0);
    assert_true(s.tiled && s.windows && s.chan_inner && s.pad_copy);
    assert_false(s.hwc);
    assert_int_equal(s.positions, 8 * 49);
    assert_int_equal(s.ocb, 4 * L);
    assert_int_equal(s.width, L == TARGET_AVX2 ? 3 : 6);
    assert_int_equal(s.tiles, (392 + s.width - 1) / s.width);
    assert_true(schedule_conv_parallel(&l4, &s, 8) != PAR_SAMPLES);
    ConvSchedule one = schedule_conv(&l4, CONV_FORWARD, L);
    schedule_windows(&l4, &one, L, 1, 0);
    assert_false(one.windows);
    one = schedule_conv(&l4, CONV_FORWARD, L);
    schedule_windows(&l4, &one, L, 1, 1);
    assert_true(one.windows && one.chan_inner);
    assert_int_equal(one.positions, 49);
    ConvSchedule big = schedule_conv(&l4, CONV_FORWARD, L);
    schedule_windows(&l4, &big, L, 128, 0);
    assert_false(big.windows);
  }
  ConvGeom l3 = {1, 256, 14, 14, 256, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  ConvSchedule s = schedule_conv(&l3, CONV_FORWARD, TARGET_AVX512);
  schedule_windows(&l3, &s, TARGET_AVX512, 8, 0);
  assert_false(s.windows);
  ConvGeom grp = l4;
  grp.groups = 2;
  s = schedule_conv(&grp, CONV_FORWARD, TARGET_AVX512);
  schedule_windows(&grp, &s, TARGET_AVX512, 8, 0);
  assert_false(s.windows);
  ConvGeom spread = l4;
  spread.H = spread.W = 13;
  spread.uh = spread.uw = 2;
  s = schedule_conv(&spread, CONV_FORWARD, TARGET_AVX512);
  schedule_windows(&spread, &s, TARGET_AVX512, 8, 0);
  assert_false(s.windows);
  (void)state;
}

/* A forward tile's outputs go through a stage (schedule_stage) where
 * the planes of its channels fall in a few of L1's sets: VGG16's 224 x
 * 224 (every plane's line in one set) and 112 x 112 (4 sets for 64
 * channels); not at 56 x 56 (16 sets, 4 lines each), nor at 14 x 14
 * (planes not whole lines), nor positions innermost. */
static void output_stage(void **state) {
  ConvGeom big = {1, 64, 224, 224, 64, 224, 224, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  ConvSchedule s = schedule_conv(&big, CONV_FORWARD, TARGET_AVX512);
  s.parallel = PAR_TILES;
  schedule_chunk(&big, &s);
  schedule_stage(&big, &s);
  assert_true(s.chan_inner);
  assert_true(s.stage >= 2);
  assert_true(s.stage * s.width >= 16); /* a line of each channel at least */
  assert_true(s.stage * s.width <= s.plane_w); /* two rows at most */
  assert_true(s.chunk * s.ocb * s.stage * s.width * 4 <= 24 << 10);
  ConvGeom mid = big;
  mid.H = mid.W = mid.OH = mid.OW = 112;
  s = schedule_conv(&mid, CONV_FORWARD, TARGET_AVX512);
  schedule_chunk(&mid, &s);
  schedule_stage(&mid, &s);
  assert_true(s.stage >= 2);
  ConvGeom l1 = big;
  l1.H = l1.W = l1.OH = l1.OW = 56;
  s = schedule_conv(&l1, CONV_FORWARD, TARGET_AVX512);
  schedule_chunk(&l1, &s);
  schedule_stage(&l1, &s);
  assert_true(s.chan_inner);
  assert_int_equal(s.stage, 0);
  ConvGeom l3 = {1, 256, 14, 14, 256, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  s = schedule_conv(&l3, CONV_FORWARD, TARGET_AVX512);
  schedule_chunk(&l3, &s);
  schedule_stage(&l3, &s);
  assert_int_equal(s.stage, 0);
  ConvSchedule flat = {0};
  flat.tiled = 1;
  flat.ocb = 16;
  flat.width = 32;
  flat.chunk = 4;
  schedule_stage(&big, &flat);
  assert_int_equal(flat.stage, 0);
  (void)state;
}

/* Weights of which 5 blocks fit a chunk, in 12 blocks: shared out among
 * threads, the chunks are 3 blocks (4 chunks), not 4 (3 chunks). */
static void chunks_for_threads(void **state) {
  ConvGeom g = {1, 1344, 7, 7, 12, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  ConvSchedule s = {.tiled = 1, .ocb = 1, .parallel = PAR_NONE};
  schedule_chunk(&g, &s);
  assert_int_equal(s.chunk, 4);
  s.parallel = PAR_BLOCKS;
  schedule_chunk(&g, &s);
  assert_int_equal(s.chunk, 3);
  (void)state;
}

/* Row-by-row (masked) stores only where an output is a few multiply-adds:
 * with AVX2 32 or fewer, LeNet-5's c1 (1 channel, 5 x 5), not its c3 (6
 * channels); with AVX-512 fewer than 512, c3 and c3's input gradient (16
 * channels) too, but not a 1 x 1 layer of 512 channels nor a 3 x 3 one;
 * never in the weight gradient, whose stores are its dot products, nor in
 * channels-innermost tiles. */
static void row_stores(void **state) {
  ConvGeom c1 = {1, 1, 28, 28, 6, 28, 28, 5, 5, 1, 1, 2, 2, 1, 1, 1, 1};
  ConvGeom c3 = {1, 6, 14, 14, 16, 10, 10, 5, 5, 1, 1, 0, 0, 1, 1, 1, 1};
  ConvGeom l4 = {1, 512, 7, 7, 512, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  ConvGeom l4_1x1 = {1, 512, 7, 7, 2048, 7, 7, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1};
  ConvGeom c3_dx = {1, 16, 10, 10, 6, 14, 14, 5, 5, 1, 1, 4, 4, 1, 1, 1, 1};
  ConvGeom vgg = {1, 64, 56, 56, 64, 56, 56, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  assert_true(schedule_conv(&c1, CONV_FORWARD, TARGET_AVX2).row_stores);
  assert_false(schedule_conv(&c1, CONV_WEIGHT, TARGET_AVX2).row_stores);
  assert_false(schedule_conv(&c3, CONV_FORWARD, TARGET_AVX2).row_stores);
  assert_false(schedule_conv(&l4, CONV_FORWARD, TARGET_AVX2).row_stores);
  assert_true(schedule_conv(&c3, CONV_FORWARD, TARGET_AVX512).row_stores);
  assert_true(schedule_conv(&c3_dx, CONV_FORWARD, TARGET_AVX512).row_stores);
  assert_false(schedule_conv(&c3_dx, CONV_FORWARD, TARGET_AVX2).row_stores);
  assert_false(schedule_conv(&l4, CONV_FORWARD, TARGET_AVX512).row_stores);
  assert_false(schedule_conv(&l4_1x1, CONV_FORWARD, TARGET_AVX512).row_stores);
  assert_false(schedule_conv(&c1, CONV_WEIGHT, TARGET_AVX512).row_stores);
  ConvSchedule v = schedule_conv(&vgg, CONV_FORWARD, TARGET_AVX512);
  assert_true(v.chan_inner && !v.row_stores);
  (void)state;
}

/* Samples outermost in the weight gradient where a batch of dy's rows and
 * input planes passes the L2 budget: LeNet-5's c1 at batch 64 (about 15
 * KB a sample), not at batch 8, nor a 1 x 1 kernel, which reads each
 * sample once anyway. */
static void dw_samples_outer(void **state) {
  ConvGeom c1 = {1, 1, 28, 28, 6, 28, 28, 5, 5, 1, 1, 2, 2, 1, 1, 1, 1};
  ConvGeom one = {1, 64, 28, 28, 64, 28, 28, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1};
  ConvSchedule s = schedule_conv(&c1, CONV_WEIGHT, TARGET_AVX2);
  schedule_dw_order(&c1, &s, 64);
  assert_true(s.samples_outer);
  schedule_dw_order(&c1, &s, 8);
  assert_false(s.samples_outer);
  s = schedule_conv(&one, CONV_WEIGHT, TARGET_AVX2);
  schedule_dw_order(&one, &s, 64);
  assert_false(s.samples_outer);
  (void)state;
}

/* Otherwise, blocks of output and input channels whose rows fit half of
 * L2 each, where all of them do not fit (ResNet-18's layer4 at batch 8);
 * none where they do (LeNet-5's c3 at batch 1). */
static void dw_blocks(void **state) {
  ConvGeom l4 = {1, 512, 7, 7, 512, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  ConvGeom c3 = {1, 6, 14, 14, 16, 10, 10, 5, 5, 1, 1, 0, 0, 1, 1, 1, 1};
  ConvSchedule s = schedule_conv(&l4, CONV_WEIGHT, TARGET_AVX2);
  s.parallel = PAR_BLOCKS;
  schedule_dw_order(&l4, &s, 8);
  int64_t nob = 512 / s.ocb;
  int64_t rows = s.ocb * s.tiles * s.width * 8 * 4,
          planes = s.phase_h * s.phase_w * s.plane_h * s.plane_w * 8 * 4;
  assert_false(s.samples_outer);
  assert_true(s.dw_ob > 1 && nob % s.dw_ob == 0 && nob / s.dw_ob >= 4);
  assert_true(s.dw_ic > 1 && 512 % s.dw_ic == 0);
  assert_true(s.dw_ob * rows <= (256 << 10) / 2);
  assert_true(s.dw_ic * planes <= (256 << 10) / 2);
  s = schedule_conv(&c3, CONV_WEIGHT, TARGET_AVX2);
  schedule_dw_order(&c3, &s, 1);
  assert_int_equal(s.dw_ob, 0);
  assert_int_equal(s.dw_ic, 0);
  (void)state;
}

/* Input channels in the lanes of the weight gradient where they fill
 * whole vectors and there is one group (schedule_dw): tiles that divide
 * both channel counts and fit the registers with at least 8 chains, and
 * chunks of positions whose run of the copy fits half of L2 (all samples
 * at once for ResNet-18's layer4 at batch 8; rows of one sample that
 * divide its outputs for layer1's first, stride 2 too). Not for 3 input
 * channels (its conv1) nor groups. */
static void dw_channel_lanes(void **state) {
  ConvGeom l4 = {1, 512, 7, 7, 512, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  ConvGeom l1 = {1, 64, 56, 56, 64, 56, 56, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  ConvGeom s2 = {1, 128, 56, 56, 256, 28, 28, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1};
  ConvGeom c1 = {1, 3, 224, 224, 64, 112, 112, 7, 7, 2, 2, 3, 3, 1, 1, 1, 1};
  ConvGeom gr = {2, 64, 28, 28, 64, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  const ConvGeom *yes[] = {&l4, &l1, &s2};
  for (int L = TARGET_AVX2; L <= TARGET_AVX512; L *= 2)
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
      const ConvGeom *g = yes[i];
      ConvSchedule s = schedule_dw(g, L, 8);
      assert_true(s.tiled && s.dw_chan && s.hwc && s.pad_copy);
      assert_true(s.width % L == 0 && g->C % s.width == 0);
      assert_int_equal(s.hwc_block, s.width);
      assert_true(g->O % s.ocb == 0);
      int64_t acc = s.ocb * (s.width / L);
      assert_true(acc >= 8 && acc <= acc_regs(L));
      assert_true(s.dw_rows >= 1 && g->OH % s.dw_rows == 0);
      ConvGeom p = padded_geom(g);
      int64_t run = s.width * 4 * p.W;
      if (s.dw_all)
        assert_true(run * p.H * 8 <= 256 << 10);
      else
        assert_true(s.dw_rows == 1 ||
                    run * ((s.dw_rows - 1) * g->sh + g->KH) <= 256 << 10);
      assert_false(schedule_dw(g, 0, 8).tiled);
    }
  assert_true(schedule_dw(&l4, TARGET_AVX512, 8).dw_all);
  assert_false(schedule_dw(&l1, TARGET_AVX2, 8).dw_all);
  assert_false(schedule_dw(&c1, TARGET_AVX512, 8).dw_chan);
  assert_false(schedule_dw(&gr, TARGET_AVX512, 8).dw_chan);
  (void)state;
}

/* Output channels in the lanes where the input channels are too few for
 * them (ResNet's conv1, 3 in and 64 out): runs of more than 16 channels
 * that divide the outputs, at most 16 taps from whole blocks of input
 * channels and kw taps, at least 8 accumulators within the registers.
 * Not for LeNet-5's c3, whose 16 output channels gcc would unroll. */
static void dw_output_lanes(void **state) {
  ConvGeom c1 = {1, 3, 224, 224, 64, 112, 112, 7, 7, 2, 2, 3, 3, 1, 1, 1, 1};
  ConvGeom c3 = {1, 6, 14, 14, 16, 10, 10, 5, 5, 1, 1, 0, 0, 1, 1, 1, 1};
  for (int L = TARGET_AVX2; L <= TARGET_AVX512; L *= 2) {
    ConvSchedule s = schedule_dw(&c1, L, 8);
    assert_true(s.tiled && s.dw_ochan && !s.dw_chan && s.pad_copy);
    assert_true(s.width % L == 0 && s.width > 16 && 64 % s.width == 0);
    assert_true(3 % s.ocb == 0 && 7 % s.kwb == 0 && s.ocb * s.kwb <= 16);
    int64_t acc = s.ocb * s.kwb * (s.width / L);
    assert_true(acc >= 8 && acc <= acc_regs(L));
    /* chunks of rows whose dy block fits half of L2: 26 MB of dy at
     * batch 8 */
    int64_t run = s.width * 4 * c1.OW;
    assert_false(s.dw_all);
    assert_true(s.dw_rows >= 1 && c1.OH % s.dw_rows == 0);
    assert_true(run * s.dw_rows <= 256 << 10 &&
                run * 2 * s.dw_rows > 256 << 10);
    assert_true(schedule_dw(&c1, L, 1).dw_rows < c1.OH);
    /* LeNet-5's c3 keeps positions in the lanes, in AVX2's tiles for
     * either target: 8-float vectors within 12 accumulators */
    ConvSchedule p = schedule_dw(&c3, L, 64);
    assert_false(p.dw_ochan || p.dw_chan);
    assert_true(p.tiled && p.width % 8 == 0);
    assert_true(p.ocb * p.kwb * (p.width / 8) <= 12);
  }
  (void)state;
}

/* The forward pass's lanes are 16 floats, a cache line of w, on both
 * targets (LeNet-5's f5, 400 in-features: 25 tiles), 8 where AVX2 has
 * fewer than 16 in-features. */
static void dense_tiles(void **state) {
  for (int t = 0; t < 2; t++) {
    int L = t ? TARGET_AVX512 : TARGET_AVX2;
    for (int64_t in = 1; in <= 100; in += 3)
      for (int64_t out = 1; out <= 20; out += 3)
        for (int p = DENSE_FORWARD; p <= DENSE_WEIGHT; p++) {
          DenseSchedule s = schedule_dense(in, out, (DensePass)p, L);
          assert_int_equal(s.tiled, in >= L);
          if (!s.tiled)
            continue;
          assert_true(s.ob >= 1 && out % s.ob == 0);
          assert_int_equal(s.tiles * s.width + s.rem, in);
          if (p == DENSE_FORWARD)
            assert_int_equal(s.width, in >= 16 ? 16 : 8);
          assert_false(schedule_dense(in, out, (DensePass)p, 0).tiled);
        }
  }
  DenseSchedule f5 = schedule_dense(400, 120, DENSE_FORWARD, TARGET_AVX512);
  assert_true(f5.width == 16 && f5.tiles == 25 && f5.rem == 0 && f5.ob == 4);
  (void)state;
}

static const char lenet[] =
    "model m {\n"
    "  input x[1, 28, 28]\n"
    "  output y = x -> c1: conv(6, k=5, p=2) -> tanh -> avgpool(2)\n"
    "    -> c3: conv(16, k=5, s=2) -> flatten -> f5: dense(10)\n"
    "  loss cross_entropy(y)\n"
    "}\n";

/* The kernel of the layer called name. */
static const Kernel *kernel(const Program *p, const char *name) {
  for (int i = 0; i < p->kernels.n; i++)
    if (strcmp(p->kernels.v[i]->name, name) == 0)
      return p->kernels.v[i];
  fail_msg("no kernel %s", name);
  return NULL;
}

static void lowering_records_schedules(void **state) {
  Compiled *c = compile_ok(lenet);
  Program *t = lower_passes(&c->d, c->a, c->g, 4, 0, LOWER_TILE | LOWER_FUSE);
  Program *p = lower_passes(&c->d, c->a, c->g, 4, 0, LOWER_FUSE);
  assert_int_equal(c->d.errors, 0);
  static const char *const names[] = {"c1", "c3", "f5"};
  for (int i = 0; i < 3; i++) {
    const Kernel *kt = kernel(t, names[i]), *kp = kernel(p, names[i]);
    assert_non_null(kt->schedule);
    assert_non_null(strstr(kt->schedule, "accumulators"));
    assert_int_equal(kt->locals.n, 1);
    assert_int_equal(kt->locals.v[0]->kind, BUF_LOCAL);
    assert_string_equal(kp->schedule, "plain (tiling off)");
    assert_int_equal(kp->locals.n, 0);
  }
  /* padding 2 at stride 1: a zero-padded copy, rows flattened */
  assert_non_null(strstr(kernel(t, "c1")->schedule, "zero-padded"));
  assert_non_null(strstr(kernel(t, "c1")->schedule, "flattened"));
  /* stride 2: the copy split into 2 x 2 planes of phases */
  assert_non_null(strstr(kernel(t, "c3")->schedule, "2 x 2 planes"));
  release(c);
  (void)state;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(interior_and_tiles),
      cmocka_unit_test(chunks_for_threads),
      cmocka_unit_test(channels_innermost),
      cmocka_unit_test(batch_windows),
      cmocka_unit_test(output_stage),
      cmocka_unit_test(row_stores),
      cmocka_unit_test(dw_samples_outer),
      cmocka_unit_test(dw_blocks),
      cmocka_unit_test(dw_channel_lanes),
      cmocka_unit_test(dw_output_lanes),
      cmocka_unit_test(dense_tiles),
      cmocka_unit_test(lowering_records_schedules),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
