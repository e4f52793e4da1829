/* The operator table (ops.def) and binding of call arguments to an
 * operator's signature. */
#ifndef CNNC_OPS_H
#define CNNC_OPS_H

#include <stdio.h>

#include "graph.h"
#include "value.h"

typedef struct OpInfo {
  const char *name;
  int inputs; /* tensors taken first; -1: one or more */
  const char *sig;
  int flags;
} OpInfo;

extern const OpInfo op_info[OP_COUNT];

OpKind op_lookup(const char *name);

enum { SIG_MAX = 12 };

/* Binds arguments to a signature ("name:type[=default] ..."), checking
 * types and filling defaults. slots[i] is the value of the i-th argument of
 * the signature, locs[i] where it was written (call for defaults). what
 * names the callee in messages. Returns 0 after reporting an error. */
int sig_bind(Diag *d, const char *what, const char *sig, const Arg *args,
             int nargs, Loc call, Value *slots, Loc *locs, ArgBlame blame,
             void *ctx);

/* Binds the non-tensor arguments of an operator call into attributes,
 * checking each value's range and the relations between them; name is
 * the layer's. Returns 0 after reporting an error. */
int op_bind(Diag *d, OpKind op, const char *name, const Arg *args, int nargs,
            Loc call, Attrs *at, ArgBlame blame, void *ctx);

/* Prints " name=value" for each attribute of n's operator, as the graph's
 * text form shows them (pairs as "h,w"). */
void op_print_attrs(FILE *out, const Node *n);

#endif
