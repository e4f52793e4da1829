/* Autodiff: the backward pass as ordinary graph nodes, made by
 * reverse-mode differentiation from the model's loss. */
#ifndef CNNC_AUTODIFF_H
#define CNNC_AUTODIFF_H

#include "graph.h"

/* Appends the backward nodes to g (from g->backward on). Every trainable
 * parameter's gradient is the node whose grad_of is that parameter.
 * Requires g->loss. */
void autodiff(Diag *d, Graph *g);

#endif
