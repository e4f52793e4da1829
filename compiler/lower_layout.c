/* Activations kept channels innermost between convolutions.
 *
 * A channels-innermost convolution (schedule.h, chan_inner) holds a
 * tile's outputs as positions by channels. Stored into planes (n, c, h,
 * w), each position's channels go a plane apart, one store at a time;
 * a channels-innermost reader with the copy (pad_input, hwc) puts them
 * back side by side, one load at a time; and a residual added to such a
 * tile is read a plane apart too (so a pass over the planes adds it after
 * the tiles: lower_conv.c, epilogue_later). Where every reader of an
 * activation can take it channels innermost, it is stored (n, h, w, c)
 * instead: the tiles store runs of channels, the readers' copies read
 * runs, and a residual is a run read beside the tile's own.
 *
 * The readers that can: channels-innermost convolutions, as their input
 * (through their copy, as windows, or read where it is); pools; and the
 * add of a fused chain whose output is itself kept so (the residual is
 * read at the output's index). The writers: channels-innermost
 * convolutions not as windows, with a residual only one kept so, and
 * pools of an input kept so. Those conditions tie each layout to
 * others', so all candidates start channels innermost and any that
 * breaks one goes back to planes until none does: a ResNet's stage keeps
 * its blocks' outputs so unless something reads one as planes.
 *
 * Only in inference: the training program's backward kernels read the
 * activations as planes. Never for an output of the model, which the
 * caller reads as planes. */
#include "lower_impl.h"

static int is_output(const Graph *g, const Node *nd) {
  for (int i = 0; i < g->outputs.n; i++)
    if (g->outputs.v[i].node == nd)
      return 1;
  return 0;
}

static int is_pool(const Node *nd) {
  return nd->op == OP_MAXPOOL || nd->op == OP_AVGPOOL;
}

/* The buffer of the chain or node whose value node nd is. */
static Buffer *stored(Chain **chain, Buffer **nbuf, const Node *nd) {
  const Chain *ch = chain ? chain[nd->id] : NULL;
  return nbuf[ch ? ch->last->id : nd->id];
}

/* Whether node r can read its input j channels innermost, as the
 * layouts stand. */
static int reads_hwc(const Program *p, Chain **chain, Buffer **nbuf,
                     const Node *r, int j) {
  const Chain *rc = chain ? chain[r->id] : NULL;
  if (rc && rc->head != r) /* the residual of a fused add */
    return r == rc->add && r->in.v[j] == rc->residual &&
           stored(chain, nbuf, rc->last)->hwc;
  if (j != 0)
    return 0;
  if (is_pool(r) || r->op == OP_GLOBAL_AVGPOOL || r->op == OP_ADAPTIVE_AVGPOOL)
    return !rc;
  return lower_conv_hwc_in(p, r);
}

/* Whether every node that reads node of's value reads it channels
 * innermost, and there is one. */
static int read_hwc(const Program *p, const Graph *g, Chain **chain,
                    const int *needed, Buffer **nbuf, const Node *of) {
  int readers = 0;
  for (int k = 0; k < g->nodes.n; k++) {
    const Node *r = g->nodes.v[k];
    if (!needed[k])
      continue;
    for (int j = 0; j < r->in.n; j++) {
      if (r->in.v[j] != of)
        continue;
      if (!reads_hwc(p, chain, nbuf, r, j))
        return 0;
      readers++;
    }
  }
  return readers > 0;
}

/* The node whose value buffer i holds, when it may be kept channels
 * innermost at all: a chain's last node or a pool; else NULL. */
static const Node *candidate(const Program *p, const Graph *g, Chain **chain,
                             const int *needed, Buffer **nbuf, int i) {
  const Node *last = g->nodes.v[i];
  if (!needed[i] || !nbuf[i] || nbuf[i]->alias || is_output(g, last))
    return NULL;
  const Chain *ch = chain ? chain[i] : NULL;
  if (ch)
    return ch->last == last && !ch->value && lower_conv_hwc_out(p, ch->head)
               ? last
               : NULL;
  return is_pool(last) || lower_conv_hwc_out(p, last) ? last : NULL;
}

void lower_layouts(Program *p, const Graph *g, Chain **chain, const int *needed,
                   Buffer **nbuf) {
  if (!p->tile || p->train)
    return;
  for (int i = 0; i < g->nodes.n; i++)
    if (candidate(p, g, chain, needed, nbuf, i))
      nbuf[i]->hwc = 1;
  for (int changed = 1; changed;) {
    changed = 0;
    for (int i = 0; i < g->nodes.n; i++) {
      if (!nbuf[i] || !nbuf[i]->hwc)
        continue;
      const Node *last = g->nodes.v[i];
      const Chain *ch = chain ? chain[i] : NULL;
      int keep = read_hwc(p, g, chain, needed, nbuf, last);
      if (keep && ch && ch->residual)
        keep = stored(chain, nbuf, ch->residual)->hwc;
      if (keep && !ch && is_pool(last))
        keep = stored(chain, nbuf, last->in.v[0])->hwc;
      if (!keep) {
        nbuf[i]->hwc = 0;
        changed = 1;
      }
    }
  }
}
