/* Memory planning. Parameters and buffers get consecutive offsets in the
 * state's f32 and i64 areas, in the graph's order, and packed weights in
 * its packed area. Each activation lives
 * from the kernel that first writes it to the last kernel that reads it
 * (an aliasing buffer, like flatten's, extends the life of the one it
 * shares); buffers are then placed largest first at the lowest offset that
 * overlaps no placed buffer alive at the same time. A kernel's output never
 * shares memory with its inputs, since both are alive during that kernel. */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

#include "mem.h"

static Buffer *root(Buffer *b) {
  while (b->alias)
    b = b->alias;
  return b;
}

/* a + b, or INT64_MAX when that does not fit: sizes of absurd models
 * (--batch 1000000 of tensors of 2^40 values) can pass 64 bits in sum, and
 * are then refused by the memory limit. */
static int64_t add_sat(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}

/* Offsets and area sizes are multiples of 16 elements: with the state at
 * a 64-byte boundary, every tensor then starts on a cache line, and a
 * vector load of 8 floats at a multiple of 8 never spans two. Vector
 * loads that do cost this core twice: ResNet-18's 3x3 layers with packed
 * weights ran at 6.1 ms a layer misaligned, 4.7 aligned. */
enum { ALIGN = 16 };

static int64_t aligned(int64_t v) {
  int64_t r = add_sat(v, ALIGN - 1);
  return r == INT64_MAX ? r : r / ALIGN * ALIGN;
}

static void touch(Buffer *b, int k) {
  if (b->kind == BUF_LOCAL) /* a kernel's own array */
    return;
  b = root(b);
  if (b->first < 0 || k < b->first)
    b->first = k;
  if (k > b->last)
    b->last = k;
}

static void expr_uses(const Expr *e, int k) {
  if (!e)
    return;
  if (e->k == X_LOAD)
    touch(e->buf, k);
  expr_uses(e->a, k);
  expr_uses(e->b, k);
  expr_uses(e->c, k);
}

static void stmt_uses(const StmtVec *body, int k) {
  for (int i = 0; i < body->n; i++) {
    const Stmt *s = body->v[i];
    if (s->buf)
      touch(s->buf, k);
    expr_uses(s->index, k);
    expr_uses(s->value, k);
    stmt_uses(&s->body, k);
  }
}

static int by_size(const void *a, const void *b) {
  const Buffer *x = *(Buffer *const *)a, *y = *(Buffer *const *)b;
  if (x->size != y->size)
    return x->size < y->size ? 1 : -1;
  return x->id - y->id;
}

static int by_offset(const void *a, const void *b) {
  const Buffer *x = *(Buffer *const *)a, *y = *(Buffer *const *)b;
  if (x->offset != y->offset)
    return x->offset < y->offset ? -1 : 1;
  return x->id - y->id;
}

/* The placed buffers, indexed by lifetime: a segment tree over kernel
 * numbers whose nodes hold the buffers alive over all of their range. Only
 * buffers alive at the same time can collide, so placing one looks at those
 * and not at every buffer placed before it: a chain of 100,000 layers is
 * planned in about n log n, not n^2 (a training program, whose forward
 * outputs live into the backward pass, still meets many). */
typedef struct {
  Buffer **v;
  int n, cap;
} Slot;

typedef struct {
  Slot *node;
  int last;     /* kernels numbered 0..last */
  Buffer **hit; /* a query's result */
  int nhit;
  unsigned char *seen; /* by buffer id: already in hit */
} Index;

static void index_put(Index *x, int nd, int lo, int hi, Buffer *b) {
  if (b->last < lo || b->first > hi)
    return;
  if (b->first <= lo && hi <= b->last) {
    Slot *s = &x->node[nd];
    if (s->n == s->cap) {
      s->cap = s->cap ? 2 * s->cap : 4;
      s->v = mem_realloc(s->v, sizeof *s->v * (size_t)s->cap);
    }
    s->v[s->n++] = b;
    return;
  }
  int mid = lo + (hi - lo) / 2;
  index_put(x, 2 * nd, lo, mid, b);
  index_put(x, 2 * nd + 1, mid + 1, hi, b);
}

/* Every buffer in a node the lifetime [first, last] meets is alive in it:
 * such a buffer spans the whole node. One spanning several such nodes is
 * taken once. */
static void index_get(Index *x, int nd, int lo, int hi, int first, int last) {
  if (last < lo || first > hi)
    return;
  const Slot *s = &x->node[nd];
  for (int i = 0; i < s->n; i++)
    if (!x->seen[s->v[i]->id]) {
      x->seen[s->v[i]->id] = 1;
      x->hit[x->nhit++] = s->v[i];
    }
  if (lo == hi)
    return;
  int mid = lo + (hi - lo) / 2;
  index_get(x, 2 * nd, lo, mid, first, last);
  index_get(x, 2 * nd + 1, mid + 1, hi, first, last);
}

/* The lowest offset where b overlaps no placed buffer alive with it. */
static int64_t lowest_fit(Index *x, const Buffer *b) {
  x->nhit = 0;
  index_get(x, 1, 0, x->last, b->first, b->last);
  qsort(x->hit, (size_t)x->nhit, sizeof *x->hit, by_offset);
  int64_t at = 0;
  for (int i = 0; i < x->nhit; i++) {
    const Buffer *o = x->hit[i];
    x->seen[o->id] = 0;
    if (add_sat(at, b->size) <= o->offset)
      continue; /* fits below o; later ones lie higher still */
    if (add_sat(o->offset, o->size) > at)
      at = aligned(add_sat(o->offset, o->size));
  }
  return at;
}

void plan(Program *p) {
  for (int i = 0; i < p->bufs.n; i++) {
    Buffer *b = p->bufs.v[i];
    if (b->kind == BUF_F32) {
      b->offset = p->f32_count;
      p->f32_count = aligned(add_sat(p->f32_count, b->size));
    } else if (b->kind == BUF_I64) {
      b->offset = p->i64_count;
      p->i64_count = aligned(add_sat(p->i64_count, b->size));
    } else if (b->kind == BUF_PACKED) {
      b->offset = p->packed_count;
      p->packed_count = aligned(add_sat(p->packed_count, b->size));
    }
  }
  for (int i = 0; i < p->bufs.n; i++) {
    Buffer *b = p->bufs.v[i];
    if (b->kind == BUF_GRAD || b->kind == BUF_M || b->kind == BUF_V)
      b->offset = b->param_buf->offset; /* they mirror the f32 area */
  }
  for (int k = 0; k < p->kernels.n; k++)
    stmt_uses(&p->kernels.v[k]->body, k);
  if (p->loss) /* read by the caller after the last kernel */
    touch(p->loss, p->kernels.n);
  Buffer **arena = mem_alloc(sizeof(Buffer *) * (size_t)(p->bufs.n + 1));
  int n = 0;
  for (int i = 0; i < p->bufs.n; i++) {
    Buffer *b = p->bufs.v[i];
    if (b->kind == BUF_ARENA && !b->alias && b->first >= 0) {
      arena[n++] = b;
      p->activation_sum = add_sat(p->activation_sum, b->size);
    }
  }
  qsort(arena, (size_t)n, sizeof *arena, by_size);
  Index x = {0};
  x.last = p->kernels.n;
  x.node = mem_alloc(sizeof *x.node * 4 * ((size_t)x.last + 1));
  memset(x.node, 0, sizeof *x.node * 4 * ((size_t)x.last + 1));
  x.hit = mem_alloc(sizeof *x.hit * (size_t)(n + 1));
  x.seen = mem_alloc((size_t)p->bufs.n + 1);
  memset(x.seen, 0, (size_t)p->bufs.n + 1);
  for (int i = 0; i < n; i++) {
    Buffer *b = arena[i];
    b->offset = lowest_fit(&x, b);
    index_put(&x, 1, 0, x.last, b);
    if (add_sat(b->offset, b->size) > p->arena_count)
      p->arena_count = aligned(add_sat(b->offset, b->size));
  }
  for (int64_t i = 0; i < 4 * ((int64_t)x.last + 1); i++)
    mem_free(x.node[i].v);
  mem_free(x.node);
  mem_free(x.hit);
  mem_free(x.seen);
  mem_free(arena);
  for (int i = 0; i < p->bufs.n; i++) {
    Buffer *b = p->bufs.v[i];
    if (b->alias)
      b->offset = root(b)->offset;
  }
}
