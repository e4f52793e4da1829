/* Shape inference: the output shape of a node from its inputs and
 * attributes, with PyTorch's semantics, and the parameters it owns. */
#ifndef CNNC_SHAPE_H
#define CNNC_SHAPE_H

#include "graph.h"

/* Fills n->shape and adds n's parameters. Returns 0 after reporting an
 * error at n's place (the output shape is then meaningless). */
int shape_infer(Diag *d, Graph *g, Node *n);

#endif
