/* Fusion: which chains of nodes one kernel computes. A convolution or
 * dense layer, an eval-mode batch norm, or an add becomes the head of a
 * chain; what follows it element by element joins the head's epilogue, so
 * the chain's intermediate tensors are never stored:
 *
 *   conv | dense   [bn, eval mode only]  [add]  [activation]
 *   bn             [add]  [activation]
 *   add            [activation]
 *
 * and in the backward pass, a gradient times an activation's derivative:
 *
 *   conv_dx | dense_dx | pool_dx | add   act_dx
 *
 * A node joins only when it is the one consumer of the chain so far (in
 * training, backward nodes count as consumers), so nothing else reads
 * what the chain no longer stores. */
#ifndef CNNC_FUSE_H
#define CNNC_FUSE_H

#include "graph.h"

typedef struct Chain {
  const Node *head;
  const Node *bn;       /* a batch norm in eval mode on the head's sum */
  const Node *add;      /* adds residual */
  const Node *residual; /* the add's other input */
  const Node *act;      /* relu, leaky_relu, tanh or sigmoid, last */
  const Node *act_dx;   /* the derivative of an activation, last */
  const Node *value;    /* the activation value act_dx reads */
  const Node *last;     /* the node whose value the chain stores */
  const char *what;     /* "conv+bn+add+relu", for the kernel's comment */
} Chain;

/* The chain each node belongs to, by node id, or NULL where a node
 * computes alone. needed: by node id, whether the program computes it;
 * train: the training program, where batch norms use batch statistics. */
Chain **fuse(Arena *a, const Graph *g, const int *needed, int train);

#endif
