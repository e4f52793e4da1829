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
 * breaks one goes back to planes, and those it concerns are looked at
 * again, until none breaks one: a ResNet's stage keeps its blocks'
 * outputs so unless something reads one as planes. (Once passes over
 * all the nodes until none changed: a residual stream's end sent back
 * to planes cleared one block a pass, and a model of thousands of blocks
 * took cubic time.)
 *
 * Only in inference: the training program's backward kernels read the
 * activations as planes. Never for an output of the model, which the
 * caller reads as planes. */
#include "lower_impl.h"

#include <string.h>

typedef struct Layouts {
  const Program *p;
  const Graph *g;
  Chain **chain;
  const int *needed;
  Buffer **nbuf;
  /* the reads of node i's value: node reader[k], its input input[k], for
   * k from first[i] to first[i + 1] - 1 */
  int *first, *reader, *input;
} Layouts;

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
static Buffer *stored(const Layouts *ls, const Node *nd) {
  const Chain *ch = ls->chain ? ls->chain[nd->id] : NULL;
  return ls->nbuf[ch ? ch->last->id : nd->id];
}

/* Whether node r can read its input j channels innermost, as the
 * layouts stand. */
static int reads_hwc(const Layouts *ls, const Node *r, int j) {
  const Chain *rc = ls->chain ? ls->chain[r->id] : NULL;
  if (rc && rc->head != r) /* the residual of a fused add */
    return r == rc->add && r->in.v[j] == rc->residual &&
           stored(ls, rc->last)->hwc;
  if (j != 0)
    return 0;
  if (is_pool(r) || r->op == OP_GLOBAL_AVGPOOL || r->op == OP_ADAPTIVE_AVGPOOL)
    return !rc;
  return lower_conv_hwc_in(ls->p, r);
}

/* Whether every node that reads node i's value reads it channels
 * innermost, and there is one. */
static int read_hwc(const Layouts *ls, int i) {
  for (int k = ls->first[i]; k < ls->first[i + 1]; k++)
    if (!reads_hwc(ls, ls->g->nodes.v[ls->reader[k]], ls->input[k]))
      return 0;
  return ls->first[i + 1] > ls->first[i];
}

/* Whether buffer i may be kept channels innermost at all: a chain's last
 * node or a node alone that can write so. */
static int candidate(const Layouts *ls, int i) {
  const Node *last = ls->g->nodes.v[i];
  Buffer *b = ls->nbuf[i];
  if (!ls->needed[i] || !b || b->alias || b->kind != BUF_ARENA ||
      is_output(ls->g, last))
    return 0;
  const Chain *ch = ls->chain ? ls->chain[i] : NULL;
  if (ch)
    return ch->last == last && !ch->value &&
           lower_conv_hwc_out(ls->p, ch->head);
  return is_pool(last) || lower_conv_hwc_out(ls->p, last);
}

/* Whether buffer i, kept channels innermost, may stay so. */
static int stays(const Layouts *ls, int i) {
  const Node *last = ls->g->nodes.v[i];
  const Chain *ch = ls->chain ? ls->chain[i] : NULL;
  if (!read_hwc(ls, i))
    return 0;
  if (ch && ch->residual)
    return stored(ls, ch->residual)->hwc;
  if (!ch && is_pool(last))
    return stored(ls, last->in.v[0])->hwc;
  return 1;
}

/* The reads of every node's value, by the nodes the program computes. */
static void index_reads(Layouts *ls, Arena *a) {
  const Graph *g = ls->g;
  int nn = g->nodes.n, reads = 0;
  ls->first = arena_alloc(a, sizeof(int) * (size_t)(nn + 1));
  for (int k = 0; k < nn; k++)
    if (ls->needed[k])
      for (int j = 0; j < g->nodes.v[k]->in.n; j++, reads++)
        ls->first[g->nodes.v[k]->in.v[j]->id + 1]++;
  for (int i = 0; i < nn; i++)
    ls->first[i + 1] += ls->first[i];
  int *at = arena_alloc(a, sizeof(int) * (size_t)(nn + 1));
  memcpy(at, ls->first, sizeof(int) * (size_t)(nn + 1));
  ls->reader = arena_alloc(a, sizeof(int) * (size_t)(reads + 1));
  ls->input = arena_alloc(a, sizeof(int) * (size_t)(reads + 1));
  for (int k = 0; k < nn; k++)
    if (ls->needed[k])
      for (int j = 0; j < g->nodes.v[k]->in.n; j++) {
        int v = at[g->nodes.v[k]->in.v[j]->id]++;
        ls->reader[v] = k;
        ls->input[v] = j;
      }
}

void lower_layouts(Program *p, const Graph *g, Chain **chain, const int *needed,
                   Buffer **nbuf) {
  if (!p->tile || p->train)
    return;
  Layouts ls = {p, g, chain, needed, nbuf, NULL, NULL, NULL};
  index_reads(&ls, p->a);
  int nn = g->nodes.n, top = 0;
  /* every candidate, then each that a change may concern: the buffers
   * of a cleared one's readers, and its chain's residual */
  int *work =
      arena_alloc(p->a, sizeof(int) * (size_t)(2 * nn + ls.first[nn] + 1));
  for (int i = 0; i < nn; i++)
    if (candidate(&ls, i)) {
      nbuf[i]->hwc = 1;
      work[top++] = i;
    }
  while (top > 0) {
    int i = work[--top];
    if (!nbuf[i]->hwc || stays(&ls, i))
      continue;
    nbuf[i]->hwc = 0;
    for (int k = ls.first[i]; k < ls.first[i + 1]; k++) {
      Buffer *b = stored(&ls, g->nodes.v[ls.reader[k]]);
      if (b && b->hwc)
        work[top++] = b->node->id;
    }
    const Chain *ch = chain ? chain[i] : NULL;
    if (ch && ch->residual && stored(&ls, ch->residual)->hwc)
      work[top++] = stored(&ls, ch->residual)->node->id;
  }
}
