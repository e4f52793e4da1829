/* The tokenizer: numbers versus label paths, keywords, strings and the
 * places it records. */
#include "testutil.h"

#include "lexer.h"

typedef struct Lexed {
  Tok t[64];
  int n;
  int errors;
} Lexed;

static Lexed lex_all(const char *text) {
  Lexed r = {0};
  Arena *a = arena_new();
  Diag d;
  FILE *sink = fopen("/dev/null", "w");
  diag_init(&d, a, sink);
  LexState st = {&d, 1, 1, 1, 0};
  void *scan;
  assert_int_equal(lex_open(&st, text, strlen(text), &scan), 0);
  int last = 0;
  while (r.n < 64) {
    Tok t = {0};
    st.after_dot = last == '.';
    t.kind = lex_raw(&t, scan);
    if (!t.kind)
      break;
    t.text = NULL; /* points into the scanner's buffer */
    r.t[r.n++] = t;
    last = t.kind;
  }
  lex_close(scan);
  r.errors = d.errors;
  fclose(sink);
  arena_free(a);
  return r;
}

static void numbers(void **state) {
  Lexed r = lex_all("1 0.9 1e-4 2.5e3 42");
  assert_int_equal(r.n, 5);
  assert_int_equal(r.t[0].kind, T_INT);
  assert_int_equal(r.t[0].ival, 1);
  assert_int_equal(r.t[1].kind, T_FLOAT);
  assert_true(r.t[1].fval == 0.9);
  assert_int_equal(r.t[2].kind, T_FLOAT);
  assert_true(r.t[2].fval == 1e-4);
  assert_int_equal(r.t[3].kind, T_FLOAT);
  assert_true(r.t[3].fval == 2500.0);
  assert_int_equal(r.t[4].ival, 42);
}

/* "layer1.0" and "features.0.1" are label paths, never numbers. */
static void label_paths(void **state) {
  Lexed r = lex_all("layer1.0");
  assert_int_equal(r.n, 3);
  assert_int_equal(r.t[0].kind, T_IDENT);
  assert_int_equal(r.t[1].kind, '.');
  assert_int_equal(r.t[2].kind, T_INT);
  r = lex_all("features.0.1");
  assert_int_equal(r.n, 5);
  assert_int_equal(r.t[2].kind, T_INT);
  assert_int_equal(r.t[2].ival, 0);
  assert_int_equal(r.t[3].kind, '.');
  assert_int_equal(r.t[4].kind, T_INT);
  assert_int_equal(r.t[4].ival, 1);
  assert_int_equal(r.t[4].loc.col, 12);
}

static void ranges(void **state) {
  Lexed r = lex_all("1..n");
  assert_int_equal(r.n, 3);
  assert_int_equal(r.t[0].kind, T_INT);
  assert_int_equal(r.t[1].kind, T_DOTDOT);
  assert_int_equal(r.t[2].kind, T_IDENT);
}

static void operators_and_keywords(void **state) {
  Lexed r = lex_all("-> // == != <= >= and or not seq model relu");
  int want[] = {T_ARROW, T_IDIV, T_EQ,  T_NE,  T_LE,    T_GE,
                T_AND,   T_OR,   T_NOT, T_SEQ, T_MODEL, T_IDENT};
  assert_int_equal(r.n, 12);
  for (int i = 0; i < 12; i++)
    assert_int_equal(r.t[i].kind, want[i]);
}

static void places(void **state) {
  Lexed r = lex_all("a\n  bc # comment\n\tx");
  assert_int_equal(r.n, 5);
  assert_int_equal(r.t[0].loc.line, 1);
  assert_int_equal(r.t[0].loc.col, 1);
  assert_int_equal(r.t[1].kind, T_NEWLINE);
  assert_int_equal(r.t[2].loc.line, 2);
  assert_int_equal(r.t[2].loc.col, 3);
  assert_int_equal(r.t[4].loc.line, 3);
  assert_int_equal(r.t[4].loc.col, 2);
}

static void bad_input(void **state) {
  assert_int_equal(lex_all("a $ b").errors, 1);
  assert_int_equal(lex_all("\"open").errors, 1);
  assert_int_equal(lex_all("99999999999999999999").errors, 1);
  assert_int_equal(lex_all("3x").errors, 1);
  assert_int_equal(lex_all("\"ok\" 9223372036854775807").errors, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(numbers), cmocka_unit_test(label_paths),
      cmocka_unit_test(ranges),  cmocka_unit_test(operators_and_keywords),
      cmocka_unit_test(places),  cmocka_unit_test(bad_input),
  };
  return cmocka_run_group_tests_name("lexer", tests, NULL, NULL);
}
