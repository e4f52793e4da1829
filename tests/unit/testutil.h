/* Helpers shared by the unit tests: compile a model held in a string and
 * capture its diagnostics. */
#ifndef CNNC_TESTUTIL_H
#define CNNC_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "elaborate.h"
#include "load.h"

typedef struct Compiled {
  Arena *a;
  Diag d;
  Graph *g;
  char *msgs; /* everything diagnostics printed */
  size_t len;
  FILE *f;
} Compiled;

static inline Compiled *compile(const char *src) {
  Compiled *c = calloc(1, sizeof *c);
  c->a = arena_new();
  c->f = open_memstream(&c->msgs, &c->len);
  diag_init(&c->d, c->a, c->f);
  Sources *p = load_program_text(&c->d, c->a, "t.cnn", src);
  if (p && c->d.errors == 0)
    c->g = elaborate(&c->d, c->a, p, NULL);
  diag_flush(&c->d);
  return c;
}

static inline void release(Compiled *c) {
  fclose(c->f);
  free(c->msgs);
  arena_free(c->a);
  free(c);
}

static inline const Param *param_named(const Graph *g, const char *name) {
  for (int i = 0; i < g->params.n; i++)
    if (strcmp(g->params.v[i]->name, name) == 0)
      return g->params.v[i];
  return NULL;
}

static inline const Node *node_named(const Graph *g, const char *name) {
  for (int i = 0; i < g->nodes.n; i++)
    if (strcmp(g->nodes.v[i]->name, name) == 0)
      return g->nodes.v[i];
  return NULL;
}

/* Asserts that src compiles cleanly and returns the result. */
static inline Compiled *compile_ok(const char *src) {
  Compiled *c = compile(src);
  if (c->d.errors)
    fprintf(stderr, "unexpected diagnostics:\n%s", c->msgs);
  assert_int_equal(c->d.errors, 0);
  assert_non_null(c->g);
  return c;
}

/* Asserts that src fails with a message containing `want`. */
static inline void compile_fails(const char *src, const char *want) {
  Compiled *c = compile(src);
  if (c->d.errors == 0 || !strstr(c->msgs, want))
    fprintf(stderr, "wanted an error with \"%s\", got:\n%s", want, c->msgs);
  assert_true(c->d.errors > 0);
  assert_non_null(strstr(c->msgs, want));
  release(c);
}

#define ASSERT_SHAPE(shape, r, a0, a1, a2)                                     \
  do {                                                                         \
    Shape s_ = (shape);                                                        \
    assert_int_equal(s_.rank, (r));                                            \
    const int64_t want_[3] = {(a0), (a1), (a2)};                               \
    for (int i_ = 0; i_ < s_.rank && i_ < 3; i_++)                             \
      assert_int_equal(s_.d[i_], want_[i_]);                                   \
  } while (0)

#endif
