/* Memory planning. Parameters and buffers get consecutive offsets in the
 * state's f32 and i64 areas, in the graph's order. Each activation lives
 * from the kernel that first writes it to the last kernel that reads it
 * (an aliasing buffer, like flatten's, extends the life of the one it
 * shares); buffers are then placed largest first at the lowest offset that
 * overlaps no placed buffer alive at the same time. A kernel's output never
 * shares memory with its inputs, since both are alive during that kernel. */
#include "plan.h"

#include <stdlib.h>

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

void plan(Program *p) {
  for (int i = 0; i < p->bufs.n; i++) {
    Buffer *b = p->bufs.v[i];
    if (b->kind == BUF_F32) {
      b->offset = p->f32_count;
      p->f32_count = add_sat(p->f32_count, b->size);
    } else if (b->kind == BUF_I64) {
      b->offset = p->i64_count;
      p->i64_count = add_sat(p->i64_count, b->size);
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
  for (int i = 0; i < n; i++) {
    Buffer *b = arena[i];
    int64_t at = 0;
    for (int moved = 1; moved;) {
      moved = 0;
      for (int j = 0; j < i; j++) {
        const Buffer *o = arena[j];
        int alive = o->first <= b->last && b->first <= o->last;
        if (alive && at < add_sat(o->offset, o->size) &&
            o->offset < add_sat(at, b->size)) {
          at = add_sat(o->offset, o->size);
          moved = 1;
        }
      }
    }
    b->offset = at;
    if (add_sat(at, b->size) > p->arena_count)
      p->arena_count = add_sat(at, b->size);
  }
  mem_free(arena);
  for (int i = 0; i < p->bufs.n; i++) {
    Buffer *b = p->bufs.v[i];
    if (b->alias)
      b->offset = root(b)->offset;
  }
}
