/* Lowering and memory planning: the arena's invariant (buffers alive at the
 * same time never overlap), sharing where lifetimes allow, and the shape of
 * the loop nests lowering makes. */
#include "testutil.h"

#include "lower.h"
#include "plan.h"

static const char resnet_like[] =
    "block basic(x, c) {\n"
    "  y = x -> conv1: conv(c, k=3, p=1, bias=false) -> bn1: bn -> relu\n"
    "        -> conv2: conv(c, k=3, p=1, bias=false) -> bn2: bn\n"
    "  return relu(y + x)\n"
    "}\n"
    "model m {\n"
    "  input x[8, 16, 16]\n"
    "  y = x -> [0]: basic(8) -> [1]: basic(8) -> [2]: basic(8)\n"
    "  output logits = y -> global_avgpool -> flatten -> fc: dense(10)\n"
    "  loss cross_entropy(logits)\n"
    "}\n";

static Program *lowered(Compiled *c, int64_t batch) {
  Program *p = lower(&c->d, c->a, c->g, batch, 0);
  assert_int_equal(c->d.errors, 0);
  plan(p);
  return p;
}

static void arena_invariant(void **state) {
  Compiled *c = compile_ok(resnet_like);
  Program *p = lowered(c, 4);
  int arena = 0;
  for (int i = 0; i < p->bufs.n; i++) {
    const Buffer *a = p->bufs.v[i];
    if (a->kind != BUF_ARENA || a->alias)
      continue;
    arena++;
    assert_true(a->offset >= 0 && a->offset + a->size <= p->arena_count);
    for (int j = i + 1; j < p->bufs.n; j++) {
      const Buffer *b = p->bufs.v[j];
      if (b->kind != BUF_ARENA || b->alias)
        continue;
      int alive = a->first <= b->last && b->first <= a->last;
      int overlap =
          a->offset < b->offset + b->size && b->offset < a->offset + a->size;
      if (alive && overlap)
        fprintf(stderr, "%s and %s overlap while both alive\n", a->name,
                b->name);
      assert_false(alive && overlap);
    }
  }
  assert_true(arena > 10);
  /* a chain of layers reuses memory: far less than every output apart */
  assert_true(p->arena_count * 3 < p->activation_sum);
  /* the loss is not part of the forward pass; labels are not an input */
  assert_int_equal(p->inputs.n, 1);
  assert_int_equal(p->outputs.n, 1);
  release(c);
}

static int alive_together(const Buffer *a, const Buffer *b) {
  return a->first <= b->last && b->first <= a->last;
}

static int overlap_at(const Buffer *o, int64_t at, int64_t size) {
  return at < o->offset + o->size && o->offset < at + size;
}

/* Placed largest first (ties by id), each buffer sits at the lowest offset
 * that meets no buffer placed before it and alive with it: every lower
 * offset where it could start (0, or the end of such a buffer) collides.
 * The training program keeps forward outputs alive into the backward pass,
 * so lifetimes there are long and overlap a lot. */
static void lowest_fit(void **state) {
  Compiled *c = compile_ok(resnet_like);
  Program *p = lower(&c->d, c->a, c->g, 2, 1);
  assert_int_equal(c->d.errors, 0);
  plan(p);
  int checked = 0;
  for (int i = 0; i < p->bufs.n; i++) {
    const Buffer *b = p->bufs.v[i];
    if (b->kind != BUF_ARENA || b->alias || b->first < 0)
      continue;
    for (int j = -1; j < p->bufs.n; j++) {
      const Buffer *o = j < 0 ? NULL : p->bufs.v[j];
      if (o && (o->kind != BUF_ARENA || o->alias || o->first < 0 ||
                !alive_together(o, b)))
        continue;
      if (o && (o->size < b->size || (o->size == b->size && o->id >= b->id)))
        continue; /* placed after b */
      int64_t at = o ? (o->offset + o->size + 15) / 16 * 16 : 0;
      if (at >= b->offset)
        continue;
      int collides = 0;
      for (int k = 0; k < p->bufs.n && !collides; k++) {
        const Buffer *q = p->bufs.v[k];
        collides =
            q != b && q->kind == BUF_ARENA && !q->alias && q->first >= 0 &&
            alive_together(q, b) &&
            (q->size > b->size || (q->size == b->size && q->id < b->id)) &&
            overlap_at(q, at, b->size);
      }
      if (!collides)
        fprintf(stderr, "%s could start at %lld, below %lld\n", b->name,
                (long long)at, (long long)b->offset);
      assert_true(collides);
      checked++;
    }
    for (int k = 0; k < p->bufs.n; k++) {
      const Buffer *q = p->bufs.v[k];
      if (q != b && q->kind == BUF_ARENA && !q->alias && q->first >= 0)
        assert_false(alive_together(q, b) && overlap_at(q, b->offset, b->size));
    }
    assert_int_equal(b->offset % 16, 0); /* on a cache line */
  }
  assert_int_equal(p->arena_count % 16, 0);
  assert_true(checked > 20);
  release(c);
}

static void parameters_in_one_block(void **state) {
  Compiled *c = compile_ok(resnet_like);
  Program *p = lowered(c, 1);
  /* in order, each at the next cache line (16 elements) */
  int64_t next_f32 = 0, next_i64 = 0, f32 = 0, i64 = 0;
  for (int i = 0; i < p->bufs.n; i++) {
    const Buffer *b = p->bufs.v[i];
    if (b->kind == BUF_F32) {
      assert_int_equal(b->offset, next_f32);
      next_f32 = (next_f32 + b->size + 15) / 16 * 16;
      f32 += b->size;
    } else if (b->kind == BUF_I64) {
      assert_int_equal(b->offset, next_i64);
      next_i64 = (next_i64 + b->size + 15) / 16 * 16;
      i64 += b->size;
    }
  }
  assert_int_equal(p->f32_count, next_f32);
  assert_int_equal(p->i64_count, next_i64);
  /* 3 blocks x 2 convs x 8*8*9 + 3 x 2 bn x 4 x 8 + fc 10*8 + 10 */
  assert_int_equal(f32, 3 * 2 * 576 + 3 * 2 * 4 * 8 + 80 + 10);
  assert_int_equal(i64, 6); /* num_batches_tracked of 6 bn */
  release(c);
}

/* flatten and dropout share their input's storage. */
static void aliases(void **state) {
  Compiled *c = compile_ok(
      "model m {\n  input x[2, 3, 3]\n"
      "  output y = x -> relu -> flatten -> dropout -> dense(4)\n}\n");
  Program *p = lowered(c, 2);
  int kernels = p->kernels.n;
  assert_int_equal(kernels, 3); /* relu, dense, the copy to the output */
  const Buffer *relu = NULL, *drop = NULL;
  for (int i = 0; i < p->bufs.n; i++) {
    if (strcmp(p->bufs.v[i]->name, "relu0") == 0)
      relu = p->bufs.v[i];
    if (strcmp(p->bufs.v[i]->name, "dropout0") == 0)
      drop = p->bufs.v[i];
  }
  assert_non_null(relu);
  assert_non_null(drop);
  assert_int_equal(drop->offset, relu->offset);
  release(c);
}

/* Buffer names are C identifiers made from the model's names, never the
 * name of a loop variable or of the generated code's own. */
static void c_names(void **state) {
  Compiled *c = compile_ok(
      "model m {\n  input n[4]\n"
      "  output count = n -> layer1.0: dense(4) -> c: dense(3)\n}\n");
  Program *p = lowered(c, 1);
  int saw = 0;
  for (int i = 0; i < p->bufs.n; i++) {
    const char *nm = p->bufs.v[i]->name;
    assert_string_not_equal(nm, "n");
    assert_string_not_equal(nm, "c");
    assert_string_not_equal(nm, "count");
    saw += strcmp(nm, "layer1_0") == 0 || strcmp(nm, "layer1_0_weight") == 0;
  }
  assert_int_equal(saw, 2);
  release(c);
}

/* A name that starts as a numbered loop variable does ("l_2.weight", "l"
 * then "_2") is not one: it is kept, and lowering ends (it once looked
 * for a free name forever). */
static void c_names_like_loop_variables(void **state) {
  (void)state;
  Compiled *c = compile_ok("model m {\n  input x[6, 4, 5]\n"
                           "  output y = x -> l_2: groupnorm(1)\n}\n");
  Program *p = lowered(c, 1);
  int saw = 0;
  for (int i = 0; i < p->bufs.n; i++) {
    const char *nm = p->bufs.v[i]->name;
    assert_string_not_equal(nm, "l_2");
    saw += strcmp(nm, "l_2_weight") == 0 || strcmp(nm, "l_2_bias") == 0;
  }
  assert_int_equal(saw, 2);
  release(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(arena_invariant),
      cmocka_unit_test(lowest_fit),
      cmocka_unit_test(parameters_in_one_block),
      cmocka_unit_test(aliases),
      cmocka_unit_test(c_names),
      cmocka_unit_test(c_names_like_loop_variables),
  };
  return cmocka_run_group_tests_name("plan", tests, NULL, NULL);
}
