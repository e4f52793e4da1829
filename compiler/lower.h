/* Lowering: the graph's forward pass (eval mode) as loop nests over
 * buffers, one kernel per layer that an output needs. */
#ifndef CNNC_LOWER_H
#define CNNC_LOWER_H

#include "loop.h"

/* batch: the samples the generated code handles at most per call. train:
 * the training step (forward in training mode, loss, backward; needs
 * autodiff first) instead of the forward pass. */
Program *lower(Diag *d, Arena *a, const Graph *g, int64_t batch, int train);

#endif
