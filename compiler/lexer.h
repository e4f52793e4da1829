/* Interface between the flex tokenizer and the parser. */
#ifndef CNNC_LEXER_H
#define CNNC_LEXER_H

#include <stddef.h>
#include <stdint.h>

#include "ast.h"
#include "parser.h"

typedef struct LexState {
  Diag *d;
  int file;
  int line, col;
  int after_dot; /* the previous token was '.' */
} LexState;

typedef struct Tok {
  int kind;
  Loc loc;
  int64_t ival;
  double fval;
  const char *text; /* identifiers and string bodies, not NUL-terminated */
  size_t len;
} Tok;

int lex_open(LexState *st, const char *text, size_t len, void **scanner);
int lex_raw(Tok *tok, void *scanner);
void lex_close(void *scanner);
int lex_keyword(const char *s);

#endif
