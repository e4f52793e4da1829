/* The fusion pass (fuse.h). It decides only; lower.c builds each chain as
 * one kernel whose head's store applies the rest. Fusing changes no
 * result: every stage computes what its own kernel would, in the same
 * order, on the value the head would have stored. */
#include "fuse.h"

#include <stdio.h>

#include "ops.h"

static int is_activation(OpKind op) {
  return op == OP_RELU || op == OP_LEAKY_RELU || op == OP_TANH ||
         op == OP_SIGMOID;
}

/* A forward node of the model, not one autodiff made. */
static int forward(const Node *n) {
  return !(op_info[n->op].flags & OPF_INTERNAL) && !n->grad_of;
}

/* The one consumer of n, or NULL when n has several, none, is an output
 * the caller reads, or when its consumer is already in a chain (an add
 * can be the sole consumer of both its inputs). */
static const Node *sole(const Node *n, const int *uses, Node *const *user,
                        Chain *const *of) {
  const Node *u = uses[n->id] == 1 ? user[n->id] : NULL;
  return u && !of[u->id] ? u : NULL;
}

Chain **fuse(Arena *a, const Graph *g, const int *needed, int train) {
  int nn = g->nodes.n;
  int *uses = arena_alloc(a, sizeof(int) * (size_t)(nn + 1));
  Node **user = arena_alloc(a, sizeof(Node *) * (size_t)(nn + 1));
  Chain **of = arena_alloc(a, sizeof(Chain *) * (size_t)(nn + 1));
  for (int i = 0; i < nn; i++) {
    Node *n = g->nodes.v[i];
    if (!needed[i])
      continue;
    for (int j = 0; j < n->in.n; j++) {
      uses[n->in.v[j]->id]++;
      user[n->in.v[j]->id] = n;
    }
  }
  /* Outputs and the loss are read after the program's kernels. */
  for (int i = 0; i < g->outputs.n; i++)
    uses[g->outputs.v[i].node->id] += 2;
  if (g->loss)
    uses[g->loss->id] += 2;
  for (int i = 0; i < nn; i++) {
    const Node *h = g->nodes.v[i];
    if (!needed[i] || of[i])
      continue;
    int weighted = h->op == OP_CONV || h->op == OP_DENSE;
    int gradient = h->op == OP_CONV_DX || h->op == OP_DENSE_DX ||
                   h->op == OP_POOL_DX || (h->op == OP_ADD && h->of);
    if (!gradient &&
        (!forward(h) || (!weighted && h->op != OP_BN && h->op != OP_ADD)))
      continue;
    Chain c = {h, NULL, NULL, NULL, NULL, NULL, NULL, h, NULL};
    const Node *next = sole(h, uses, user, of);
    if (weighted && !train && next && next->op == OP_BN) {
      c.bn = c.last = next;
      next = sole(next, uses, user, of);
    }
    if (h->op != OP_ADD && next && next->op == OP_ADD &&
        next->in.v[0] != next->in.v[1]) {
      c.add = c.last = next;
      c.residual =
          next->in.v[0] == (c.bn ? c.bn : h) ? next->in.v[1] : next->in.v[0];
      next = sole(next, uses, user, of);
    }
    if (next && is_activation(next->op))
      c.act = c.last = next;
    /* A gradient times the activation's derivative, which reads the
     * activation's value at the same element. */
    if (gradient && next && next->op == OP_ACT_DX && next->in.v[1] == c.last &&
        next->in.v[0] != c.last) {
      c.act_dx = c.last = next;
      c.value = next->in.v[0];
    }
    if (c.last == h)
      continue;
    char what[64];
    snprintf(what, sizeof what, "%s%s%s%s%s%s%s%s", op_info[h->op].name,
             c.bn ? "+" : "", c.bn ? "bn" : "", c.add ? "+" : "",
             c.add ? "add" : "", c.act ? "+" : "",
             c.act ? op_info[c.act->op].name : "", c.act_dx ? "+act_dx" : "");
    c.what = arena_strdup(a, what);
    Chain *keep = arena_alloc(a, sizeof *keep);
    *keep = c;
    const Node *member[] = {c.head, c.bn, c.add, c.act, c.act_dx};
    for (int m = 0; m < 5; m++)
      if (member[m])
        of[member[m]->id] = keep;
  }
  return of;
}
