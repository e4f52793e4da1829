/* AST construction helpers. */
#include "ast.h"

#include "parser.h"

Ast *ast_new(Arena *ar, AstKind kind, Loc loc) {
  Ast *n = arena_alloc(ar, sizeof *n);
  n->kind = kind;
  n->loc = loc;
  return n;
}

const char *ast_op_name(int op) {
  switch (op) {
  case T_ARROW: return "->";
  case T_DOTDOT: return "..";
  case T_IDIV: return "//";
  case T_EQ: return "==";
  case T_NE: return "!=";
  case T_LE: return "<=";
  case T_GE: return ">=";
  case T_AND: return "and";
  case T_OR: return "or";
  case T_NOT: return "not";
  case '+': return "+";
  case '-': return "-";
  case '*': return "*";
  case '/': return "/";
  case '%': return "%";
  case '<': return "<";
  case '>': return ">";
  default: return "?";
  }
}
