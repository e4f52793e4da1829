/* Schedules: how a convolution's loops are blocked and tiled, chosen in
 * one place (schedule.c) by a cost heuristic from the fixed shapes. The
 * schedule is data: lowering builds the loop nest it describes, and
 * --dump-after and the generated code's comments show it. */
#ifndef CNNC_SCHEDULE_H
#define CNNC_SCHEDULE_H

#include "mem.h"

#include <stdint.h>

/* The vector units schedules are sized for (cnnc --target), as the floats
 * a vector holds: AVX2 has 16 registers of 8, AVX-512 32 registers of 16.
 * Schedules take the width as their tile argument, 0 asking for the plain
 * nest. */
enum { TARGET_AVX2 = 8, TARGET_AVX512 = 16 };

/* A convolution as a direct sum: out[o, oh, ow] = sum over the group's
 * input channels c and taps (kh, kw) of in[c, oh*sh - ph + kh*dh,
 * ow*sw - pw + kw*dw] w[...]. Per sample; C and O count all groups. */
typedef struct ConvGeom {
  int64_t groups, C, H, W, O, OH, OW;
  int64_t KH, KW, sh, sw, ph, pw, dh, dw;
  int64_t uh, uw; /* the input's rows and columns are uh and uw apart, zeros
                     between them (H and W count both; 0 is 1): conv_dx at a
                     stride above 1 */
} ConvGeom;

typedef enum ConvPass {
  CONV_FORWARD, /* out as above (also conv_dx at stride 1, as a forward
                   convolution of dy with the flipped kernel) */
  CONV_WEIGHT,  /* the weight gradient: a sum over samples and outputs;
                   dy is copied along the positions (zero where ow >= OW)
                   and every tap is a dot product of it with the copy */
} ConvPass;

typedef struct ConvSchedule {
  int tiled;         /* 0: the plain nest, one output element at a time */
  int pad_copy;      /* the input is first copied into a zero-padded scratch
                        buffer (padded_geom), so no window needs a guard */
  int64_t phase_h;   /* pad_copy: the strides; the copy holds each channel */
  int64_t phase_w;   /* as phase_h x phase_w planes, the padded element
                        (r, q) in plane (r % phase_h, q % phase_w) at
                        (r / phase_h, q / phase_w), so the taps of a
                        strided window read contiguous runs; else 1 */
  int64_t plane_h;   /* a plane's rows, with zero rows after the last so
                        that the last tile's spare positions read inside */
  int64_t plane_w;   /* a plane's columns (the input's width without a
                        copy) */
  int64_t positions; /* the output rows as one run of positions
                        p = oh * plane_w + ow, (OH - 1) * plane_w + OW of
                        them; tap (kh, kw) reads its plane at p +
                        (kh*dh / phase_h) * plane_w + kw*dw / phase_w. The
                        positions with ow >= OW are computed and dropped */
  int64_t ocb;       /* output channels per block, held in accumulators */
  int chan_inner;    /* forward: the block's channels are the innermost,
                        vectorized loop, each tap a position's input times
                        a run of the block's weights, packed by block
                        (ocb of them for each input channel and tap) at
                        the start of the call; width is then a few
                        positions. Else the positions are innermost and
                        each weight is a scalar */
  int windows;       /* chan_inner: the positions are every output of the
                        batch in order (sample, row, column), batch * OH *
                        OW of them, and the input is first copied as one
                        run per position holding its window (input
                        channels, then taps), zero in the padding; tiles
                        past the caller's samples are skipped
                        (schedule_windows) */
  int hwc;           /* chan_inner: the input is copied (pad_copy) with its
                        channels innermost, [phase][row][col][C] */
  int64_t hwc_block; /* hwc in blocks of this many channels (0: all C):
                        [C / block][sample][phase][row][col][block], a
                        block's runs at consecutive positions adjacent */
  int64_t kwb;       /* weight gradient: kw taps per block */
  int samples_outer; /* weight gradient: each sample's dy and input are
                        walked for every tap before the next sample's,
                        the sums so far kept in a scratch buffer between
                        samples (schedule_dw_order) */
  int64_t dw_ob;     /* weight gradient, not samples_outer: blocks of
                        output channels per outer block (0: no blocking) */
  int64_t dw_ic;     /* and input channels per pass within it, so that the
                        rows of both stay in L2 (0: all) */
  int dw_chan;       /* weight gradient with input channels in the lanes:
                        a tile is ocb output channels by width input
                        channels of one tap, summed over every position
                        (dy's element broadcast, a run of the input copied
                        channels innermost); positions go by in chunks,
                        the tiles' sums kept in a scratch buffer between
                        them (schedule_dw) */
  int dw_ochan;      /* weight gradient with output channels in the lanes:
                        a tile is width output channels by ocb input
                        channels times kwb kw taps of one kernel row, each
                        tap's input element broadcast, dy copied channels
                        innermost; every position of the batch at once */
  int dw_all;        /* dw_chan: a chunk is every sample's rows ... */
  int64_t dw_rows;   /* ... else dw_rows output rows of one sample */
  int64_t width;     /* positions per tile: the innermost, contiguous
                        loop, which the backends' compilers vectorize */
  int64_t tiles;     /* tiles across the positions, the last a whole one
                        when they are not a whole number of tiles: with a
                        copy it runs past them into the planes' zero rows,
                        without one it ends at the last position
                        (overlapping the one before, and storing only what
                        that did not) */
  int row_stores;    /* forward: a tile stores row by row (masked vector
                        stores), not position by position (scalar) */
  int parallel;      /* Parallel: what threads share out, set by lowering */
  int64_t chunk;     /* forward: blocks per chunk, whose weights fit in the
                        L2 cache: the tiles go by once per chunk, each
                        through its blocks (at least 4 chunks when threads
                        share out the blocks); schedule_chunk sets it */
  int64_t icb;       /* chan_inner: input channels per pass over the tiles
                        (a divisor of the group's; 0: all in one pass), so
                        that a block's weights for them fit in the L2
                        cache; the sums so far wait in a scratch buffer
                        between passes, summed in the same order */
  int64_t stage;     /* chan_inner: tiles whose outputs are gathered in a
                        local array, then written out a channel's run at a
                        time (schedule_stage); 0: each tile stores its own,
                        a position's channels a plane apart */
} ConvSchedule;

/* Work (multiply-adds per call) below which a nest runs on one thread:
 * handing out a loop costs a few microseconds. */
enum { PARALLEL_WORK = 1 << 20 };

/* What a nest's outermost, parallel loop runs over (Stmt.parallel). */
typedef enum Parallel {
  PAR_NONE,
  PAR_BLOCKS,  /* blocks of output channels (weight gradient: groups) */
  PAR_SAMPLES, /* the samples of the batch */
  PAR_TILES,   /* forward, channels innermost: the tiles of positions */
} Parallel;

/* work: multiply-adds per sample; batch: samples per call at most;
 * blocks: iterations of the block loop; by_sample: the samples write
 * apart (not in a weight gradient, which sums over them). */
Parallel schedule_parallel(int64_t work, int64_t batch, int64_t blocks,
                           int by_sample);
int64_t schedule_conv_work(const ConvGeom *g);
/* What threads share out of a tiled forward convolution (s->parallel). */
Parallel schedule_conv_parallel(const ConvGeom *g, const ConvSchedule *s,
                                int64_t batch);

typedef enum DensePass {
  DENSE_FORWARD, /* y[n, o] = b[o] + sum over i of x[n, i] w[o, i] */
  DENSE_DX,      /* dx[n, i] = sum over o of dy[n, o] w[o, i] */
  DENSE_WEIGHT,  /* dw[o, i] = sum over n of dy[n, o] x[n, i] */
} DensePass;

/* A dense layer's tiles: blocks of ob outputs, and the in-features (the
 * contiguous axis of x and w) in tiles of width, then one of rem. The
 * forward pass sums width partial sums per output (lanes) and adds them
 * up at the end; dx and dw keep each element's order of summation and
 * vectorize across in-features instead. */
typedef struct DenseSchedule {
  int tiled;
  int64_t ob, width, tiles, rem;
} DenseSchedule;

/* tile: the target's lanes (TARGET_AVX2, TARGET_AVX512), 0 for plain. */
DenseSchedule schedule_dense(int64_t in, int64_t out, DensePass pass, int tile);
const char *schedule_describe_dense(Arena *a, const DenseSchedule *s,
                                    DensePass pass);

/* Whether the forward convolution s (schedule_conv's) takes the batch's
 * outputs as its positions through a copy of their windows instead
 * (s->windows), for a batch of batch samples; rewrites s if so. kept:
 * inference, whose packed weights are made once, not each call. */
void schedule_windows(const ConvGeom *g, ConvSchedule *s, int tile,
                      int64_t batch, int kept);
/* The largest divisor of n no greater than most, 1 if none above 1. */
int64_t largest_divisor(int64_t n, int64_t most);
/* Sets s->chunk, once s->parallel is known. */
void schedule_chunk(const ConvGeom *g, ConvSchedule *s);
/* Sets s->stage for a forward convolution writing y's planes (OH x OW),
 * once s->chunk is known. */
void schedule_stage(const ConvGeom *g, ConvSchedule *s);
/* The schedule of a convolution pass; tile: the target's lanes, 0 for
 * the plain nest. */
ConvSchedule schedule_conv(const ConvGeom *g, ConvPass pass, int tile);
/* The convolution over the zero-padded copy of its input: rows and
 * columns exactly those the windows reach, no padding. */
ConvGeom padded_geom(const ConvGeom *g);
/* Whether the weight gradient walks samples outermost (samples_outer),
 * for a batch of batch samples, or else in blocks (dw_ob, dw_ic). */
void schedule_dw_order(const ConvGeom *g, ConvSchedule *s, int64_t batch);
/* The weight gradient's schedule, its threads and order (schedule_dw_order)
 * for a batch of batch samples. */
ConvSchedule schedule_dw(const ConvGeom *g, int tile, int64_t batch);
/* One line saying what the schedule is. */
const char *schedule_describe(Arena *a, const ConvSchedule *s, ConvPass pass);

#endif
