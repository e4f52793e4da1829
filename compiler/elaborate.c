/* Elaboration runs the .cnn program of one model: it evaluates
 * expressions, calls blocks, unrolls loops, takes branches, and creates a
 * graph node for every operator application. Shapes are inferred as each
 * node is created, because the program may ask for them (channels(x)).
 *
 * Names: a label on an operator names it (scope + label); a label on a
 * block call or seq opens a scope; seq numbers its stages like
 * nn.Sequential; other operators are named <op><n> per scope. Parameter
 * names are the owner's name plus PyTorch's role ("weight", ...), checked
 * for uniqueness as they are made.
 *
 * After an error the offending value becomes "poison": operations on it
 * produce poison silently, so one mistake is reported once and elaboration
 * can go on to find others. */
#include "elaborate.h"

#include <inttypes.h>
#include <string.h>

#include "ops.h"
#include "parser.h"
#include "shape.h"
#include "value.h"

enum {
  MAX_CALL_DEPTH = 200,
  MAX_LOOP_STEPS = 1000000, /* loop iterations in one model */
  MAX_NODES = 100000,       /* graph nodes, before autodiff */
  MAX_PARAM_NAME = 255,     /* what generated loaders compare */
  MAX_CALLS = 100000,       /* block calls in one model */
  MAX_EXPR_DEPTH = 2000,    /* nesting of expressions being evaluated */
  MAX_STRING = 65536,       /* bytes of a string built at compile time */
  MAX_BATCH = 1000000,      /* as --batch */
};

typedef struct Binding {
  const char *name;
  Value v;
  struct Binding *next;
} Binding;

typedef struct Env {
  Binding *head;
} Env;

typedef struct Counter {
  const char *scope;
  OpKind op;
  int n;
  struct Counter *next;
} Counter;

VEC_TYPE(LocVec, Loc);

/* Parameters by name (open addressing), so a model of many parameters
 * checks each new name for uniqueness in constant time. */
typedef struct ParamSet {
  Param **slot;
  int cap, n;
} ParamSet;

typedef struct Freeze {
  const char *label;
  Loc loc;
} Freeze;
VEC_TYPE(FreezeVec, Freeze);

typedef struct Elab {
  Diag *d;
  Arena *a;
  const Sources *p;
  Graph *g;
  const char *scope; /* parameter-name prefix of the current scope */
  Scope *cluster;
  Counter *counters;
  const Ast *calls[MAX_CALL_DEPTH];
  Loc call_locs[MAX_CALL_DEPTH];
  int call_ids[MAX_CALL_DEPTH];
  const Loc *arg_locs[MAX_CALL_DEPTH]; /* per parameter; file 0: default */
  int depth;
  int ncalls;      /* block calls made so far: the next call's id */
  int context_top; /* call frames the context notes show */
  LocVec dup_reported;
  int64_t steps;
  int too_big; /* a size limit was hit: stop building */
  int eval_depth;
  ParamSet names; /* the parameters made so far, by name */
  FreezeVec freezes;
  Loc loss_loc, train_loc;
} Elab;

/* What the statements being run belong to. */
typedef struct Frame {
  Env *env;
  const Ast *block; /* NULL in a model */
  Value ret;
  int returned;
} Frame;

static Value eval(Elab *E, Env *env, const Ast *n);
static Value apply(Elab *E, Env *env, const Ast *target, const Value *in,
                   const char *label, Loc loc);
static void exec_stmts(Elab *E, Frame *f, const AstList *stmts);
static const char *elab_label(Elab *E, Env *env, const Ast *l);
static void elab_train(Elab *E, Env *env, const Ast *s);

static Value poison(void) { return (Value){.k = V_POISON}; }
static Value vint(int64_t i) { return (Value){.k = V_INT, .i = i}; }
static Value vbool(int b) { return (Value){.k = V_BOOL, .i = b != 0}; }
static Value vtensor(Node *t) { return (Value){.k = V_TENSOR, .t = t}; }

/* --- environments and names -------------------------------------------- */

static Value *lookup(Env *env, const char *name) {
  for (Binding *b = env->head; b; b = b->next)
    if (strcmp(b->name, name) == 0)
      return &b->v;
  return NULL;
}

static void bind(Elab *E, Env *env, const char *name, Value v) {
  Value *old = lookup(env, name);
  if (old) {
    *old = v;
    return;
  }
  Binding *b = arena_alloc(E->a, sizeof *b);
  b->name = name;
  b->v = v;
  b->next = env->head;
  env->head = b;
}

static const char *join(Elab *E, const char *scope, const char *label) {
  if (!scope[0])
    return label;
  return arena_printf(E->a, "%s.%s", scope, label);
}

static const char *auto_name(Elab *E, OpKind op) {
  Counter *c = E->counters;
  while (c && !(c->op == op && strcmp(c->scope, E->scope) == 0))
    c = c->next;
  if (!c) {
    c = arena_alloc(E->a, sizeof *c);
    c->scope = E->scope;
    c->op = op;
    c->next = E->counters;
    E->counters = c;
  }
  return join(E, E->scope,
              arena_printf(E->a, "%s%d", op_info[op].name, c->n++));
}

static Scope *push_cluster(Elab *E, const char *what, Loc loc) {
  Scope *s = arena_alloc(E->a, sizeof *s);
  s->id = E->g->scopes.n;
  s->prefix = E->scope;
  s->what = what;
  s->loc = loc;
  s->parent = E->cluster;
  vec_push(E->a, E->g->scopes, s);
  Scope *saved = E->cluster;
  E->cluster = s;
  return saved;
}

/* Edit distance, for "did you mean" suggestions. */
static int distance(const char *a, const char *b) {
  int la = (int)strlen(a), lb = (int)strlen(b);
  if (la > 40 || lb > 40)
    return 99;
  int row[41];
  for (int j = 0; j <= lb; j++)
    row[j] = j;
  for (int i = 1; i <= la; i++) {
    int prev = row[0];
    row[0] = i;
    for (int j = 1; j <= lb; j++) {
      int cur = row[j];
      int best = prev + (a[i - 1] != b[j - 1]);
      if (row[j] + 1 < best)
        best = row[j] + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      prev = cur;
    }
  }
  return row[lb];
}

static void consider(const char *name, const char *cand, const char **best,
                     int *bestd) {
  if (strlen(name) <= 2 || strlen(cand) <= 2)
    return; /* every short name is close to every other */
  int dist = distance(name, cand);
  int limit = strlen(name) <= 3 ? 1 : 2;
  if (dist <= limit && dist < *bestd) {
    *bestd = dist;
    *best = cand;
  }
}

static const char *suggest(Elab *E, Env *env, const char *name, int values,
                           int callables) {
  const char *best = NULL;
  int bestd = 99;
  if (values)
    for (Binding *b = env ? env->head : NULL; b; b = b->next)
      consider(name, b->name, &best, &bestd);
  if (callables) {
    for (int i = 0; i < E->p->blocks.n; i++)
      consider(name, E->p->blocks.v[i]->name, &best, &bestd);
    for (int i = 0; i < OP_COUNT; i++)
      if (i != OP_INPUT && !(op_info[i].flags & OPF_INTERNAL))
        consider(name, op_info[i].name, &best, &bestd);
    static const char *const builtins[] = {"channels", "height", "width",
                                           "len"};
    for (size_t i = 0; i < sizeof builtins / sizeof *builtins; i++)
      consider(name, builtins[i], &best, &bestd);
  }
  return best;
}

static const char *did_you_mean(Elab *E, const char *best) {
  return best ? arena_printf(E->a, "; did you mean '%s'?", best) : "";
}

/* Notes after an error inside block calls: the calls that led there,
 * innermost first. */
static void call_context(void *data, Diag *d) {
  Elab *E = data;
  for (int i = E->context_top - 1, shown = 0; i >= 0; i--, shown++) {
    if (shown == 4) {
      diag_later(d, E->call_locs[0], "... in %d more calls, from here", i + 1);
      break;
    }
    diag_later(d, E->call_locs[i], "in block '%s', called here",
               E->calls[i]->name);
  }
}

/* The running call frame v was passed into as an argument, or -1. */
static int arg_frame(const Elab *E, Value v) {
  if (!v.param)
    return -1;
  for (int i = E->depth - 1; i >= 0; i--)
    if (E->call_ids[i] == v.call)
      return i;
  return -1;
}

/* Reports that v cannot be used at `at` (msg says why). A block argument
 * misused inside its block is the caller's mistake: it is reported at the
 * call, naming the parameter, with a note at the use. */
static void misuse(Elab *E, Value v, Loc at, const char *msg) {
  int f = arg_frame(E, v);
  if (f < 0) {
    diag_error(E->d, at, "%s", msg);
    return;
  }
  Loc where = E->call_locs[f];
  const Ast *bk = E->calls[f];
  for (int j = 0; j < bk->list.n; j++)
    if (bk->list.v[j] == v.param && E->arg_locs[f][j].file)
      where = E->arg_locs[f][j];
  E->context_top = f;
  diag_error(E->d, where, "argument '%s' of block '%s' cannot be %s: %s",
             v.param->name, bk->name, value_kind_name(v.k), msg);
  E->context_top = E->depth;
  diag_note(E->d, at, "'%s' is used here", v.param->name);
}

static int blame_arg(void *ctx, const Arg *a, Loc at, const char *msg) {
  Elab *E = ctx;
  if (arg_frame(E, a->v) < 0)
    return 0;
  misuse(E, a->v, at, msg);
  return 1;
}

/* --- values ----------------------------------------------------------------
 */

static const char *to_text(Elab *E, Value v, Loc loc, int *ok) {
  switch (v.k) {
  case V_INT: return arena_printf(E->a, "%" PRId64, v.i);
  case V_FLOAT: return arena_printf(E->a, "%g", v.f);
  case V_BOOL: return v.i ? "true" : "false";
  case V_STR: return v.s;
  case V_POISON: *ok = 0; return "";
  case V_NONE:
  case V_LIST:
  case V_RANGE:
  case V_TENSOR: break;
  }
  diag_error(E->d, loc, "cannot put %s into a string", value_kind_name(v.k));
  *ok = 0;
  return "";
}

static Value too_long(Elab *E, Loc loc) {
  diag_error(E->d, loc, "this string would be longer than %d bytes",
             MAX_STRING);
  E->too_big = 1;
  return poison();
}

static Value eval_string(Elab *E, Env *env, const Ast *n) {
  const char *s = "";
  int ok = 1;
  for (int i = 0; i < n->list.n; i++) {
    const Ast *part = n->list.v[i];
    const char *t = part->kind == A_STRPART
                        ? part->name
                        : to_text(E, eval(E, env, part), part->loc, &ok);
    if (ok && strlen(s) + strlen(t) > MAX_STRING)
      return too_long(E, n->loc);
    s = i ? arena_printf(E->a, "%s%s", s, t) : t;
  }
  if (!ok)
    return poison();
  return (Value){.k = V_STR, .s = s};
}

static int is_num(Value v) { return v.k == V_INT || v.k == V_FLOAT; }
static double num(Value v) { return v.k == V_INT ? (double)v.i : v.f; }

static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0)))
    q--;
  return q;
}

static Value make_op(Elab *E, OpKind op, const Value *in, int nin,
                     const Arg *args, int nargs, const char *label,
                     Loc label_loc, Loc loc);

static Value arith(Elab *E, int op, Value a, Value b, Loc loc) {
  if (a.k == V_INT && b.k == V_INT) {
    int64_t r = 0;
    int overflow = 0;
    switch (op) {
    case '+': overflow = __builtin_add_overflow(a.i, b.i, &r); break;
    case '-': overflow = __builtin_sub_overflow(a.i, b.i, &r); break;
    case '*': overflow = __builtin_mul_overflow(a.i, b.i, &r); break;
    case '/':
    case T_IDIV:
    case '%':
      if (b.i == 0) {
        diag_error(E->d, loc, "division by zero");
        return poison();
      }
      if (a.i == INT64_MIN && b.i == -1) {
        overflow = 1;
        break;
      }
      if (op == '/' && a.i % b.i != 0) {
        diag_error(E->d, loc,
                   "%" PRId64 " / %" PRId64
                   " is not an integer; write '//' for floor division",
                   a.i, b.i);
        return poison();
      }
      r = op == '%' ? a.i - floor_div(a.i, b.i) * b.i : floor_div(a.i, b.i);
      break;
    default: break;
    }
    if (overflow) {
      diag_error(E->d, loc, "integer overflow in '%s'", ast_op_name(op));
      return poison();
    }
    return vint(r);
  }
  double x = num(a), y = num(b), r = 0;
  switch (op) {
  case '+': r = x + y; break;
  case '-': r = x - y; break;
  case '*': r = x * y; break;
  case '/':
    if (y == 0) {
      diag_error(E->d, loc, "division by zero");
      return poison();
    }
    r = x / y;
    break;
  default:
    diag_error(E->d, loc, "'%s' needs integers", ast_op_name(op));
    return poison();
  }
  return (Value){.k = V_FLOAT, .f = r};
}

static Value compare(Elab *E, int op, Value a, Value b, Loc loc) {
  int c;
  if (is_num(a) && is_num(b)) {
    double x = num(a), y = num(b);
    if (a.k == V_INT && b.k == V_INT)
      c = (a.i > b.i) - (a.i < b.i);
    else
      c = (x > y) - (x < y);
  } else if (op == T_EQ || op == T_NE) {
    if (a.k != b.k || (a.k != V_STR && a.k != V_BOOL)) {
      diag_error(E->d, loc, "cannot compare %s with %s", value_kind_name(a.k),
                 value_kind_name(b.k));
      return poison();
    }
    c = a.k == V_STR ? strcmp(a.s, b.s) != 0 : a.i != b.i;
  } else {
    diag_error(E->d, loc, "'%s' compares numbers, not %s and %s",
               ast_op_name(op), value_kind_name(a.k), value_kind_name(b.k));
    return poison();
  }
  switch (op) {
  case T_EQ: return vbool(c == 0);
  case T_NE: return vbool(c != 0);
  case '<': return vbool(c < 0);
  case T_LE: return vbool(c <= 0);
  case '>': return vbool(c > 0);
  default: return vbool(c >= 0);
  }
}

static Value eval_binop(Elab *E, Env *env, const Ast *n) {
  if (n->op == T_AND || n->op == T_OR) {
    Value a = eval(E, env, n->a);
    if (a.k == V_POISON)
      return a;
    if (a.k != V_BOOL) {
      diag_error(E->d, n->loc, "'%s' needs booleans, not %s",
                 ast_op_name(n->op), value_kind_name(a.k));
      return poison();
    }
    if ((n->op == T_AND) != (a.i != 0))
      return a; /* short circuit */
    Value b = eval(E, env, n->b);
    if (b.k != V_BOOL && b.k != V_POISON) {
      diag_error(E->d, n->loc, "'%s' needs booleans, not %s",
                 ast_op_name(n->op), value_kind_name(b.k));
      return poison();
    }
    return b;
  }
  Value a = eval(E, env, n->a), b = eval(E, env, n->b);
  if (a.k == V_POISON || b.k == V_POISON)
    return poison();
  switch (n->op) {
  case '+':
    if (a.k == V_TENSOR && b.k == V_TENSOR) {
      Value in[2] = {a, b};
      return make_op(E, OP_ADD, in, 2, NULL, 0, NULL, n->loc, n->loc);
    }
    if (a.k == V_STR && b.k == V_STR) {
      if (strlen(a.s) + strlen(b.s) > MAX_STRING)
        return too_long(E, n->loc);
      return (Value){.k = V_STR, .s = arena_printf(E->a, "%s%s", a.s, b.s)};
    }
    /* fallthrough */
  case '-':
  case '*':
  case '/':
  case T_IDIV:
  case '%':
    if (!is_num(a) || !is_num(b)) {
      if (a.k == V_TENSOR || b.k == V_TENSOR)
        diag_error(E->d, n->loc,
                   "'%s' between %s and %s: tensors only support '+' with "
                   "another tensor",
                   ast_op_name(n->op), value_kind_name(a.k),
                   value_kind_name(b.k));
      else
        diag_error(E->d, n->loc, "cannot apply '%s' to %s and %s",
                   ast_op_name(n->op), value_kind_name(a.k),
                   value_kind_name(b.k));
      return poison();
    }
    return arith(E, n->op, a, b, n->loc);
  default: return compare(E, n->op, a, b, n->loc);
  }
}

static Value eval_list(Elab *E, Env *env, const Ast *n) {
  Value v = {.k = V_LIST, .n = n->list.n};
  v.items = arena_alloc(E->a, sizeof(Value) * (size_t)(n->list.n + 1));
  for (int i = 0; i < n->list.n; i++) {
    v.items[i] = eval(E, env, n->list.v[i]);
    if (v.items[i].k == V_POISON)
      return poison();
  }
  return v;
}

/* Evaluation recurses once per level of an expression; a long chain
 * (`1 + 1 + ...`, `x -> relu -> ...`) is as deep as it is long. */
static Value eval_node(Elab *E, Env *env, const Ast *n);

static Value eval(Elab *E, Env *env, const Ast *n) {
  if (E->too_big)
    return poison();
  if (E->eval_depth >= MAX_EXPR_DEPTH) {
    diag_error(E->d, n->loc, "expression nested more than %d deep",
               MAX_EXPR_DEPTH);
    E->too_big = 1;
    return poison();
  }
  E->eval_depth++;
  Value v = eval_node(E, env, n);
  E->eval_depth--;
  return v;
}

static Value eval_node(Elab *E, Env *env, const Ast *n) {
  switch (n->kind) {
  case A_INT: return vint(n->ival);
  case A_FLOAT: return (Value){.k = V_FLOAT, .f = n->fval};
  case A_BOOL: return vbool((int)n->ival);
  case A_STR: return eval_string(E, env, n);
  case A_NAME: {
    Value *v = lookup(env, n->name);
    if (v)
      return *v;
    if (program_block(E->p, n->name) || op_lookup(n->name) != OP_NONE) {
      diag_error(E->d, n->loc,
                 "'%s' is %s, not a value: apply it with 'x -> %s' or "
                 "'%s(x)'",
                 n->name,
                 program_block(E->p, n->name) ? "a block" : "an operator",
                 n->name, n->name);
      return poison();
    }
    diag_error(E->d, n->loc, "'%s' is not defined%s", n->name,
               did_you_mean(E, suggest(E, env, n->name, 1, 0)));
    bind(E, env, n->name, poison()); /* report it once */
    return poison();
  }
  case A_LIST: return eval_list(E, env, n);
  case A_RANGE: {
    Value a = eval(E, env, n->a), b = eval(E, env, n->b);
    if (a.k == V_POISON || b.k == V_POISON)
      return poison();
    if (a.k != V_INT || b.k != V_INT) {
      diag_error(E->d, n->loc, "a range needs integers, not %s and %s",
                 value_kind_name(a.k), value_kind_name(b.k));
      return poison();
    }
    return (Value){.k = V_RANGE, .i = a.i, .hi = b.i};
  }
  case A_BINOP: return eval_binop(E, env, n);
  case A_UNOP: {
    Value a = eval(E, env, n->a);
    if (a.k == V_POISON)
      return a;
    if (n->op == T_NOT) {
      if (a.k != V_BOOL) {
        diag_error(E->d, n->loc, "'not' needs a boolean, not %s",
                   value_kind_name(a.k));
        return poison();
      }
      return vbool(!a.i);
    }
    if (a.k == V_INT && a.i != INT64_MIN)
      return vint(-a.i);
    if (a.k == V_FLOAT)
      return (Value){.k = V_FLOAT, .f = -a.f};
    diag_error(E->d, n->loc, "cannot negate %s", value_kind_name(a.k));
    return poison();
  }
  case A_CALL: return apply(E, env, n, NULL, NULL, n->loc);
  case A_PIPE: {
    Value in = eval(E, env, n->a);
    if (in.k == V_POISON)
      return in;
    const Ast *st = n->b;
    const char *label = NULL;
    if (st->a) {
      label = elab_label(E, env, st->a);
      if (!label)
        return poison();
    }
    return apply(E, env, st->b, &in, label, st->a ? st->a->loc : st->loc);
  }
  case A_STRPART:
  case A_KWARG:
  case A_STAGE:
  case A_SEQ:
  case A_LABEL_PATH:
  case A_LABEL_EXPR:
  case A_LABEL_STR:
  case A_INPUT:
  case A_OUTPUT:
  case A_BIND:
  case A_RETURN:
  case A_FOR:
  case A_IF:
  case A_LOSS:
  case A_FREEZE:
  case A_TRAIN:
  case A_TRAIN_SET:
  case A_TRAIN_CALL:
  case A_IMPORT:
  case A_BLOCK:
  case A_PARAM:
  case A_MODEL: break;
  }
  if (n->kind == A_SEQ) {
    diag_error(E->d, n->loc, "a seq needs an input: write 'x -> seq { ... }'");
    return poison();
  }
  diag_internal(E->d, "unexpected expression kind %d", (int)n->kind);
  return poison();
}

/* The text of a label: "a.b.0", [expr] or "string{i}". NULL on error. */
/* 1 if s can go into a C string literal and a C comment as it is. */
static int c_safe(const char *s) {
  for (const char *p = s; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '\\' || *p == '"' ||
        (p[0] == '/' && p[1] == '*') || (p[0] == '*' && p[1] == '/') ||
        (p[0] == '?' && p[1] == '?'))
      return 0;
  return 1;
}

static const char *elab_label(Elab *E, Env *env, const Ast *l) {
  switch (l->kind) {
  case A_LABEL_PATH: {
    const char *s = "";
    for (int i = 0; i < l->list.n; i++) {
      const Ast *c = l->list.v[i];
      const char *part =
          c->kind == A_INT ? arena_printf(E->a, "%" PRId64, c->ival) : c->name;
      s = i ? arena_printf(E->a, "%s.%s", s, part) : part;
    }
    return s;
  }
  case A_LABEL_EXPR:
  case A_LABEL_STR: {
    Value v = eval(E, env, l->a);
    if (v.k == V_POISON)
      return NULL;
    if (v.k == V_INT)
      return arena_printf(E->a, "%" PRId64, v.i);
    if (v.k == V_STR && !c_safe(v.s)) {
      diag_error(E->d, l->loc,
                 "a label may not hold control characters, '\\', '\"', "
                 "'/*', '*/' or '?\?': its name goes into generated C");
      return NULL;
    }
    if (v.k == V_STR && v.s[0] && v.s[0] != '.' &&
        v.s[strlen(v.s) - 1] != '.' && !strchr(v.s, ' '))
      return v.s;
    if (v.k == V_STR)
      diag_error(E->d, l->loc, "'%s' is not a valid label", v.s);
    else
      diag_error(E->d, l->loc, "a label must be an integer or a string, not %s",
                 value_kind_name(v.k));
    return NULL;
  }
  default:
    diag_internal(E->d, "unexpected label kind %d", (int)l->kind);
    return NULL;
  }
}

/* --- calls --------------------------------------------------------------- */

VEC_TYPE(ArgVec, Arg);

static int eval_args(Elab *E, Env *env, const Ast *call, const Value *in,
                     ArgVec *out) {
  int ok = 1;
  if (in) {
    Arg a = {NULL, *in, call->loc};
    vec_push(E->a, *out, a);
  }
  if (call->kind != A_CALL)
    return ok;
  for (int i = 0; i < call->list.n; i++) {
    const Ast *x = call->list.v[i];
    Arg a = {NULL, {0}, x->loc};
    if (x->kind == A_KWARG) {
      a.name = x->name;
      a.v = eval(E, env, x->a);
    } else {
      a.v = eval(E, env, x);
    }
    vec_push(E->a, *out, a);
  }
  return ok;
}

static Value builtin(Elab *E, const char *name, const ArgVec *args, Loc loc,
                     int *handled) {
  *handled = 1;
  int which = strcmp(name, "channels") == 0 ? 0
              : strcmp(name, "height") == 0 ? 1
              : strcmp(name, "width") == 0  ? 2
              : strcmp(name, "len") == 0    ? 3
                                            : -1;
  if (which < 0) {
    *handled = 0;
    return poison();
  }
  if (args->n != 1 || args->v[0].name) {
    diag_error(E->d, loc, "'%s' takes exactly one argument", name);
    return poison();
  }
  Value v = args->v[0].v;
  if (v.k == V_POISON)
    return v;
  if (which == 3) {
    if (v.k == V_LIST)
      return vint(v.n);
    diag_error(E->d, args->v[0].loc, "'len' needs a list, not %s",
               value_kind_name(v.k));
    return poison();
  }
  if (v.k != V_TENSOR) {
    misuse(E, v, args->v[0].loc,
           arena_printf(E->a, "'%s' needs a tensor, not %s", name,
                        value_kind_name(v.k)));
    return poison();
  }
  Shape s = v.t->shape;
  if (which == 0 && s.rank >= 1)
    return vint(s.d[0]);
  if (which > 0 && s.rank == 3)
    return vint(s.d[which]);
  diag_error(E->d, args->v[0].loc, "'%s' needs a [C, H, W] tensor, not %s",
             name, shape_str(E->a, s));
  return poison();
}

static Value call_block(Elab *E, const Ast *bk, const ArgVec *args,
                        const char *label, Loc loc) {
  for (int i = 0; i < E->depth; i++)
    if (E->calls[i] == bk) {
      diag_error(E->d, loc, "block '%s' calls itself; recursion is not allowed",
                 bk->name);
      diag_note(E->d, bk->loc, "'%s' defined here", bk->name);
      return poison();
    }
  if (E->depth == MAX_CALL_DEPTH) {
    diag_error(E->d, loc, "blocks nested more than %d deep", MAX_CALL_DEPTH);
    return poison();
  }
  if (E->ncalls >= MAX_CALLS) {
    diag_error(E->d, loc, "the model makes more than %d block calls",
               MAX_CALLS);
    E->too_big = 1;
    return poison();
  }
  E->call_locs[E->depth] = loc;
  int nparams = bk->list.n;
  Value *vals = arena_alloc(E->a, sizeof(Value) * (size_t)(nparams + 1));
  int *given = arena_alloc(E->a, sizeof(int) * (size_t)(nparams + 1));
  Loc *at = arena_alloc(E->a, sizeof(Loc) * (size_t)(nparams + 1));
  int ok = 1, npos = 0, seen_kw = 0;
  for (int i = 0; i < args->n; i++) {
    const Arg *a = &args->v[i];
    int slot = -1;
    if (!a->name) {
      if (seen_kw) {
        diag_error(E->d, a->loc, "positional argument after keyword arguments");
        ok = 0;
        continue;
      }
      if (npos >= nparams) {
        diag_error(E->d, a->loc,
                   "too many arguments to block '%s' (it takes %d%s)", bk->name,
                   nparams,
                   i == 0 || args->v[0].loc.col == loc.col
                       ? ", counting the piped input"
                       : "");
        diag_note(E->d, bk->loc, "'%s' defined here", bk->name);
        ok = 0;
        continue;
      }
      slot = npos++;
    } else {
      seen_kw = 1;
      for (int j = 0; j < nparams; j++)
        if (strcmp(bk->list.v[j]->name, a->name) == 0)
          slot = j;
      if (slot < 0) {
        diag_error(E->d, a->loc, "block '%s' has no parameter '%s'", bk->name,
                   a->name);
        diag_note(E->d, bk->loc, "'%s' defined here", bk->name);
        ok = 0;
        continue;
      }
      if (given[slot]) {
        diag_error(E->d, a->loc, "parameter '%s' of block '%s' is given twice",
                   a->name, bk->name);
        diag_note(E->d, bk->loc, "'%s' defined here", bk->name);
        ok = 0;
        continue;
      }
    }
    given[slot] = 1;
    vals[slot] = a->v;
    at[slot] = a->loc;
  }
  for (int j = 0; j < nparams && ok; j++)
    if (!given[j] && !bk->list.v[j]->a) {
      diag_error(E->d, loc, "block '%s' needs argument '%s'", bk->name,
                 bk->list.v[j]->name);
      diag_note(E->d, bk->list.v[j]->loc, "parameter '%s' declared here",
                bk->list.v[j]->name);
      ok = 0;
    }
  if (!ok)
    return poison();
  /* Enter the call: defaults are evaluated inside it. */
  Env env = {0};
  int id = ++E->ncalls;
  E->call_ids[E->depth] = id;
  E->arg_locs[E->depth] = at;
  E->calls[E->depth++] = bk;
  E->context_top = E->depth;
  for (int j = 0; j < nparams; j++) {
    const Ast *prm = bk->list.v[j];
    Value v = given[j] ? vals[j] : eval(E, &env, prm->a);
    if (v.k != V_POISON && v.k != V_NONE) {
      v.param = prm;
      v.call = id;
    }
    bind(E, &env, prm->name, v);
  }
  const char *saved_scope = E->scope;
  if (label)
    E->scope = join(E, E->scope, label);
  Scope *saved_cluster = push_cluster(E, bk->name, loc);
  Frame f = {&env, bk, {0}, 0};
  exec_stmts(E, &f, &bk->list2);
  E->scope = saved_scope;
  E->cluster = saved_cluster;
  E->context_top = --E->depth;
  if (E->too_big)
    return poison(); /* stopped by a limit, reported already */
  if (!f.returned) {
    diag_error(E->d, loc, "block '%s' returns no value", bk->name);
    diag_note(E->d, bk->loc, "'%s' has no 'return'", bk->name);
    return poison();
  }
  if (f.ret.param && arg_frame(E, f.ret) < 0)
    f.ret.param = NULL; /* no longer an argument of a running call */
  return f.ret;
}

static Value apply_seq(Elab *E, Env *env, const Ast *seq, const Value *in,
                       const char *label, Loc loc) {
  if (!in) {
    diag_error(E->d, seq->loc,
               "a seq needs an input: write 'x -> seq { ... }'");
    return poison();
  }
  const char *saved_scope = E->scope;
  if (label)
    E->scope = join(E, E->scope, label);
  Scope *saved_cluster = push_cluster(E, "seq", loc);
  Value cur = *in;
  for (int i = 0; i < seq->list.n && cur.k != V_POISON; i++) {
    const Ast *st = seq->list.v[i];
    const char *l =
        st->a ? elab_label(E, env, st->a) : arena_printf(E->a, "%d", i);
    cur = l ? apply(E, env, st->b, &cur, l, st->a ? st->a->loc : st->loc)
            : poison();
  }
  E->scope = saved_scope;
  E->cluster = saved_cluster;
  return cur;
}

/* Applies a call, a bare name or a seq to an optional piped input. */
static Value apply(Elab *E, Env *env, const Ast *target, const Value *in,
                   const char *label, Loc loc) {
  if (E->too_big)
    return poison();
  if (target->kind == A_SEQ)
    return apply_seq(E, env, target, in, label, loc);
  ArgVec args = {0};
  eval_args(E, env, target, in, &args);
  const char *name = target->name;
  int handled;
  Value v = builtin(E, name, &args, target->loc, &handled);
  if (handled) {
    if (label)
      diag_error(E->d, loc, "'%s' is not a layer and cannot be labelled", name);
    return v;
  }
  const Ast *bk = program_block(E->p, name);
  if (bk)
    return call_block(E, bk, &args, label, target->loc);
  OpKind op = op_lookup(name);
  if (op == OP_NONE) {
    Value *var = lookup(env, name);
    if (var)
      diag_error(E->d, target->loc, "'%s' is %s, not an operator or block",
                 name, value_kind_name(var->k));
    else
      diag_error(E->d, target->loc, "unknown operator or block '%s'%s", name,
                 did_you_mean(E, suggest(E, NULL, name, 0, 1)));
    return poison();
  }
  /* Leading tensor arguments are the operator's inputs. */
  int nin = 0;
  while (nin < args.n && !args.v[nin].name &&
         (args.v[nin].v.k == V_TENSOR || args.v[nin].v.k == V_POISON) &&
         (op_info[op].inputs < 0 || nin < op_info[op].inputs))
    nin++;
  Value *ins = arena_alloc(E->a, sizeof(Value) * (size_t)(nin + 1));
  for (int i = 0; i < nin; i++)
    ins[i] = args.v[i].v;
  int want = op_info[op].inputs < 0 ? 1 : op_info[op].inputs;
  if (nin < want) {
    const Arg *bad = nin < args.n && !args.v[nin].name ? &args.v[nin] : NULL;
    if (bad)
      misuse(E, bad->v, bad->loc,
             arena_printf(E->a, "'%s' needs a tensor here, not %s", name,
                          value_kind_name(bad->v.k)));
    else if (want == 1)
      diag_error(E->d, target->loc,
                 "'%s' needs an input tensor: write 'x -> %s' or '%s(x, ...)'",
                 name, name, name);
    else
      diag_error(E->d, target->loc, "'%s' needs %d input tensors", name, want);
    return poison();
  }
  if (op == OP_MSE && ins[1].k == V_TENSOR && ins[1].t->op != OP_INPUT) {
    diag_error(E->d, args.v[1].loc,
               "mse compares against a declared input, but its target comes "
               "from '%s'",
               ins[1].t->name);
    diag_note(E->d, ins[1].t->loc, "'%s' is computed here", ins[1].t->name);
    return poison();
  }
  return make_op(E, op, ins, nin, args.v + nin, args.n - nin, label, loc,
                 target->loc);
}

/* The integer labels a cross_entropy compares against: an implicit input
 * named "labels", a class per sample or per pixel. */
static Node *labels_input(Elab *E, const Node *logits, Loc loc) {
  Shape want = {0, {0}};
  if (logits->shape.rank == 3)
    want = (Shape){2, {logits->shape.d[1], logits->shape.d[2]}};
  for (int i = 0; i < E->g->inputs.n; i++) {
    Node *n = E->g->inputs.v[i];
    if (strcmp(n->name, "labels") != 0)
      continue;
    if (n->dtype != DT_I64) {
      diag_error(E->d, n->loc,
                 "input 'labels' clashes with the class labels that "
                 "cross_entropy reads; rename it");
      diag_note(E->d, loc, "cross_entropy used here");
      return NULL;
    }
    if (n->shape.rank != want.rank ||
        memcmp(n->shape.d, want.d, sizeof want.d)) {
      diag_error(E->d, loc,
                 "cross_entropy needs labels of shape %s, but an earlier "
                 "loss uses %s",
                 shape_str(E->a, want), shape_str(E->a, n->shape));
      return NULL;
    }
    return n;
  }
  Node *n = graph_add_node(E->g, OP_INPUT, loc, "labels");
  n->dtype = DT_I64;
  n->shape = want;
  n->scope = E->cluster;
  vec_push(E->a, E->g->inputs, n);
  return n;
}

static uint64_t name_hash(const char *s) {
  uint64_t h = 1469598103934665603u; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211u;
  return h;
}

/* The slot of `name` in the set: the parameter, or the empty slot where it
 * would go. */
static Param **param_slot(const ParamSet *set, const char *name) {
  size_t mask = (size_t)set->cap - 1, i = (size_t)name_hash(name) & mask;
  while (set->slot[i] && strcmp(set->slot[i]->name, name) != 0)
    i = (i + 1) & mask;
  return &set->slot[i];
}

static void param_set_add(Elab *E, ParamSet *set, Param *p) {
  if (2 * (set->n + 1) > set->cap) {
    ParamSet bigger = {0, set->cap ? 2 * set->cap : 64, 0};
    bigger.slot = arena_alloc(E->a, sizeof(Param *) * (size_t)bigger.cap);
    for (int i = 0; i < set->cap; i++)
      if (set->slot[i])
        *param_slot(&bigger, set->slot[i]->name) = set->slot[i];
    bigger.n = set->n;
    *set = bigger;
  }
  *param_slot(set, p->name) = p;
  set->n++;
}

static void register_params(Elab *E, Node *n) {
  for (int i = 0; i < n->params.n; i++) {
    Param *p = n->params.v[i];
    if (p->name[0] == '_' && p->name[1] == '_') {
      diag_error(E->d, n->label_loc,
                 "parameter name '%s' starts with '__', which cnnc reserves "
                 "for its own tensors",
                 p->name);
      return;
    }
    if (strlen(p->name) > MAX_PARAM_NAME) {
      diag_error(E->d, n->label_loc,
                 "parameter name '%.40s...' is longer than %d bytes", p->name,
                 MAX_PARAM_NAME);
      return;
    }
    const Param *q = E->names.cap ? *param_slot(&E->names, p->name) : NULL;
    if (q) {
      Loc at = n->label_loc;
      for (int k = 0; k < E->dup_reported.n; k++)
        if (memcmp(&E->dup_reported.v[k], &at, sizeof at) == 0)
          return; /* a loop repeating the same mistake */
      vec_push(E->a, E->dup_reported, at);
      diag_error(E->d, at, "redefinition of parameter '%s'", p->name);
      if (memcmp(&q->owner->label_loc, &at, sizeof at) == 0)
        diag_note(E->d, at,
                  "this line defined it already when it ran before (in a "
                  "loop or an earlier call); give each repetition its own "
                  "label, like '[i]:' or \"name{i}\":");
      else
        diag_note(E->d, q->owner->label_loc, "'%s' first defined here",
                  q->name);
      return;
    }
    param_set_add(E, &E->names, p);
    p->index = E->g->params.n;
    vec_push(E->a, E->g->params, p);
  }
}

static Value make_op(Elab *E, OpKind op, const Value *in, int nin,
                     const Arg *args, int nargs, const char *label,
                     Loc label_loc, Loc loc) {
  Attrs at = {0};
  const char *name = label ? join(E, E->scope, label) : auto_name(E, op);
  int ok = op_bind(E->d, op, name, args, nargs, loc, &at, blame_arg, E);
  for (int i = 0; i < nin; i++)
    if (in[i].k != V_TENSOR)
      ok = 0;
  if (!ok)
    return poison();
  if (E->g->nodes.n >= MAX_NODES) {
    diag_error(E->d, loc, "the model has more than %d layers", MAX_NODES);
    E->too_big = 1;
    return poison();
  }
  Node *labels = NULL;
  if (op == OP_CROSS_ENTROPY && !(labels = labels_input(E, in[0].t, loc)))
    return poison();
  Node *n = graph_add_node(E->g, op, loc, name);
  n->label_loc = label ? label_loc : loc;
  n->at = at;
  n->scope = E->cluster;
  for (int i = 0; i < nin; i++)
    graph_add_input(E->g, n, in[i].t);
  if (labels)
    graph_add_input(E->g, n, labels);
  if (!shape_infer(E->d, E->g, n))
    return poison();
  register_params(E, n);
  return vtensor(n);
}

/* --- statements ---------------------------------------------------------- */

static int in_model_only(Elab *E, Frame *f, const Ast *s, const char *what) {
  if (!f->block)
    return 1;
  diag_error(E->d, s->loc, "'%s' belongs in a model, not in block '%s'", what,
             f->block->name);
  return 0;
}

static void exec_input(Elab *E, Frame *f, const Ast *s) {
  if (!in_model_only(E, f, s, "input"))
    return;
  for (int i = 0; i < E->g->inputs.n; i++)
    if (strcmp(E->g->inputs.v[i]->name, s->name) == 0) {
      diag_error(E->d, s->b->loc, "input '%s' declared twice", s->name);
      diag_note(E->d, E->g->inputs.v[i]->loc, "first declared here");
      return;
    }
  Shape sh = {0, {0}};
  int ok = 1;
  if (s->list.n != 1 && s->list.n != 3) {
    diag_error(E->d, s->b->loc,
               "input '%s' has %d dimensions; write [C, H, W] or [F] (the "
               "batch is not written)",
               s->name, s->list.n);
    ok = 0;
  }
  for (int i = 0; i < s->list.n && i < 3; i++) {
    Value v = eval(E, f->env, s->list.v[i]);
    if (v.k == V_POISON) {
      ok = 0;
    } else if (v.k != V_INT || v.i < 1 || v.i > INT32_MAX) {
      diag_error(E->d, s->list.v[i]->loc,
                 "a dimension must be an integer from 1 to 2^31-1, not %s",
                 v.k == V_INT ? arena_printf(E->a, "%" PRId64, v.i)
                              : value_kind_name(v.k));
      ok = 0;
    } else {
      sh.d[sh.rank++] = v.i;
    }
  }
  if (!ok) {
    bind(E, f->env, s->name, poison());
    return;
  }
  Node *n = graph_add_node(E->g, OP_INPUT, s->b->loc, s->name);
  n->label_loc = n->loc;
  n->shape = sh;
  n->scope = E->cluster;
  vec_push(E->a, E->g->inputs, n);
  bind(E, f->env, s->name, shape_infer(E->d, E->g, n) ? vtensor(n) : poison());
}

static void exec_output(Elab *E, Frame *f, const Ast *s) {
  if (!in_model_only(E, f, s, "output"))
    return;
  Value v;
  if (s->a) {
    v = eval(E, f->env, s->a);
    bind(E, f->env, s->name, v);
  } else {
    Value *p = lookup(f->env, s->name);
    if (!p) {
      diag_error(E->d, s->b->loc, "'%s' is not defined", s->name);
      return;
    }
    v = *p;
  }
  if (v.k == V_POISON)
    return;
  if (v.k != V_TENSOR) {
    diag_error(E->d, s->b->loc, "output '%s' must be a tensor, not %s", s->name,
               value_kind_name(v.k));
    return;
  }
  for (int i = 0; i < E->g->outputs.n; i++)
    if (strcmp(E->g->outputs.v[i].name, s->name) == 0) {
      diag_error(E->d, s->b->loc, "output '%s' declared twice", s->name);
      diag_note(E->d, E->g->outputs.v[i].loc, "first declared here");
      return;
    }
  Output o = {s->name, v.t, s->b->loc};
  vec_push(E->a, E->g->outputs, o);
}

static void exec_loss(Elab *E, Frame *f, const Ast *s) {
  if (!in_model_only(E, f, s, "loss"))
    return;
  Value v = eval(E, f->env, s->a);
  if (v.k == V_POISON)
    return;
  if (v.k != V_TENSOR || !(op_info[v.t->op].flags & OPF_LOSS)) {
    diag_error(E->d, s->a->loc,
               "the loss must be a loss operator (cross_entropy or mse), not "
               "%s",
               v.k == V_TENSOR ? arena_printf(E->a, "the output of '%s'",
                                              op_info[v.t->op].name)
                               : value_kind_name(v.k));
    return;
  }
  if (E->g->loss) {
    diag_error(E->d, s->loc, "a model has one loss");
    diag_note(E->d, E->loss_loc, "the loss was declared here");
    return;
  }
  E->g->loss = v.t;
  E->loss_loc = s->loc;
}

static void exec_freeze(Elab *E, Frame *f, const Ast *s) {
  for (int i = 0; i < s->list.n; i++) {
    const char *l = elab_label(E, f->env, s->list.v[i]);
    if (!l)
      continue;
    Freeze fr = {join(E, E->scope, l), s->list.v[i]->loc};
    vec_push(E->a, E->freezes, fr);
  }
}

static void exec_for(Elab *E, Frame *f, const Ast *s) {
  Value it = eval(E, f->env, s->a);
  if (it.k == V_POISON)
    return;
  int64_t count;
  if (it.k == V_RANGE)
    count = it.hi > it.i ? it.hi - it.i : 0;
  else if (it.k == V_LIST)
    count = it.n;
  else {
    misuse(E, it, s->a->loc,
           arena_printf(E->a, "'for' needs a range or a list, not %s",
                        value_kind_name(it.k)));
    return;
  }
  if (count > MAX_LOOP_STEPS - E->steps) {
    diag_error(E->d, s->a->loc,
               "this loop runs %" PRId64 " times; a model may run at most %d "
               "loop iterations",
               count, MAX_LOOP_STEPS);
    E->too_big = 1;
    return;
  }
  E->steps += count;
  for (int64_t k = 0; k < count && !f->returned && !E->too_big; k++) {
    bind(E, f->env, s->name, it.k == V_RANGE ? vint(it.i + k) : it.items[k]);
    exec_stmts(E, f, &s->list);
  }
}

static void exec_if(Elab *E, Frame *f, const Ast *s) {
  Value c = eval(E, f->env, s->a);
  if (c.k == V_POISON)
    return;
  if (c.k != V_BOOL) {
    misuse(E, c, s->a->loc,
           arena_printf(E->a, "'if' needs a boolean condition, not %s",
                        value_kind_name(c.k)));
    return;
  }
  exec_stmts(E, f, c.i ? &s->list : &s->list2);
}

static void exec_stmts(Elab *E, Frame *f, const AstList *stmts) {
  for (int i = 0; i < stmts->n && !f->returned && !E->too_big; i++) {
    const Ast *s = stmts->v[i];
    switch (s->kind) {
    case A_BIND: bind(E, f->env, s->name, eval(E, f->env, s->a)); break;
    case A_RETURN:
      if (!f->block) {
        diag_error(E->d, s->loc, "'return' outside a block");
        break;
      }
      f->ret = eval(E, f->env, s->a);
      f->returned = 1;
      break;
    case A_INPUT: exec_input(E, f, s); break;
    case A_OUTPUT: exec_output(E, f, s); break;
    case A_LOSS: exec_loss(E, f, s); break;
    case A_FREEZE: exec_freeze(E, f, s); break;
    case A_FOR: exec_for(E, f, s); break;
    case A_IF: exec_if(E, f, s); break;
    case A_TRAIN:
      if (in_model_only(E, f, s, "train"))
        elab_train(E, f->env, s);
      break;
    default:
      diag_internal(E->d, "unexpected statement kind %d", (int)s->kind);
      break;
    }
  }
}

/* --- the model ----------------------------------------------------------- */

static void apply_freezes(Elab *E) {
  for (int i = 0; i < E->freezes.n; i++) {
    const Freeze *fr = &E->freezes.v[i];
    size_t len = strlen(fr->label);
    int hits = 0;
    for (int j = 0; j < E->g->params.n; j++) {
      Param *p = E->g->params.v[j];
      if (strncmp(p->name, fr->label, len) == 0 &&
          (p->name[len] == '.' || p->name[len] == 0)) {
        p->frozen = 1;
        hits++;
      }
    }
    if (!hits)
      diag_error(E->d, fr->loc, "freeze '%s' matches no parameter", fr->label);
  }
  /* A layer is frozen when all its parameters are: only then does a batch
   * norm switch to its running statistics (freezing b.weight alone leaves
   * b normalizing with batch statistics while b.bias trains). */
  for (int i = 0; i < E->g->nodes.n; i++) {
    Node *n = E->g->nodes.v[i];
    int params = 0, frozen = 0;
    for (int j = 0; j < n->params.n; j++)
      if (n->params.v[j]->kind == PK_PARAM) {
        params++;
        frozen += n->params.v[j]->frozen;
      }
    n->frozen = params > 0 && frozen == params;
  }
}

Graph *elaborate(Diag *d, Arena *a, const Sources *p, const char *model) {
  const Ast *m = NULL;
  if (model) {
    m = program_model(p, model);
    if (!m) {
      diag_error(d, (Loc){p->main->file, 0, 0}, "no model named '%s'", model);
      return NULL;
    }
  } else {
    int count = 0;
    const Ast *second = NULL;
    for (int i = 0; i < p->main->items.n; i++)
      if (p->main->items.v[i]->kind == A_MODEL) {
        if (count++ == 0)
          m = p->main->items.v[i];
        else if (!second)
          second = p->main->items.v[i];
      }
    if (count == 0) {
      diag_error(d, (Loc){0, 0, 0}, "%s: no model to check (the file has %s)",
                 p->main->path, p->blocks.n ? "only blocks" : "no models");
      return NULL;
    }
    if (count > 1) {
      diag_error(d, second->loc,
                 "the file defines several models ('%s', '%s'%s); choose one "
                 "with --model NAME",
                 m->name, second->name, count > 2 ? ", ..." : "");
      diag_note(d, m->loc, "model '%s' is defined here", m->name);
      return NULL;
    }
  }
  Elab E = {0};
  E.d = d;
  E.a = a;
  E.p = p;
  E.g = graph_new(a, m->name, m->loc);
  E.scope = "";
  d->context = call_context;
  d->context_data = &E;
  Env env = {0};
  Frame f = {&env, NULL, {0}, 0};
  push_cluster(&E, m->name, m->loc);
  exec_stmts(&E, &f, &m->list2);
  d->context = NULL;
  diag_flush(d);
  apply_freezes(&E);
  if (d->errors == 0 && E.g->inputs.n == 0)
    diag_error(d, m->loc,
               "model '%s' has no input; declare one with 'input x[C, H, W]'",
               m->name);
  else if (d->errors == 0 && E.g->outputs.n == 0)
    diag_error(d, m->loc,
               "model '%s' has no output; mark one with 'output y = ...'",
               m->name);
  return E.g;
}

/* --- the train section --------------------------------------------------- */

typedef struct TrainFn {
  const char *key, *name, *sig;
} TrainFn;

static const TrainFn train_fns[] = {
    {"optimizer", "sgd", "lr:f momentum:f=0 nesterov:b=false weight_decay:f=0"},
    {"optimizer", "adam",
     "lr:f=0.001 beta1:f=0.9 beta2:f=0.999 eps:f=1e-8 weight_decay:f=0"},
    {"schedule", "constant", ""},
    {"schedule", "step", "every:i gamma:f=0.1"},
    {"schedule", "plateau", "factor:f=0.1 patience:i=2"},
    {"schedule", "cosine", ""},
    {"init", "default", ""},
    {"init", "xavier", ""},
    {"init", "he", ""},
};

static int train_range(Elab *E, Loc loc, const char *what, double v, double lo,
                       double hi, int lo_open, int hi_open) {
  if ((lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi))
    return 1;
  diag_error(E->d, loc, "%s must be in %c%g, %g%c, got %g", what,
             lo_open ? '(' : '[', lo, hi, hi_open ? ')' : ']', v);
  return 0;
}

static void train_call(Elab *E, Env *env, const Ast *s) {
  const Ast *c = s->a;
  const TrainFn *fn = NULL;
  int key_known = 0;
  for (size_t i = 0; i < sizeof train_fns / sizeof *train_fns; i++)
    if (strcmp(train_fns[i].key, s->name) == 0) {
      key_known = 1;
      if (strcmp(train_fns[i].name, c->name) == 0)
        fn = &train_fns[i];
    }
  if (!key_known) {
    diag_error(E->d, s->loc,
               "unknown training setting '%s' (settings: batch, epochs, seed, "
               "optimizer, schedule, init)",
               s->name);
    return;
  }
  if (!fn) {
    char list[160] = "";
    for (size_t i = 0; i < sizeof train_fns / sizeof *train_fns; i++)
      if (strcmp(train_fns[i].key, s->name) == 0) {
        strncat(list, list[0] ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, train_fns[i].name, sizeof list - strlen(list) - 1);
      }
    diag_error(E->d, c->loc, "unknown %s '%s' (choose one of: %s)", s->name,
               c->name, list);
    return;
  }
  ArgVec args = {0};
  eval_args(E, env, c, NULL, &args);
  Value v[SIG_MAX];
  Loc at[SIG_MAX];
  memset(v, 0, sizeof v);
  if (!sig_bind(E->d, fn->name, fn->sig, args.v, args.n, c->loc, v, at, NULL,
                NULL))
    return;
  TrainCfg *t = &E->g->train;
  if (strcmp(fn->name, "sgd") == 0) {
    t->opt = OPT_SGD;
    t->lr = v[0].f, t->momentum = v[1].f, t->nesterov = (int)v[2].i;
    t->weight_decay = v[3].f;
    train_range(E, at[0], "the learning rate", t->lr, 0, 1e9, 1, 0);
    train_range(E, at[1], "momentum", t->momentum, 0, 1, 0, 1);
    train_range(E, at[3], "weight_decay", t->weight_decay, 0, 1e9, 0, 0);
    if (t->nesterov && t->momentum <= 0)
      diag_error(E->d, at[2], "nesterov needs a momentum above 0");
  } else if (strcmp(fn->name, "adam") == 0) {
    t->opt = OPT_ADAM;
    t->lr = v[0].f, t->beta1 = v[1].f, t->beta2 = v[2].f, t->eps = v[3].f;
    t->weight_decay = v[4].f;
    train_range(E, at[0], "the learning rate", t->lr, 0, 1e9, 1, 0);
    train_range(E, at[1], "beta1", t->beta1, 0, 1, 0, 1);
    train_range(E, at[2], "beta2", t->beta2, 0, 1, 0, 1);
    train_range(E, at[3], "eps", t->eps, 0, 1, 1, 0);
    train_range(E, at[4], "weight_decay", t->weight_decay, 0, 1e9, 0, 0);
  } else if (strcmp(fn->name, "step") == 0) {
    t->sched = SCHED_STEP;
    t->every = v[0].i, t->gamma = v[1].f;
    train_range(E, at[0], "every", (double)t->every, 1, 1e18, 0, 0);
    train_range(E, at[1], "gamma", t->gamma, 0, 1, 1, 0);
  } else if (strcmp(fn->name, "plateau") == 0) {
    t->sched = SCHED_PLATEAU;
    t->factor = v[0].f, t->patience = v[1].i;
    train_range(E, at[0], "factor", t->factor, 0, 1, 1, 1);
    train_range(E, at[1], "patience", (double)t->patience, 0, 1e18, 0, 0);
  } else if (strcmp(fn->name, "constant") == 0) {
    t->sched = SCHED_CONSTANT;
  } else if (strcmp(fn->name, "cosine") == 0) {
    t->sched = SCHED_COSINE;
  } else {
    t->init = strcmp(fn->name, "xavier") == 0 ? INIT_XAVIER
              : strcmp(fn->name, "he") == 0   ? INIT_HE
                                              : INIT_DEFAULT;
  }
}

static void train_set(Elab *E, Env *env, const Ast *s) {
  int64_t *slot = strcmp(s->name, "batch") == 0    ? &E->g->train.batch
                  : strcmp(s->name, "epochs") == 0 ? &E->g->train.epochs
                  : strcmp(s->name, "seed") == 0   ? &E->g->train.seed
                                                   : NULL;
  if (!slot) {
    if (strcmp(s->name, "optimizer") == 0 || strcmp(s->name, "schedule") == 0 ||
        strcmp(s->name, "init") == 0)
      diag_error(E->d, s->loc, "write '%s NAME(...)' without '='", s->name);
    else
      diag_error(E->d, s->loc,
                 "unknown training setting '%s' (settings: batch, epochs, "
                 "seed, optimizer, schedule, init)",
                 s->name);
    return;
  }
  Value v = eval(E, env, s->a);
  if (v.k == V_POISON)
    return;
  int64_t min = slot == &E->g->train.seed ? 0 : 1;
  if (v.k != V_INT || v.i < min) {
    diag_error(E->d, s->a->loc, "%s must be an integer of at least %lld",
               s->name, (long long)min);
    return;
  }
  if (slot == &E->g->train.batch && v.i > MAX_BATCH) {
    diag_error(E->d, s->a->loc, "batch must be at most %d, not %" PRId64,
               MAX_BATCH, v.i);
    return;
  }
  *slot = v.i;
}

static void elab_train(Elab *E, Env *env, const Ast *s) {
  if (E->train_loc.file) {
    diag_error(E->d, s->loc, "a model has one train section");
    diag_note(E->d, E->train_loc, "the first one is here");
    return;
  }
  E->train_loc = s->loc;
  for (int i = 0; i < s->list.n; i++) {
    const Ast *it = s->list.v[i];
    for (int j = 0; j < i; j++)
      if (strcmp(s->list.v[j]->name, it->name) == 0) {
        diag_error(E->d, it->loc, "'%s' is set twice", it->name);
        diag_note(E->d, s->list.v[j]->loc, "first set here");
      }
    if (it->kind == A_TRAIN_SET)
      train_set(E, env, it);
    else
      train_call(E, env, it);
  }
}
