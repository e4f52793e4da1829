/* Activations kept channels innermost between convolutions.
 *
 * A channels-innermost convolution (schedule.h, chan_inner) holds a
 * tile's outputs as positions by channels. Stored into planes (n, c, h,
 * w), each position's channels go a plane apart, one store at a time;
 * and a channels-innermost reader with the copy (pad_input, hwc) puts
 * them back side by side, one load at a time. Where a convolution's
 * output is read only by such convolutions, as their input, or by pools,
 * it is stored (n, h, w, c) instead: the tile's stores, and the reader's
 * copy, are runs of channels.
 *
 * A pool reads its input as it is kept, and keeps it so where its own
 * readers can take it.
 *
 * Only in inference: the training program's backward kernels read the
 * activations as planes. Never for an output of the model, which the
 * caller reads as planes, nor where a chain's epilogue reads another
 * tensor at each element (a residual, in a pass over y's planes after the
 * tiles: lower_conv.c, epilogue_later). */
#include "lower_impl.h"

static int is_output(const Graph *g, const Node *nd) {
  for (int i = 0; i < g->outputs.n; i++)
    if (g->outputs.v[i].node == nd)
      return 1;
  return 0;
}

/* Whether node r can read its input (j) channels innermost: a
 * convolution whose tiles do, or a pool (lower.c, lower_pool_hwc). */
static int reads_hwc(const Program *p, Chain **chain, const Node *r, int j) {
  const Chain *rc = chain ? chain[r->id] : NULL;
  if (j != 0 || (rc && rc->head != r))
    return 0;
  return r->op == OP_MAXPOOL || r->op == OP_AVGPOOL ? !rc
                                                    : lower_conv_hwc_in(p, r);
}

/* Whether every node that reads node of's value reads it channels
 * innermost, and there is one. */
static int read_hwc(const Program *p, const Graph *g, Chain **chain,
                    const int *needed, const Node *of) {
  int readers = 0;
  for (int k = 0; k < g->nodes.n; k++) {
    const Node *r = g->nodes.v[k];
    if (!needed[k])
      continue;
    for (int j = 0; j < r->in.n; j++) {
      if (r->in.v[j] != of)
        continue;
      if (!reads_hwc(p, chain, r, j))
        return 0;
      readers++;
    }
  }
  return readers > 0;
}

void lower_layouts(Program *p, const Graph *g, Chain **chain, const int *needed,
                   Buffer **nbuf) {
  if (!p->tile || p->train)
    return;
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *last = g->nodes.v[i];
    if (!needed[i] || !nbuf[i] || nbuf[i]->alias || is_output(g, last))
      continue;
    const Chain *ch = chain ? chain[i] : NULL;
    if (ch && (ch->last != last || ch->residual || ch->value))
      continue;
    const Node *head = ch ? ch->head : last;
    /* a pool keeps its input's layout where its readers can take it */
    int pool = !ch && (last->op == OP_MAXPOOL || last->op == OP_AVGPOOL);
    int can = pool ? nbuf[last->in.v[0]->id]->hwc : lower_conv_hwc_out(p, head);
    nbuf[i]->hwc = can && read_hwc(p, g, chain, needed, last);
  }
}
