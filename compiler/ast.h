/* The syntax tree of a .cnn file. Every node keeps the place that created
 * it, so any later phase can point the user at the right line. */
#ifndef CNNC_AST_H
#define CNNC_AST_H

#include <stdint.h>

#include "diag.h"

typedef enum AstKind {
  /* expressions */
  A_INT,   /* ival */
  A_FLOAT, /* fval */
  A_BOOL,  /* ival */
  A_STR,   /* list: parts, A_STRPART (text in name) or expressions */
  A_STRPART,
  A_NAME,  /* name */
  A_LIST,  /* list: elements */
  A_RANGE, /* a .. b */
  A_BINOP, /* a op b; op is a token code, loc is the operator's */
  A_UNOP,  /* op a */
  A_CALL,  /* name(list); keyword arguments are A_KWARG */
  A_KWARG, /* name = a */
  A_PIPE,  /* a -> b, b an A_STAGE */
  A_STAGE, /* a: label or NULL, b: A_CALL, A_NAME or A_SEQ */
  A_SEQ,   /* list: A_STAGEs */
  /* labels */
  A_LABEL_PATH, /* list: A_NAME and A_INT components */
  A_LABEL_EXPR, /* [a] */
  A_LABEL_STR,  /* a: A_STR */
  /* statements */
  A_INPUT,      /* name [list]; loc is the keyword's, b the name */
  A_OUTPUT,     /* name [= a]; loc is the keyword's, b the name */
  A_BIND,       /* name = a */
  A_RETURN,     /* a */
  A_FOR,        /* for name in a { list } */
  A_IF,         /* if a { list } else { list2 } */
  A_LOSS,       /* a */
  A_FREEZE,     /* list: labels */
  A_TRAIN,      /* list: A_TRAIN_SET and A_TRAIN_CALL */
  A_TRAIN_SET,  /* name = a */
  A_TRAIN_CALL, /* name a, a an A_CALL or A_NAME */
  /* top level */
  A_IMPORT, /* name: the path as written */
  A_BLOCK,  /* name (list: A_PARAM) { list2 } */
  A_PARAM,  /* name [= a] */
  A_MODEL,  /* name { list2 } */
} AstKind;

typedef struct Ast Ast;
VEC_TYPE(AstList, Ast *);

struct Ast {
  AstKind kind;
  Loc loc;
  int op;
  const char *name;
  int64_t ival;
  double fval;
  Ast *a, *b;
  AstList list, list2;
};

Ast *ast_new(Arena *ar, AstKind kind, Loc loc);
const char *ast_op_name(int op); /* spelling of an operator token */

/* One parsed file. */
typedef struct AstFile {
  int file; /* Diag source index */
  const char *path;
  AstList items;
} AstFile;

/* Parses text (already registered with diag as source `file`). Syntax
 * errors go to diag; the tree holds what could be recovered. */
AstFile *parse_file(Diag *d, Arena *ar, int file);

/* Parses one expression embedded in a string at loc (interpolation). */
Ast *parse_embedded_expr(Diag *d, Arena *ar, Loc loc, const char *text,
                         size_t len);

#endif
