/* Lowering: the graph's forward pass (eval mode) as loop nests over
 * buffers, one kernel per layer that an output needs. */
#ifndef CNNC_LOWER_H
#define CNNC_LOWER_H

#include "loop.h"

/* batch: the samples the generated code handles at most per call. train:
 * the training step (forward in training mode, loss, backward; needs
 * autodiff first) instead of the forward pass. */
Program *lower(Diag *d, Arena *a, const Graph *g, int64_t batch, int train);
/* The passes lowering runs; lower() runs them all. */
enum {
  LOWER_TILE = 1,   /* tiled nests (schedule.h); without it every nest is
                       plain, one output element at a time (cnnc -fno-tile) */
  LOWER_FUSE = 2,   /* one kernel per fused chain (fuse.h; cnnc -fno-fuse) */
  LOWER_FMA = 4,    /* fused multiply-adds (contract.h; cnnc -fno-fma) */
  LOWER_AVX512 = 8, /* with LOWER_TILE: tiles for AVX-512's 32 registers of
                       16 floats instead of AVX2's 16 of 8 (cnnc --target) */
};
Program *lower_passes(Diag *d, Arena *a, const Graph *g, int64_t batch,
                      int train, unsigned passes);

#endif
