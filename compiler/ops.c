/* The operator table and argument binding. Each attribute has one field
 * in Attrs; the table below maps a signature name and type to it, so a new
 * operator usually needs only its line in ops.def. */
#include "ops.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const OpInfo op_info[OP_COUNT] = {
#define X(e, name, inputs, sig, flags) {name, inputs, sig, flags},
#include "ops.def"
#undef X
};

OpKind op_lookup(const char *name) {
  for (int i = 0; i < OP_COUNT; i++)
    if (i != OP_INPUT && !(op_info[i].flags & OPF_INTERNAL) &&
        strcmp(op_info[i].name, name) == 0)
      return (OpKind)i;
  return OP_NONE;
}

const char *value_kind_name(VKind k) {
  switch (k) {
  case V_NONE: return "nothing";
  case V_POISON: return "an erroneous value";
  case V_INT: return "an integer";
  case V_FLOAT: return "a float";
  case V_BOOL: return "a boolean";
  case V_STR: return "a string";
  case V_LIST: return "a list";
  case V_RANGE: return "a range";
  case V_TENSOR: return "a tensor";
  }
  return "?";
}

typedef struct SigArg {
  char name[32];
  char type;
  char def[32]; /* empty: required */
} SigArg;

static int sig_parse(const char *sig, SigArg *out) {
  int n = 0;
  const char *p = sig;
  while (*p && n < SIG_MAX) {
    while (*p == ' ')
      p++;
    if (!*p)
      break;
    SigArg *a = &out[n++];
    memset(a, 0, sizeof *a);
    size_t k = 0;
    while (*p && *p != ':' && k < sizeof a->name - 1)
      a->name[k++] = *p++;
    if (*p == ':')
      p++;
    a->type = *p ? *p++ : 'i';
    if (*p == '=') {
      p++;
      k = 0;
      while (*p && *p != ' ' && k < sizeof a->def - 1)
        a->def[k++] = *p++;
    }
    while (*p && *p != ' ')
      p++;
  }
  return n;
}

static const char *type_name(char t) {
  switch (t) {
  case 'i': return "an integer";
  case 'p': return "an integer or a pair [h, w]";
  case 'P': return "an integer, a pair [h, w] or \"same\"";
  case 'f': return "a number";
  case 'b': return "true or false";
  case 's': return "a string";
  default: return "?";
  }
}

/* Checks v against type t and normalizes it: pairs become two-element
 * lists, integers given for numbers become floats. */
static int conform(char t, Value *v) {
  switch (t) {
  case 'i': return v->k == V_INT;
  case 'P':
    if (v->k == V_STR)
      return strcmp(v->s, "same") == 0;
    /* fallthrough */
  case 'p':
    if (v->k == V_INT)
      return 1;
    return v->k == V_LIST && v->n == 2 && v->items[0].k == V_INT &&
           v->items[1].k == V_INT;
  case 'f':
    if (v->k == V_INT) {
      v->k = V_FLOAT;
      v->f = (double)v->i;
    }
    return v->k == V_FLOAT;
  case 'b': return v->k == V_BOOL;
  case 's': return v->k == V_STR;
  default: return 0;
  }
}

static Value parse_default(Arena *ar, const SigArg *s, const Value *slots,
                           const SigArg *all, int n) {
  Value v = {0};
  const char *d = s->def;
  for (int i = 0; i < n; i++)
    if (&all[i] != s && strcmp(all[i].name, d) == 0)
      return slots[i];
  if (strcmp(d, "true") == 0 || strcmp(d, "false") == 0) {
    v.k = V_BOOL;
    v.i = d[0] == 't';
  } else if (s->type == 's') {
    v.k = V_STR;
    v.s = arena_strdup(ar, d);
  } else if (s->type == 'f' || strpbrk(d, ".e")) {
    v.k = V_FLOAT;
    v.f = strtod(d, NULL);
  } else {
    v.k = V_INT;
    v.i = strtoll(d, NULL, 10);
  }
  return v;
}

int sig_bind(Diag *d, const char *what, const char *sig, const Arg *args,
             int nargs, Loc call, Value *slots, Loc *locs, ArgBlame blame,
             void *ctx) {
  SigArg sa[SIG_MAX];
  int n = sig_parse(sig, sa);
  int given[SIG_MAX] = {0};
  int ok = 1, npos = 0, seen_kw = 0;
  for (int i = 0; i < nargs; i++) {
    const Arg *a = &args[i];
    int slot = -1;
    if (!a->name) {
      if (seen_kw) {
        diag_error(d, a->loc, "positional argument after keyword arguments");
        ok = 0;
        continue;
      }
      if (npos >= n) {
        if (n == 0)
          diag_error(d, a->loc, "'%s' takes no arguments", what);
        else
          diag_error(d, a->loc,
                     "too many arguments to '%s' (it takes at most %d)", what,
                     n);
        ok = 0;
        continue;
      }
      slot = npos++;
    } else {
      seen_kw = 1;
      for (int j = 0; j < n; j++)
        if (strcmp(sa[j].name, a->name) == 0)
          slot = j;
      if (slot < 0) {
        char list[256] = "";
        for (int j = 0; j < n; j++) {
          strncat(list, j ? ", " : "", sizeof list - strlen(list) - 1);
          strncat(list, sa[j].name, sizeof list - strlen(list) - 1);
        }
        if (n)
          diag_error(d, a->loc, "'%s' has no argument '%s' (it takes: %s)",
                     what, a->name, list);
        else
          diag_error(d, a->loc, "'%s' has no argument '%s'", what, a->name);
        ok = 0;
        continue;
      }
      if (given[slot]) {
        diag_error(d, a->loc, "argument '%s' of '%s' is given twice", a->name,
                   what);
        ok = 0;
        continue;
      }
    }
    given[slot] = 1;
    slots[slot] = a->v;
    locs[slot] = a->loc;
    if (a->v.k == V_POISON) {
      ok = 0;
      continue;
    }
    if (!conform(sa[slot].type, &slots[slot])) {
      char msg[256];
      snprintf(msg, sizeof msg, "argument '%s' of '%s' must be %s, not %s",
               sa[slot].name, what, type_name(sa[slot].type),
               value_kind_name(a->v.k));
      if (!blame || !blame(ctx, a, a->loc, msg))
        diag_error(d, a->loc, "%s", msg);
      ok = 0;
    }
  }
  for (int j = 0; j < n && ok; j++) {
    if (given[j])
      continue;
    if (!sa[j].def[0]) {
      diag_error(d, call, "'%s' needs argument '%s'", what, sa[j].name);
      ok = 0;
      continue;
    }
    slots[j] = parse_default(d->arena, &sa[j], slots, sa, n);
    locs[j] = call;
  }
  return ok;
}

/* Where each signature name and type lands in Attrs, and the smallest
 * value it accepts (integers only). */
typedef struct Field {
  const char *name;
  char type;
  size_t off;
  int64_t min;
} Field;

#define F(n, t, f, m)                                                          \
  { n, t, offsetof(Attrs, f), m }
static const Field fields[] = {
    F("out", 'i', out, 1),
    F("groups", 'i', groups, 1),
    F("g", 'i', g, 1),
    F("size", 'i', size, 1),
    F("scale", 'i', scale, 1),
    F("k", 'p', k, 1),
    F("s", 'p', s, 1),
    F("p", 'p', p, 0),
    F("p", 'P', p, 0),
    F("d", 'p', d, 1),
    F("output_padding", 'p', output_padding, 0),
    F("n", 'p', n, 1),
    F("bias", 'b', bias, 0),
    F("ceil", 'b', ceil, 0),
    F("a", 'f', a, 0),
    F("eps", 'f', eps, 0),
    F("momentum", 'f', momentum, 0),
    F("alpha", 'f', alpha, 0),
    F("beta", 'f', beta, 0),
    F("k", 'f', lrn_k, 0),
    F("p", 'f', prob, 0),
    F("mode", 's', mode, 0),
};
#undef F

static int check_float(Diag *d, const char *op, const char *name, double v,
                       Loc loc) {
  if (strcmp(name, "eps") == 0 && !(v > 0)) {
    diag_error(d, loc, "'%s': eps must be positive, got %g", op, v);
    return 0;
  }
  if (strcmp(name, "momentum") == 0 && !(v >= 0 && v <= 1)) {
    diag_error(d, loc, "'%s': momentum must be between 0 and 1, got %g", op, v);
    return 0;
  }
  if (strcmp(name, "p") == 0 && !(v >= 0 && v < 1)) {
    diag_error(d, loc, "'%s': p must be at least 0 and below 1, got %g", op, v);
    return 0;
  }
  return 1;
}

/* The place of the signature argument called `name` (the call's place for
 * a default). */
static Loc loc_of(const SigArg *sa, int n, const Loc *locs, const char *name,
                  Loc call) {
  for (int i = 0; i < n; i++)
    if (strcmp(sa[i].name, name) == 0)
      return locs[i];
  return call;
}

/* Rules between arguments, reported at the argument at fault. */
static int relations(Diag *d, OpKind op, const char *name, const Attrs *at,
                     const SigArg *sa, int n, const Loc *locs, Loc call) {
  const char *opname = op_info[op].name;
  for (int ax = 0; ax < 2; ax++) {
    if (op == OP_CONV && at->same && at->s[ax] != 1) {
      diag_error(d, loc_of(sa, n, locs, "p", call),
                 "%s '%s': p=\"same\" needs stride 1 (PyTorch's rule), but "
                 "the stride is %lld",
                 opname, name, (long long)at->s[ax]);
      return 0;
    }
    if ((op == OP_MAXPOOL || op == OP_AVGPOOL) && 2 * at->p[ax] > at->k[ax]) {
      diag_error(d, loc_of(sa, n, locs, "p", call),
                 "%s '%s': padding %lld is more than half the kernel %lld "
                 "(PyTorch's rule)",
                 opname, name, (long long)at->p[ax], (long long)at->k[ax]);
      return 0;
    }
    if (op == OP_DECONV && at->output_padding[ax] >= at->s[ax] &&
        at->output_padding[ax] >= at->d[ax]) {
      diag_error(d, loc_of(sa, n, locs, "output_padding", call),
                 "%s '%s': output_padding %lld must be smaller than the stride "
                 "or the dilation",
                 opname, name, (long long)at->output_padding[ax]);
      return 0;
    }
  }
  return 1;
}

int op_bind(Diag *d, OpKind op, const char *name, const Arg *args, int nargs,
            Loc call, Attrs *at, ArgBlame blame, void *ctx) {
  const OpInfo *info = &op_info[op];
  Value slots[SIG_MAX];
  Loc locs[SIG_MAX];
  memset(slots, 0, sizeof slots);
  if (!sig_bind(d, info->name, info->sig, args, nargs, call, slots, locs, blame,
                ctx))
    return 0;
  SigArg sa[SIG_MAX];
  int n = sig_parse(info->sig, sa);
  int ok = 1;
  for (int i = 0; i < n; i++) {
    const Field *f = NULL;
    for (size_t j = 0; j < sizeof fields / sizeof fields[0]; j++)
      if (fields[j].type == sa[i].type &&
          strcmp(fields[j].name, sa[i].name) == 0)
        f = &fields[j];
    if (!f) {
      diag_internal(d, "no attribute field for '%s' of '%s'", sa[i].name,
                    info->name);
      return 0;
    }
    char *base = (char *)at + f->off;
    Value *v = &slots[i];
    switch (f->type) {
    case 'i':
    case 'b':
      if (f->type == 'i' && (v->i < f->min || v->i > INT32_MAX)) {
        diag_error(d, locs[i], "'%s': %s must be from %lld to 2^31-1, got %lld",
                   info->name, f->name, (long long)f->min, (long long)v->i);
        ok = 0;
      }
      if (f->type == 'b')
        *(int *)base = (int)v->i;
      else
        *(int64_t *)base = v->i;
      break;
    case 'P':
    case 'p': {
      int64_t *pair = (int64_t *)base;
      if (v->k == V_STR) {
        at->same = 1;
        pair[0] = pair[1] = 0;
        break;
      }
      pair[0] = v->k == V_INT ? v->i : v->items[0].i;
      pair[1] = v->k == V_INT ? v->i : v->items[1].i;
      int bad = pair[0] < f->min || pair[0] > INT32_MAX   ? 0
                : pair[1] < f->min || pair[1] > INT32_MAX ? 1
                                                          : -1;
      if (bad >= 0) {
        diag_error(d, locs[i], "'%s': %s must be from %lld to 2^31-1, got %lld",
                   info->name, f->name, (long long)f->min,
                   (long long)pair[bad]);
        ok = 0;
      }
      break;
    }
    case 'f':
      *(double *)base = v->f;
      ok &= check_float(d, info->name, f->name, v->f, locs[i]);
      break;
    case 's': *(const char **)base = v->s; break;
    default: break;
    }
  }
  if (ok && at->mode && strcmp(at->mode, "nearest") != 0 &&
      strcmp(at->mode, "bilinear") != 0) {
    for (int i = 0; i < n; i++)
      if (strcmp(sa[i].name, "mode") == 0)
        diag_error(d, locs[i],
                   "'%s': mode must be \"nearest\" or \"bilinear\", not \"%s\"",
                   info->name, at->mode);
    ok = 0;
  }
  return ok && relations(d, op, name, at, sa, n, locs, call);
}

static const Field *field_of(const SigArg *sa) {
  for (size_t j = 0; j < sizeof fields / sizeof fields[0]; j++)
    if (fields[j].type == sa->type && strcmp(fields[j].name, sa->name) == 0)
      return &fields[j];
  return NULL;
}

void op_print_attrs(FILE *out, const Node *n) {
  SigArg sa[SIG_MAX];
  int count = sig_parse(op_info[n->op].sig, sa);
  const char *base = (const char *)&n->at;
  for (int i = 0; i < count; i++) {
    const Field *f = field_of(&sa[i]);
    if (!f)
      continue;
    const char *p = base + f->off;
    switch (f->type) {
    case 'i':
      fprintf(out, " %s=%lld", f->name, (long long)*(const int64_t *)p);
      break;
    case 'b':
      fprintf(out, " %s=%s", f->name, *(const int *)p ? "true" : "false");
      break;
    case 'p':
    case 'P': {
      const int64_t *v = (const int64_t *)p;
      fprintf(out, " %s=%lld,%lld", f->name, (long long)v[0], (long long)v[1]);
      break;
    }
    case 'f': fprintf(out, " %s=%.9g", f->name, *(const double *)p); break;
    case 's':
      fprintf(out, " %s=\"%s\"", f->name, *(const char *const *)p);
      break;
    default: break;
    }
  }
  if (n->op == OP_CONV || n->op == OP_MAXPOOL || n->op == OP_AVGPOOL)
    fprintf(out, " pad_end=%lld,%lld", (long long)n->at.pad_end[0],
            (long long)n->at.pad_end[1]);
  if (n->op == OP_CROP)
    fprintf(out, " offset=%lld,%lld", (long long)n->at.p[0],
            (long long)n->at.p[1]);
}
