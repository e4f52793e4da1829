/* The parser: the grammar, operator precedence, the newline rules, string
 * interpolation and recovery after syntax errors. */
#include "testutil.h"

#include "parser.h"

typedef struct Parsed {
  Arena *a;
  Diag d;
  AstFile *f;
  FILE *sink;
} Parsed;

static Parsed *parse(const char *text) {
  Parsed *p = calloc(1, sizeof *p);
  p->a = arena_new();
  p->sink = fopen("/dev/null", "w");
  diag_init(&p->d, p->a, p->sink);
  int id = diag_add_source(&p->d, "t.cnn", text, strlen(text));
  p->f = parse_file(&p->d, p->a, id);
  return p;
}

static void done(Parsed *p) {
  fclose(p->sink);
  arena_free(p->a);
  free(p);
}

/* The statements of the first model. */
static const AstList *body(Parsed *p) {
  assert_int_equal(p->d.errors, 0);
  assert_true(p->f->items.n >= 1);
  const Ast *m = p->f->items.v[p->f->items.n - 1];
  assert_int_equal(m->kind, A_MODEL);
  return &m->list2;
}

static void precedence(void **state) {
  Parsed *p = parse("model m { a = 1 + 2 * 3 - 4 }");
  const Ast *e = body(p)->v[0]->a;
  /* (1 + (2 * 3)) - 4 */
  assert_int_equal(e->kind, A_BINOP);
  assert_int_equal(e->op, '-');
  assert_int_equal(e->a->op, '+');
  assert_int_equal(e->a->b->op, '*');
  done(p);
  p = parse("model m { a = not 1 < 2 and 3 == 3 or false }");
  e = body(p)->v[0]->a;
  assert_int_equal(e->op, T_OR);
  assert_int_equal(e->a->op, T_AND);
  assert_int_equal(e->a->a->kind, A_UNOP);
  assert_int_equal(e->a->a->a->op, '<');
  done(p);
}

/* x + y -> relu pipes the sum; pipes chain to the left. */
static void pipes(void **state) {
  Parsed *p = parse("model m { y = x + z -> relu -> c1: conv(8, k=3) }");
  const Ast *e = body(p)->v[0]->a;
  assert_int_equal(e->kind, A_PIPE);
  assert_int_equal(e->b->kind, A_STAGE);
  assert_int_equal(e->b->a->kind, A_LABEL_PATH);
  assert_string_equal(e->b->a->list.v[0]->name, "c1");
  assert_int_equal(e->b->b->kind, A_CALL);
  assert_int_equal(e->b->b->list.n, 2);
  assert_int_equal(e->b->b->list.v[1]->kind, A_KWARG);
  assert_int_equal(e->a->kind, A_PIPE);
  assert_int_equal(e->a->a->kind, A_BINOP);
  done(p);
}

static void labels_and_seq(void **state) {
  Parsed *p = parse("model m { y = x -> [i + 1]: f -> layer1.0: g -> "
                    "\"d{i}\": seq { conv(8, k=1) -> relu } }");
  const Ast *e = body(p)->v[0]->a;
  assert_int_equal(e->b->a->kind, A_LABEL_STR);
  assert_int_equal(e->b->b->kind, A_SEQ);
  assert_int_equal(e->b->b->list.n, 2);
  const Ast *g = e->a->b;
  assert_int_equal(g->a->kind, A_LABEL_PATH);
  assert_int_equal(g->a->list.n, 2);
  assert_int_equal(g->a->list.v[1]->kind, A_INT);
  assert_int_equal(e->a->a->b->a->kind, A_LABEL_EXPR);
  done(p);
}

/* Newlines end statements except where the statement visibly goes on. */
static void continuation(void **state) {
  Parsed *p = parse("model m {\n"
                    "  y = x\n"
                    "    -> relu   # a comment\n"
                    "\n"
                    "    -> conv(8,\n"
                    "            k=3) ->\n"
                    "    relu\n"
                    "  z = [1,\n"
                    "       2]; w = 1 +\n"
                    "    2\n"
                    "}\n");
  const AstList *b = body(p);
  assert_int_equal(b->n, 3);
  assert_int_equal(b->v[0]->kind, A_BIND);
  assert_int_equal(b->v[0]->a->kind, A_PIPE);
  assert_int_equal(b->v[1]->a->kind, A_LIST);
  assert_int_equal(b->v[2]->a->kind, A_BINOP);
  done(p);
}

static void if_else_on_next_line(void **state) {
  Parsed *p = parse("model m {\n  if a { b = 1 }\n  else if c { b = 2 }\n"
                    "  else { b = 3 }\n}\n");
  const AstList *b = body(p);
  assert_int_equal(b->n, 1);
  assert_int_equal(b->v[0]->kind, A_IF);
  assert_int_equal(b->v[0]->list2.n, 1);
  assert_int_equal(b->v[0]->list2.v[0]->kind, A_IF);
  assert_int_equal(b->v[0]->list2.v[0]->list2.n, 1);
  done(p);
}

static void interpolation(void **state) {
  Parsed *p = parse("model m { s = \"layer{i + 1}.x{{y}}\" }");
  const Ast *s = body(p)->v[0]->a;
  assert_int_equal(s->kind, A_STR);
  assert_int_equal(s->list.n, 3);
  assert_int_equal(s->list.v[0]->kind, A_STRPART);
  assert_string_equal(s->list.v[0]->name, "layer");
  assert_int_equal(s->list.v[1]->kind, A_BINOP);
  assert_int_equal(s->list.v[1]->loc.col, 24); /* the '+' inside */
  assert_string_equal(s->list.v[2]->name, ".x{y}");
  done(p);
}

static void top_level(void **state) {
  Parsed *p =
      parse("import \"a.cnn\"\n\nblock b(x, c, s=1) { return x }\n"
            "model m { input x[1, 2, 3]; output y = x\n loss mse(y, x)\n"
            "  freeze a.b, [0], \"c{1}\"\n"
            "  train { batch = 4; optimizer sgd(lr=0.1)\n schedule cosine }\n"
            "}\n");
  assert_int_equal(p->d.errors, 0);
  assert_int_equal(p->f->items.n, 3);
  assert_int_equal(p->f->items.v[0]->kind, A_IMPORT);
  const Ast *b = p->f->items.v[1];
  assert_int_equal(b->kind, A_BLOCK);
  assert_int_equal(b->list.n, 3);
  assert_non_null(b->list.v[2]->a);
  const AstList *s = &p->f->items.v[2]->list2;
  assert_int_equal(s->n, 5);
  assert_int_equal(s->v[3]->kind, A_FREEZE);
  assert_int_equal(s->v[3]->list.n, 3);
  assert_int_equal(s->v[4]->kind, A_TRAIN);
  assert_int_equal(s->v[4]->list.n, 3);
  done(p);
}

/* Each broken statement is reported and parsing goes on. */
static void recovery(void **state) {
  Parsed *p = parse("model m {\n  a = 1 +\n  b = (2\n  c = 3\n  d = * 4\n"
                    "  e = 5\n}\nmodel n { x = ] }\n");
  assert_true(p->d.errors >= 3);
  done(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(precedence),
      cmocka_unit_test(pipes),
      cmocka_unit_test(labels_and_seq),
      cmocka_unit_test(continuation),
      cmocka_unit_test(if_else_on_next_line),
      cmocka_unit_test(interpolation),
      cmocka_unit_test(top_level),
      cmocka_unit_test(recovery),
  };
  return cmocka_run_group_tests_name("parser", tests, NULL, NULL);
}
