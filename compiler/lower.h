/* Lowering: the graph's forward pass (eval mode) as loop nests over
 * buffers, one kernel per layer that an output needs. */
#ifndef CNNC_LOWER_H
#define CNNC_LOWER_H

#include "loop.h"

/* batch: the samples the generated code handles at most per call. train:
 * the training step (forward in training mode, loss, backward; needs
 * autodiff first) instead of the forward pass. */
Program *lower(Diag *d, Arena *a, const Graph *g, int64_t batch, int train);
/* The same with tiling chosen: tile 0 builds every nest plain, one output
 * element at a time (cnnc -fno-tile); lower() tiles. */
Program *lower_tiled(Diag *d, Arena *a, const Graph *g, int64_t batch,
                     int train, int tile);

#endif
