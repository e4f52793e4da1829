/* Values of the language while a model is being elaborated: numbers,
 * booleans, strings, lists, ranges and tensors (graph nodes). */
#ifndef CNNC_VALUE_H
#define CNNC_VALUE_H

#include "graph.h"

typedef enum VKind {
  V_NONE,   /* the result of a block without return */
  V_POISON, /* an error was reported already: stay quiet about it */
  V_INT,
  V_FLOAT,
  V_BOOL,
  V_STR,
  V_LIST,
  V_RANGE, /* i .. hi, half-open */
  V_TENSOR,
} VKind;

typedef struct Value {
  VKind k;
  int64_t i, hi;
  double f;
  const char *s;
  struct Value *items;
  int n;
  Node *t;
  /* A value passed to a block keeps where it came from, so misuse inside
   * the block can be blamed on the call: the parameter, and the call. */
  const struct Ast *param;
  int call;
} Value;

/* An argument of a call: name is NULL for a positional one. */
typedef struct Arg {
  const char *name;
  Value v;
  Loc loc;
} Arg;

const char *value_kind_name(VKind k);

/* Lets the caller of an argument check take over reporting a misused
 * argument (msg says what is wrong); returns 1 if it did. */
typedef int (*ArgBlame)(void *ctx, const Arg *a, Loc at, const char *msg);

#endif
