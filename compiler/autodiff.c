/* Reverse-mode differentiation. Walking the forward graph from the loss
 * back to the inputs, each operator's rule below turns the gradient of its
 * output (dy) into gradients of its inputs and parameters, as new graph
 * nodes (internal operators whose attributes are the forward node's); where
 * a value feeds several nodes, their gradients are summed with add nodes.
 * The backward nodes are then lowered like any others.
 *
 * Only what leads to a trainable parameter is differentiated: the
 * gradient of a node's input is made only if that input depends on one.
 * So a frozen backbone gets no backward work at all, and nothing flows
 * into the model's inputs. Frozen batch norm layers normalize with their
 * running statistics, in training too, and are differentiated that way. */
#include "autodiff.h"

#include <string.h>

#include "ops.h"

typedef struct AD {
  Graph *g;
  char *needs;   /* by node id: depends on a trainable parameter */
  Node **grad;   /* by node id: the gradient of its output so far */
  Node **pvalue; /* by parameter index: its OP_PARAM node */
} AD;

static Node *make(AD *A, OpKind op, const Node *of, const char *what, Shape s,
                  Node *a, Node *b, Node *c) {
  Node *n = graph_add_node(A->g, op, of->loc,
                           arena_printf(A->g->a, "%s.%s", of->name, what));
  n->of = of;
  n->at = of->at;
  n->shape = s;
  n->scope = of->scope;
  if (a)
    graph_add_input(A->g, n, a);
  if (b)
    graph_add_input(A->g, n, b);
  if (c)
    graph_add_input(A->g, n, c);
  return n;
}

static int trainable(const Param *p) {
  return p->kind == PK_PARAM && !p->frozen;
}

static const Param *param_of(const Node *n, const char *role) {
  for (int i = 0; i < n->params.n; i++)
    if (strcmp(n->params.v[i]->role, role) == 0)
      return n->params.v[i];
  return NULL;
}

/* The value of a parameter as a node (for the rules that read weights). */
static Node *value(AD *A, const Param *p) {
  int i = p->index;
  if (i < 0)
    return NULL;
  if (!A->pvalue[i]) {
    Node *n = graph_add_node(A->g, OP_PARAM, p->owner->loc, p->name);
    n->param = p;
    n->of = p->owner;
    n->shape = p->shape;
    n->whole = 1;
    n->scope = p->owner->scope;
    A->pvalue[i] = n;
  }
  return A->pvalue[i];
}

/* Adds dx to the gradient of x. */
static void give(AD *A, Node *x, Node *dx) {
  if (!A->needs[x->id])
    return;
  Node *old = A->grad[x->id];
  if (!old) {
    A->grad[x->id] = dx;
    return;
  }
  Node *sum = graph_add_node(A->g, OP_ADD, x->loc,
                             arena_printf(A->g->a, "%s.dsum", x->name));
  sum->of = x;
  sum->shape = x->shape;
  sum->scope = x->scope;
  graph_add_input(A->g, sum, old);
  graph_add_input(A->g, sum, dx);
  A->grad[x->id] = sum;
}

/* The gradient of a parameter: a whole-batch node. */
static void param_grad(AD *A, const Node *n, const char *role, OpKind op,
                       Node *a, Node *b) {
  const Param *p = param_of(n, role);
  if (!p || !trainable(p))
    return;
  Node *gnode =
      make(A, op, n, arena_printf(A->g->a, "d%s", role), p->shape, a, b, NULL);
  gnode->whole = 1;
  gnode->grad_of = p;
}

static void rule(AD *A, Node *n, Node *dy) {
  Node *x = n->in.n ? n->in.v[0] : NULL;
  int dx_wanted = x && A->needs[x->id];
  const Param *w = param_of(n, "weight");
  switch (n->op) {
  case OP_CONV:
  case OP_DECONV:
  case OP_DENSE: {
    OpKind dxop = n->op == OP_CONV     ? OP_CONV_DX
                  : n->op == OP_DECONV ? OP_DECONV_DX
                                       : OP_DENSE_DX;
    OpKind dwop = n->op == OP_CONV     ? OP_CONV_DW
                  : n->op == OP_DECONV ? OP_DECONV_DW
                                       : OP_DENSE_DW;
    if (dx_wanted)
      give(A, x, make(A, dxop, n, "dx", x->shape, dy, value(A, w), NULL));
    param_grad(A, n, "weight", dwop, x, dy);
    param_grad(A, n, "bias", OP_BIAS_GRAD, dy, NULL);
    return;
  }
  case OP_MAXPOOL:
  case OP_AVGPOOL:
  case OP_GLOBAL_AVGPOOL:
  case OP_ADAPTIVE_AVGPOOL:
    if (dx_wanted)
      give(A, x, make(A, OP_POOL_DX, n, "dx", x->shape, x, dy, NULL));
    return;
  case OP_LEAKY_RELU: /* with a negative slope, y > 0 does not say x > 0 */
    if (dx_wanted)
      give(A, x, make(A, OP_ACT_DX, n, "dx", x->shape, x, dy, NULL));
    return;
  /* The output is enough (relu: y > 0 exactly where x > 0), so the input
   * need not be kept for the backward pass and fusion can drop it. */
  case OP_RELU:
  case OP_TANH:
  case OP_SIGMOID:
    if (dx_wanted)
      give(A, x, make(A, OP_ACT_DX, n, "dx", x->shape, n, dy, NULL));
    return;
  case OP_SOFTMAX:
    if (dx_wanted)
      give(A, x, make(A, OP_SOFTMAX_DX, n, "dx", x->shape, n, dy, NULL));
    return;
  case OP_BN:
    if (dx_wanted)
      give(A, x, make(A, OP_BN_DX, n, "dx", x->shape, x, dy, value(A, w)));
    param_grad(A, n, "weight", OP_BN_DW, x, dy);
    param_grad(A, n, "bias", OP_BIAS_GRAD, dy, NULL);
    return;
  case OP_LAYERNORM:
  case OP_INSTANCENORM:
  case OP_GROUPNORM:
    if (dx_wanted)
      give(A, x, make(A, OP_NORM_DX, n, "dx", x->shape, x, dy, value(A, w)));
    param_grad(A, n, "weight", OP_NORM_DW, x, dy);
    param_grad(A, n, "bias", OP_NORM_DB, dy, NULL);
    return;
  case OP_LRN:
    if (dx_wanted)
      give(A, x, make(A, OP_LRN_DX, n, "dx", x->shape, x, dy, NULL));
    return;
  case OP_DROPOUT:
    if (dx_wanted)
      give(A, x, make(A, OP_DROPOUT_DX, n, "dx", x->shape, dy, NULL, NULL));
    return;
  case OP_FLATTEN:
    /* the same memory seen with x's shape */
    if (dx_wanted)
      give(A, x, make(A, OP_FLATTEN, n, "dx", x->shape, dy, NULL, NULL));
    return;
  case OP_CONCAT: {
    int64_t off = 0;
    for (int i = 0; i < n->in.n; i++) {
      Node *xi = n->in.v[i];
      if (A->needs[xi->id]) {
        Node *s = make(A, OP_SLICE, n, arena_printf(A->g->a, "dx%d", i),
                       xi->shape, dy, NULL, NULL);
        s->offset = off;
        give(A, xi, s);
      }
      off += xi->shape.d[0];
    }
    return;
  }
  case OP_ADD:
    give(A, n->in.v[0], dy);
    give(A, n->in.v[1], dy);
    return;
  case OP_UPSAMPLE:
    if (dx_wanted)
      give(A, x, make(A, OP_UPSAMPLE_DX, n, "dx", x->shape, dy, NULL, NULL));
    return;
  case OP_CROP:
    if (dx_wanted)
      give(A, x, make(A, OP_CROP_DX, n, "dx", x->shape, dy, NULL, NULL));
    return;
  case OP_CROSS_ENTROPY:
  case OP_MSE:
    if (dx_wanted)
      give(A, x, make(A, OP_LOSS_DX, n, "dx", x->shape, x, n->in.v[1], NULL));
    return;
  case OP_INPUT:
  case OP_PARAM:
  case OP_CONV_DX:
  case OP_CONV_DW:
  case OP_DECONV_DX:
  case OP_DECONV_DW:
  case OP_DENSE_DX:
  case OP_DENSE_DW:
  case OP_BIAS_GRAD:
  case OP_POOL_DX:
  case OP_ACT_DX:
  case OP_SOFTMAX_DX:
  case OP_BN_DX:
  case OP_BN_DW:
  case OP_NORM_DX:
  case OP_NORM_DW:
  case OP_NORM_DB:
  case OP_LRN_DX:
  case OP_DROPOUT_DX:
  case OP_SLICE:
  case OP_UPSAMPLE_DX:
  case OP_CROP_DX:
  case OP_LOSS_DX:
  case OP_NONE:
  case OP_COUNT: break;
  }
}

void autodiff(Diag *d, Graph *g) {
  if (!g->loss) {
    diag_internal(d, "autodiff needs a loss");
    return;
  }
  int nn = g->nodes.n;
  AD A = {g, arena_alloc(g->a, (size_t)nn + 1),
          arena_alloc(g->a, sizeof(Node *) * (size_t)(nn + 1)),
          arena_alloc(g->a, sizeof(Node *) * (size_t)(g->params.n + 1))};
  for (int i = 0; i < nn; i++) {
    const Node *n = g->nodes.v[i];
    for (int j = 0; j < n->params.n; j++)
      A.needs[i] |= trainable(n->params.v[j]);
    for (int j = 0; j < n->in.n; j++)
      A.needs[i] |= A.needs[n->in.v[j]->id];
  }
  g->backward = nn;
  /* The loss's own rule needs no incoming gradient: dloss/dloss = 1. */
  rule(&A, g->loss, NULL);
  for (int i = g->loss->id - 1; i >= 0; i--) {
    Node *n = g->nodes.v[i];
    if (A.grad[i] && A.needs[i])
      rule(&A, n, A.grad[i]);
  }
}
