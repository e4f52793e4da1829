/* Construction and the text form of the loop IR. The constructors fold
 * constants and identities, so lowered index arithmetic stays as simple as
 * a person would write it. */
#include "loop.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

Kernel *loop_kernel(Program *p, const char *name, const char *what, Loc loc) {
  Kernel *k = arena_alloc(p->a, sizeof *k);
  k->name = name;
  k->what = what;
  k->loc = loc;
  vec_push(p->a, p->kernels, k);
  return k;
}

/* Loop variables and temporaries share one namespace per kernel; a name
 * already taken gets a number. */
int loop_var(Program *p, Kernel *k, const char *name, int temp) {
  const char *use = name;
  for (int suffix = 2;; suffix++) {
    int taken = 0;
    for (int i = 0; i < k->nvars; i++)
      if (strcmp(k->vars[i], use) == 0)
        taken = 1;
    if (!taken)
      break;
    use = arena_printf(p->a, "%s_%d", name, suffix);
  }
  const char **vars =
      arena_alloc(p->a, sizeof(char *) * (size_t)(k->nvars + 1));
  unsigned char *kinds = arena_alloc(p->a, (size_t)k->nvars + 1);
  if (k->nvars) {
    memcpy(vars, k->vars, sizeof(char *) * (size_t)k->nvars);
    memcpy(kinds, k->kinds, (size_t)k->nvars);
  }
  vars[k->nvars] = use;
  kinds[k->nvars] = (unsigned char)temp;
  k->vars = vars;
  k->kinds = kinds;
  return k->nvars++;
}

Buffer *loop_local(Program *p, Kernel *k, const char *name, int64_t size) {
  Buffer *b = arena_alloc(p->a, sizeof *b);
  b->id = -1;
  int var = loop_var(p, k, name, 4);
  b->name = k->vars[var];
  b->kind = BUF_LOCAL;
  b->size = size;
  b->first = b->last = -1;
  vec_push(p->a, k->locals, b);
  return b;
}

Stmt *loop_stmt(Program *p, SKind kind) {
  Stmt *s = arena_alloc(p->a, sizeof *s);
  s->k = kind;
  return s;
}

static Expr *mk(Program *p, XKind k, int isint) {
  Expr *e = arena_alloc(p->a, sizeof *e);
  e->k = k;
  e->isint = isint;
  return e;
}

Expr *x_int(Program *p, int64_t v) {
  Expr *e = mk(p, X_INT, 1);
  e->i = v;
  return e;
}

Expr *x_float(Program *p, double v) {
  Expr *e = mk(p, X_FLOAT, 0);
  e->f = v;
  return e;
}

Expr *x_var(Program *p, int var) {
  Expr *e = mk(p, X_VAR, 1);
  e->var = var;
  return e;
}

Expr *x_temp(Program *p, int var) {
  Expr *e = mk(p, X_TEMP, 0);
  e->var = var;
  return e;
}

Expr *x_n(Program *p) { return mk(p, X_N, 1); }

Expr *x_itemp(Program *p, int var) {
  Expr *e = mk(p, X_TEMP, 1);
  e->var = var;
  return e;
}

Expr *x_rand(Program *p, int64_t stream, Expr *key) {
  Expr *e = mk(p, X_RAND, 0);
  e->i = stream;
  e->a = key;
  return e;
}

Expr *x_state(Program *p, XKind k) { return mk(p, k, k == X_STEP); }

Expr *x_fma(Program *p, Expr *a, Expr *b, Expr *c) {
  Expr *e = mk(p, X_FMA, 0);
  e->a = a;
  e->b = b;
  e->c = c;
  return e;
}

Expr *x_copy(Program *p, const Expr *e) {
  Expr *n = mk(p, e->k, e->isint);
  *n = *e;
  return n;
}

Expr *x_load(Program *p, Buffer *b, Expr *index) {
  Expr *e = mk(p, X_LOAD, b->is_int);
  e->buf = b;
  e->a = index;
  return e;
}

static int is_int(const Expr *e, int64_t v) {
  return e->k == X_INT && e->i == v;
}

static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

Expr *x_bin(Program *p, XKind k, Expr *a, Expr *b) {
  int isint = a->isint && b->isint;
  if (a->k == X_INT && b->k == X_INT) {
    switch (k) {
    case X_ADD: return x_int(p, a->i + b->i);
    case X_SUB: return x_int(p, a->i - b->i);
    case X_MUL: return x_int(p, a->i * b->i);
    case X_DIV: return x_int(p, floordiv(a->i, b->i));
    case X_MOD: return x_int(p, a->i - floordiv(a->i, b->i) * b->i);
    case X_MAX: return x_int(p, a->i > b->i ? a->i : b->i);
    case X_MIN: return x_int(p, a->i < b->i ? a->i : b->i);
    default: break;
    }
  }
  if (isint) {
    if ((k == X_ADD || k == X_SUB) && is_int(b, 0))
      return a;
    if (k == X_ADD && is_int(a, 0))
      return b;
    if ((k == X_MUL || k == X_DIV) && is_int(b, 1))
      return a;
    if (k == X_MUL && is_int(a, 1))
      return b;
    if (k == X_MUL && (is_int(a, 0) || is_int(b, 0)))
      return x_int(p, 0);
    if (k == X_MOD && is_int(b, 1))
      return x_int(p, 0);
    /* (x + c1) + c2 -> x + (c1 + c2): keeps offsets in one constant */
    if ((k == X_ADD || k == X_SUB) && b->k == X_INT && a->k == X_ADD &&
        a->b->k == X_INT)
      return x_bin(p, X_ADD, a->a,
                   x_int(p, k == X_ADD ? a->b->i + b->i : a->b->i - b->i));
    if (k == X_SUB && b->k == X_INT && b->i < 0)
      return x_bin(p, X_ADD, a, x_int(p, -b->i));
    if (k == X_ADD && b->k == X_INT && b->i < 0)
      return x_bin(p, X_SUB, a, x_int(p, -b->i));
  } else if (a->k == X_FLOAT && b->k == X_FLOAT && k >= X_ADD && k <= X_MIN) {
    switch (k) {
    case X_ADD: return x_float(p, a->f + b->f);
    case X_SUB: return x_float(p, a->f - b->f);
    case X_MUL: return x_float(p, a->f * b->f);
    case X_DIV: return x_float(p, a->f / b->f);
    default: break;
    }
  }
  Expr *e = mk(p, k, k >= X_LT && k <= X_AND ? 1 : isint);
  e->a = a;
  e->b = b;
  return e;
}

Expr *x_un(Program *p, XKind k, Expr *a) {
  Expr *e = mk(p, k, k == X_TOFLOAT ? 0 : a->isint);
  if (k == X_TOFLOAT && a->k == X_INT)
    return x_float(p, (double)a->i);
  e->a = a;
  return e;
}

Expr *x_select(Program *p, Expr *c, Expr *a, Expr *b) {
  if (c->k == X_INT)
    return c->i ? a : b;
  Expr *e = mk(p, X_SELECT, a->isint && b->isint);
  e->a = c;
  e->b = a;
  e->c = b;
  return e;
}

/* --- building ------------------------------------------------------------ */

LoopBuilder lb_start(Program *p, Kernel *k) {
  LoopBuilder b = {p, k, {&k->body}, 1};
  return b;
}

static void add(LoopBuilder *b, Stmt *s) {
  vec_push(b->p->a, *b->open[b->depth - 1], s);
}

int lb_for(LoopBuilder *b, const char *var, int64_t extent) {
  Stmt *s = loop_stmt(b->p, S_FOR);
  s->var = loop_var(b->p, b->k, var, 0);
  s->extent = extent;
  add(b, s);
  b->open[b->depth++] = &s->body;
  return s->var;
}

int lb_parallel_for(LoopBuilder *b, const char *var, int64_t extent) {
  int v = lb_for(b, var, extent);
  StmtVec *top = b->open[b->depth - 2];
  top->v[top->n - 1]->parallel = b->depth == 2; /* else a plain loop */
  return v;
}

void lb_if(LoopBuilder *b, Expr *cond) {
  Stmt *s = loop_stmt(b->p, S_IF);
  s->value = cond;
  add(b, s);
  b->open[b->depth++] = &s->body;
}

void lb_end(LoopBuilder *b) { b->depth--; }

static void store(LoopBuilder *b, SKind k, Buffer *buf, Expr *index,
                  Expr *value) {
  Stmt *s = loop_stmt(b->p, k);
  s->buf = buf;
  s->index = index;
  s->value = value;
  add(b, s);
}

void lb_store(LoopBuilder *b, Buffer *buf, Expr *index, Expr *value) {
  store(b, S_STORE, buf, index, value);
}

void lb_accum(LoopBuilder *b, Buffer *buf, Expr *index, Expr *value) {
  store(b, S_ACCUM, buf, index, value);
}

void lb_prefetch(LoopBuilder *b, Buffer *buf, Expr *index) {
  store(b, S_PREFETCH, buf, index, NULL);
}

void lb_fail_if(LoopBuilder *b, Expr *cond) {
  Stmt *s = loop_stmt(b->p, S_FAIL);
  s->value = cond;
  add(b, s);
}

int lb_let(LoopBuilder *b, const char *temp, Expr *value) {
  Stmt *s = loop_stmt(b->p, S_LET);
  s->var = loop_var(b->p, b->k, temp, value->isint ? 2 : 1);
  s->value = value;
  add(b, s);
  return s->var;
}

int lb_let_wide(LoopBuilder *b, const char *temp, Expr *value) {
  Stmt *s = loop_stmt(b->p, S_LET);
  s->var = loop_var(b->p, b->k, temp, 3);
  s->value = value;
  add(b, s);
  return s->var;
}

void lb_set(LoopBuilder *b, int temp, Expr *value) {
  Stmt *s = loop_stmt(b->p, S_SET);
  s->var = temp;
  s->value = value;
  add(b, s);
}

/* --- printing ------------------------------------------------------------ */

static const char *infix(XKind k) {
  switch (k) {
  case X_ADD: return " + ";
  case X_SUB: return " - ";
  case X_MUL: return " * ";
  case X_DIV: return " / ";
  case X_MOD: return " % ";
  case X_LT: return " < ";
  case X_LE: return " <= ";
  case X_EQ: return " == ";
  case X_AND: return " && ";
  default: return NULL;
  }
}

static int prec(const Expr *e) {
  switch (e->k) {
  case X_AND: return 1;
  case X_LT:
  case X_LE:
  case X_EQ: return 2;
  case X_ADD:
  case X_SUB: return 3;
  case X_MUL:
  case X_DIV:
  case X_MOD: return 4;
  case X_SELECT: return 0;
  default: return 9;
  }
}

void loop_print_float(FILE *out, double f, int c) {
  if (isinf(f)) {
    fprintf(out, c ? "%sINFINITY" : "%sinf", f < 0 ? "-" : "");
    return;
  }
  char buf[64];
  snprintf(buf, sizeof buf, "%.9g", f);
  if (!strpbrk(buf, ".en"))
    strcat(buf, ".0");
  fprintf(out, c ? "%sf" : "%s", buf);
}

static void sub(FILE *out, const Kernel *k, const Expr *e, int c, int min) {
  int paren = prec(e) < min;
  if (paren)
    fputc('(', out);
  loop_print_expr(out, k, e, c);
  if (paren)
    fputc(')', out);
}

void loop_print_expr(FILE *out, const Kernel *k, const Expr *e, int c) {
  const char *op = infix(e->k);
  if (op) {
    int pe = prec(e);
    sub(out, k, e->a, c, pe);
    fputs(op, out);
    /* the right operand of - / % binds tighter than a sibling */
    sub(out, k, e->b, c, e->k == X_ADD || e->k == X_MUL ? pe : pe + 1);
    return;
  }
  const char *fn = NULL;
  switch (e->k) {
  case X_INT: fprintf(out, "%" PRId64, e->i); return;
  case X_FLOAT: loop_print_float(out, e->f, c); return;
  case X_VAR:
  case X_TEMP: fputs(k->vars[e->var], out); return;
  case X_N: fputs("count", out); return;
  case X_LR: fputs(c ? "s->lr" : "lr", out); return;
  case X_STEP: fputs(c ? "s->step" : "step", out); return;
  case X_RAND:
    fprintf(out, c ? "uniform(s, %" PRId64 ", " : "rand(%" PRId64 ", ", e->i);
    loop_print_expr(out, k, e->a, c);
    fputc(')', out);
    return;
  case X_LOAD:
    fprintf(out, "%s[", e->buf->name);
    loop_print_expr(out, k, e->a, c);
    fputc(']', out);
    return;
  case X_SELECT:
    sub(out, k, e->a, c, 1);
    fputs(" ? ", out);
    sub(out, k, e->b, c, 1);
    fputs(" : ", out);
    sub(out, k, e->c, c, 1);
    return;
  case X_NEG:
    fputc('-', out);
    sub(out, k, e->a, c, 9);
    return;
  case X_TOFLOAT:
    fputs(c ? "(float)" : "float ", out);
    sub(out, k, e->a, c, 9);
    return;
  case X_MAX: fn = e->isint ? "max" : c ? "max_of" : "max"; break;
  case X_MIN: fn = e->isint ? "min" : c ? "min_of" : "min"; break;
  case X_EXP: fn = c ? "expf" : "exp"; break;
  case X_LOG: fn = c ? "logf" : "log"; break;
  case X_SQRT: fn = c ? "sqrtf" : "sqrt"; break;
  case X_POW: fn = c ? "powf" : "pow"; break;
  case X_FMA: fn = c ? "madd" : "fma"; break;
  default: break;
  }
  if (!fn) {
    fputs("?", out);
    return;
  }
  if (c && e->isint && (e->k == X_MAX || e->k == X_MIN)) {
    /* integer min/max as a conditional: no helper needed in C */
    fputc('(', out);
    sub(out, k, e->a, c, 3);
    fputs(e->k == X_MAX ? " > " : " < ", out);
    sub(out, k, e->b, c, 3);
    fputs(" ? ", out);
    sub(out, k, e->a, c, 3);
    fputs(" : ", out);
    sub(out, k, e->b, c, 3);
    fputc(')', out);
    return;
  }
  fprintf(out, "%s(", fn);
  loop_print_expr(out, k, e->a, c);
  if (e->b) {
    fputs(", ", out);
    loop_print_expr(out, k, e->b, c);
  }
  if (e->c) {
    fputs(", ", out);
    loop_print_expr(out, k, e->c, c);
  }
  fputc(')', out);
}

static void print_stmts(FILE *out, const Kernel *k, const StmtVec *body,
                        int depth) {
  for (int i = 0; i < body->n; i++) {
    const Stmt *s = body->v[i];
    fprintf(out, "%*s", depth * 2, "");
    switch (s->k) {
    case S_FOR:
      fputs(s->parallel ? "parallel for " : "for ", out);
      if (s->extent < 0)
        fprintf(out, "%s in 0..count\n", k->vars[s->var]);
      else
        fprintf(out, "%s in 0..%" PRId64 "\n", k->vars[s->var], s->extent);
      print_stmts(out, k, &s->body, depth + 1);
      break;
    case S_IF:
      fputs("if ", out);
      loop_print_expr(out, k, s->value, 0);
      fputc('\n', out);
      print_stmts(out, k, &s->body, depth + 1);
      break;
    case S_STORE:
    case S_ACCUM:
      fprintf(out, "%s[", s->buf->name);
      loop_print_expr(out, k, s->index, 0);
      fprintf(out, "] %s ", s->k == S_STORE ? "=" : "+=");
      loop_print_expr(out, k, s->value, 0);
      fputc('\n', out);
      break;
    case S_LET:
    case S_SET:
      fprintf(out, "%s%s = ", s->k == S_LET ? "let " : "", k->vars[s->var]);
      loop_print_expr(out, k, s->value, 0);
      fputc('\n', out);
      break;
    case S_FAIL:
      fputs("fail if ", out);
      loop_print_expr(out, k, s->value, 0);
      fputc('\n', out);
      break;
    case S_PREFETCH:
      fprintf(out, "prefetch %s[", s->buf->name);
      loop_print_expr(out, k, s->index, 0);
      fputs("]\n", out);
      break;
    }
  }
}

static const char *kind_name(BufKind k) {
  switch (k) {
  case BUF_F32: return "f32";
  case BUF_I64: return "i64";
  case BUF_ARENA: return "arena";
  case BUF_INPUT: return "input";
  case BUF_OUTPUT: return "output";
  case BUF_GRAD: return "grad";
  case BUF_M: return "m";
  case BUF_V: return "v";
  case BUF_LOCAL: return "local";
  case BUF_PACKED: return "packed";
  }
  return "?";
}

void loop_print(FILE *out, const Program *p) {
  fprintf(out, "program %s %s batch %" PRId64 "\n", p->g->name,
          p->train ? "train" : "forward", p->batch);
  for (int i = 0; i < p->bufs.n; i++) {
    const Buffer *b = p->bufs.v[i];
    fprintf(out, "buffer %s %s %" PRId64 " at %" PRId64, b->name,
            kind_name(b->kind), b->size, b->offset);
    if (b->alias)
      fprintf(out, " alias of %s", b->alias->name);
    fputc('\n', out);
  }
  for (int i = 0; i < p->kernels.n; i++) {
    const Kernel *k = p->kernels.v[i];
    fprintf(out, "kernel %s (%s)\n", k->name, k->what);
    if (k->schedule)
      fprintf(out, "  schedule %s\n", k->schedule);
    for (int j = 0; j < k->locals.n; j++)
      fprintf(out, "  local %s[%" PRId64 "]\n", k->locals.v[j]->name,
              k->locals.v[j]->size);
    print_stmts(out, k, &k->body, 1);
  }
  for (int i = 0; i < p->update.n; i++) {
    const Kernel *k = p->update.v[i];
    fprintf(out, "update %s (%s)\n", k->name, k->what);
    print_stmts(out, k, &k->body, 1);
  }
}
