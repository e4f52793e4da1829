/* The .cnn grammar. Newline handling lives in the token filter below
 * (parser_next): a newline ends a statement unless the statement visibly
 * continues. Syntax errors recover at statement and item boundaries so one
 * run reports several. */
%define api.pure full
%define api.prefix {cnnyy}
%define parse.error custom
%define parse.lac full
%define api.location.type {Loc}
%locations
%param {Parser *P}

%code requires {
#include "ast.h"
typedef struct Parser Parser;
}

%code provides {
int cnnyylex(CNNYYSTYPE *lval, Loc *lloc, Parser *P);
void cnnyyerror(Loc *lloc, Parser *P, const char *msg);
}

%code {
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "lexer.h"

struct Parser {
  Diag *d;
  Arena *ar;
  void *scan;
  LexState st;
  int start;       /* first token to hand out: selects file or expression */
  Tok peek;        /* a token read ahead while deciding about a newline */
  int has_peek;
  int last;        /* the last token handed to the parser */
  char *brackets;  /* open brackets: '(' '[' '{' and 'S' for seq { */
  Loc *bracket_at; /* where each was opened */
  int depth, cap;
  const char *text; /* the spelling of the last token read */
  int textlen;
  int recovering;  /* after a syntax error, until the next line break */
  AstFile *file;
  Ast *expr;
};

#define YYLLOC_DEFAULT(Cur, Rhs, N)                                            \
  do {                                                                         \
    (Cur) = (N) ? YYRHSLOC(Rhs, 1) : YYRHSLOC(Rhs, 0);                         \
  } while (0)

static Ast *mk(Parser *P, AstKind k, Loc loc) { return ast_new(P->ar, k, loc); }
static AstList one(Parser *P, Ast *n) {
  AstList l = {0};
  vec_push(P->ar, l, n);
  return l;
}
static AstList push(Parser *P, AstList l, Ast *n) {
  vec_push(P->ar, l, n);
  return l;
}
static Ast *binop(Parser *P, int op, Loc loc, Ast *a, Ast *b) {
  Ast *n = mk(P, A_BINOP, loc);
  n->op = op;
  n->a = a;
  n->b = b;
  return n;
}
}

%union {
  Ast *node;
  AstList list;
}

%token T_START_FILE T_START_EXPR
%token <node> T_IDENT "identifier" T_INT "integer" T_FLOAT "number" T_STRING "string"
%token T_NEWLINE "end of line"
%token T_ERROR "invalid token"
%token T_ARROW "'->'" T_DOTDOT "'..'" T_IDIV "'//'" T_EQ "'=='" T_NE "'!='"
%token T_LE "'<='" T_GE "'>='"
%token T_IMPORT "'import'" T_BLOCK "'block'" T_MODEL "'model'" T_INPUT "'input'"
%token T_OUTPUT "'output'" T_RETURN "'return'" T_FOR "'for'" T_IN "'in'"
%token T_IF "'if'" T_ELSE "'else'" T_LOSS "'loss'" T_FREEZE "'freeze'"
%token T_TRAIN "'train'" T_SEQ "'seq'" T_TRUE "'true'" T_FALSE "'false'"
%token T_AND "'and'" T_OR "'or'" T_NOT "'not'"

%type <node> item stmt expr primary call arg stage target label path param
%type <node> train_item if_stmt
%type <list> items body stmts exprs exprs_opt args args_opt stages params
%type <list> params_opt labels train_items train_body

%precedence T_ARROW
%left T_OR
%left T_AND
%precedence T_NOT
%nonassoc T_EQ T_NE '<' T_LE '>' T_GE
%nonassoc T_DOTDOT
%left '+' '-'
%left '*' '/' T_IDIV '%'
%precedence UMINUS

%%

start
  : T_START_FILE file
  | T_START_EXPR expr          { P->expr = $2; }
  ;

file
  : opt_seps                   { }
  | opt_seps items opt_seps    { P->file->items = $2; }
  ;

items
  : item                       { $$ = (AstList){0}; if ($1) $$ = one(P, $1); }
  | items seps item            { $$ = $1; if ($3) $$ = push(P, $1, $3); }
  ;

item
  : T_IMPORT T_STRING          { $$ = mk(P, A_IMPORT, @1); $$->a = $2; }
  | T_BLOCK T_IDENT '(' params_opt ')' body
                               { $$ = mk(P, A_BLOCK, @2); $$->name = $2->name;
                                 $$->list = $4; $$->list2 = $6; }
  | T_MODEL T_IDENT body       { $$ = mk(P, A_MODEL, @2); $$->name = $2->name; $$->list2 = $3; }
  | error                      { $$ = NULL; }
  ;

params_opt
  : %empty                     { $$ = (AstList){0}; }
  | params
  ;

params
  : param                      { $$ = one(P, $1); }
  | params ',' param           { $$ = push(P, $1, $3); }
  ;

param
  : T_IDENT                    { $$ = mk(P, A_PARAM, @1); $$->name = $1->name; }
  | T_IDENT '=' expr           { $$ = mk(P, A_PARAM, @1); $$->name = $1->name; $$->a = $3; }
  ;

body
  : '{' opt_seps '}'           { $$ = (AstList){0}; }
  | '{' opt_seps stmts opt_seps '}' { $$ = $3; }
  ;

stmts
  : stmt                       { $$ = (AstList){0}; if ($1) $$ = one(P, $1); }
  | stmts seps stmt            { $$ = $1; if ($3) $$ = push(P, $1, $3); }
  ;

seps : sep | seps sep ;
sep : T_NEWLINE | ';' ;
opt_seps : %empty | seps ;

stmt
  : T_INPUT T_IDENT '[' exprs ']'
                               { $$ = mk(P, A_INPUT, @1); $$->name = $2->name; $$->b = $2; $$->list = $4; }
  | T_OUTPUT T_IDENT           { $$ = mk(P, A_OUTPUT, @1); $$->name = $2->name; $$->b = $2; }
  | T_OUTPUT T_IDENT '=' expr  { $$ = mk(P, A_OUTPUT, @1); $$->name = $2->name; $$->b = $2; $$->a = $4; }
  | T_IDENT '=' expr           { $$ = mk(P, A_BIND, @1); $$->name = $1->name; $$->a = $3; }
  | T_RETURN expr              { $$ = mk(P, A_RETURN, @1); $$->a = $2; }
  | T_FOR T_IDENT T_IN expr body
                               { $$ = mk(P, A_FOR, @1); $$->name = $2->name; $$->a = $4; $$->list = $5; }
  | if_stmt
  | T_LOSS expr                { $$ = mk(P, A_LOSS, @1); $$->a = $2; }
  | T_FREEZE labels            { $$ = mk(P, A_FREEZE, @1); $$->list = $2; }
  | T_TRAIN train_body         { $$ = mk(P, A_TRAIN, @1); $$->list = $2; }
  | error                      { $$ = NULL; }
  ;

if_stmt
  : T_IF expr body             { $$ = mk(P, A_IF, @1); $$->a = $2; $$->list = $3; }
  | T_IF expr body T_ELSE body { $$ = mk(P, A_IF, @1); $$->a = $2; $$->list = $3; $$->list2 = $5; }
  | T_IF expr body T_ELSE if_stmt
                               { $$ = mk(P, A_IF, @1); $$->a = $2; $$->list = $3;
                                 $$->list2 = one(P, $5); }
  ;

labels
  : label                      { $$ = one(P, $1); }
  | labels ',' label           { $$ = push(P, $1, $3); }
  ;

train_body
  : '{' opt_seps '}'           { $$ = (AstList){0}; }
  | '{' opt_seps train_items opt_seps '}' { $$ = $3; }
  ;

train_items
  : train_item                 { $$ = (AstList){0}; if ($1) $$ = one(P, $1); }
  | train_items seps train_item { $$ = $1; if ($3) $$ = push(P, $1, $3); }
  ;

train_item
  : T_IDENT '=' expr           { $$ = mk(P, A_TRAIN_SET, @1); $$->name = $1->name; $$->a = $3; }
  | T_IDENT call               { $$ = mk(P, A_TRAIN_CALL, @1); $$->name = $1->name; $$->a = $2; }
  | T_IDENT T_IDENT            { $$ = mk(P, A_TRAIN_CALL, @1); $$->name = $1->name; $$->a = $2; }
  | error                      { $$ = NULL; }
  ;

expr
  : expr T_ARROW stage         { $$ = mk(P, A_PIPE, $3->loc); $$->a = $1; $$->b = $3; }
  | expr T_OR expr             { $$ = binop(P, T_OR, @2, $1, $3); }
  | expr T_AND expr            { $$ = binop(P, T_AND, @2, $1, $3); }
  | T_NOT expr                 { $$ = mk(P, A_UNOP, @1); $$->op = T_NOT; $$->a = $2; }
  | expr T_EQ expr             { $$ = binop(P, T_EQ, @2, $1, $3); }
  | expr T_NE expr             { $$ = binop(P, T_NE, @2, $1, $3); }
  | expr '<' expr              { $$ = binop(P, '<', @2, $1, $3); }
  | expr T_LE expr             { $$ = binop(P, T_LE, @2, $1, $3); }
  | expr '>' expr              { $$ = binop(P, '>', @2, $1, $3); }
  | expr T_GE expr             { $$ = binop(P, T_GE, @2, $1, $3); }
  | expr T_DOTDOT expr         { $$ = mk(P, A_RANGE, @2); $$->a = $1; $$->b = $3; }
  | expr '+' expr              { $$ = binop(P, '+', @2, $1, $3); }
  | expr '-' expr              { $$ = binop(P, '-', @2, $1, $3); }
  | expr '*' expr              { $$ = binop(P, '*', @2, $1, $3); }
  | expr '/' expr              { $$ = binop(P, '/', @2, $1, $3); }
  | expr T_IDIV expr           { $$ = binop(P, T_IDIV, @2, $1, $3); }
  | expr '%' expr              { $$ = binop(P, '%', @2, $1, $3); }
  | '-' expr %prec UMINUS      { $$ = mk(P, A_UNOP, @1); $$->op = '-'; $$->a = $2; }
  | primary
  ;

primary
  : T_INT
  | T_FLOAT
  | T_STRING
  | T_TRUE                     { $$ = mk(P, A_BOOL, @1); $$->ival = 1; }
  | T_FALSE                    { $$ = mk(P, A_BOOL, @1); $$->ival = 0; }
  | T_IDENT
  | call
  | '[' exprs_opt ']'          { $$ = mk(P, A_LIST, @1); $$->list = $2; }
  | '(' expr ')'               { $$ = $2; }
  ;

exprs_opt
  : %empty                     { $$ = (AstList){0}; }
  | exprs
  | exprs ','
  ;

exprs
  : expr                       { $$ = one(P, $1); }
  | exprs ',' expr             { $$ = push(P, $1, $3); }
  ;

call
  : T_IDENT '(' args_opt ')'   { $$ = mk(P, A_CALL, @1); $$->name = $1->name; $$->list = $3; }
  ;

args_opt
  : %empty                     { $$ = (AstList){0}; }
  | args
  | args ','
  ;

args
  : arg                        { $$ = one(P, $1); }
  | args ',' arg               { $$ = push(P, $1, $3); }
  ;

arg
  : expr
  | T_IDENT '=' expr           { $$ = mk(P, A_KWARG, @1); $$->name = $1->name; $$->a = $3; }
  ;

stage
  : label ':' target           { $$ = mk(P, A_STAGE, $3->loc); $$->a = $1; $$->b = $3; }
  | target                     { $$ = mk(P, A_STAGE, $1->loc); $$->b = $1; }
  ;

target
  : call
  | T_IDENT
  | T_SEQ '{' stages '}'       { $$ = mk(P, A_SEQ, @1); $$->list = $3; }
  ;

stages
  : stage                      { $$ = one(P, $1); }
  | stages T_ARROW stage       { $$ = push(P, $1, $3); }
  ;

label
  : path
  | '[' expr ']'               { $$ = mk(P, A_LABEL_EXPR, @1); $$->a = $2; }
  | T_STRING                   { $$ = mk(P, A_LABEL_STR, @1); $$->a = $1; }
  ;

path
  : T_IDENT                    { $$ = mk(P, A_LABEL_PATH, @1); $$->list = one(P, $1); }
  | path '.' T_IDENT           { $$ = $1; $$->list = push(P, $1->list, $3); }
  | path '.' T_INT             { $$ = $1; $$->list = push(P, $1->list, $3); }
  ;

%%

void cnnyyerror(Loc *lloc, Parser *P, const char *msg) {
  diag_error(P->d, *lloc, "%s", msg);
}

/* Recovery resumes at the next line: forget brackets left open by the
 * broken statement, or every later newline would look bracketed. */
static void start_recovery(Parser *P) {
  while (P->depth > 0 && P->brackets[P->depth - 1] != '{')
    P->depth--;
  P->recovering = 1;
}

static int closes(int tok, char open) {
  return (tok == ')' && open == '(') || (tok == ']' && open == '[') ||
         (tok == '}' && (open == '{' || open == 'S'));
}

/* Syntax errors in the words of the language: what was found, what could
 * stand there, and the bracket a misplaced closer or the end fails to
 * match. Tokens the lexer already reported are not reported again. */
static int yyreport_syntax_error(const yypcontext_t *ctx, Parser *P) {
  yysymbol_kind_t tok = yypcontext_token(ctx);
  const Loc *loc = yypcontext_location(ctx);
  if (tok == YYSYMBOL_T_ERROR) {
    start_recovery(P);
    return 0;
  }
  yysymbol_kind_t exp[6];
  int n = yypcontext_expected_tokens(ctx, exp, 6);
  int want_ident = 0, top_level = 0;
  for (int i = 0; i < n; i++) {
    want_ident |= exp[i] == YYSYMBOL_T_IDENT;
    top_level |= exp[i] == YYSYMBOL_T_IMPORT;
  }
  char found[96];
  if (tok == YYSYMBOL_T_IDENT || tok == YYSYMBOL_T_INT || tok == YYSYMBOL_T_FLOAT)
    snprintf(found, sizeof found, "%s '%.*s'", yysymbol_name(tok),
             P->textlen > 40 ? 40 : P->textlen, P->text);
  else
    snprintf(found, sizeof found, "%s", yysymbol_name(tok));
  const char *word = yysymbol_name(tok);
  if (want_ident && word[0] == '\'' && isalpha((unsigned char)word[1])) {
    diag_error(P->d, *loc, "%s is a reserved word and cannot be used as a name",
               word);
  } else if (top_level) {
    diag_error(P->d, *loc,
               "expected 'import', 'block' or 'model' at the top level, not %s",
               found);
  } else {
    char expected[256] = "";
    if (n > 0 && n <= 4) {
      strcat(expected, ", expected ");
      for (int i = 0; i < n; i++) {
        if (i)
          strcat(expected, i == n - 1 ? " or " : ", ");
        strncat(expected, yysymbol_name(exp[i]), 40);
      }
    }
    diag_error(P->d, *loc, "syntax error: unexpected %s%s", found, expected);
  }
  /* Which bracket is left open? */
  int open = P->depth - 1;
  int tk = P->last;
  int closer = tk == ')' || tk == ']' || tk == '}';
  if (open >= 0 &&
      (tk == 0 || tk == T_MODEL || tk == T_BLOCK || tk == T_IMPORT ||
       (closer && P->brackets[open] != '{' && !closes(tk, P->brackets[open]))))
    diag_note(P->d, P->bracket_at[open], "to match this '%c'",
              P->brackets[open] == 'S' ? '{' : P->brackets[open]);
  start_recovery(P);
  return 0;
}

/* Tokens after which a line break does not end the statement. */
static int continues(int tok) {
  switch (tok) {
  case T_ARROW: case ',': case '=': case '+': case '-': case '*': case '/':
  case T_IDIV: case '%': case T_EQ: case T_NE: case '<': case T_LE: case '>':
  case T_GE: case T_AND: case T_OR: case T_NOT: case T_DOTDOT: case ':':
  case '.':
    return 1;
  default:
    return 0;
  }
}

static Ast *string_node(Parser *P, const Tok *t);

static void read_raw(Parser *P, Tok *t) {
  if (P->has_peek) {
    *t = P->peek;
    P->has_peek = 0;
    return;
  }
  memset(t, 0, sizeof *t);
  P->st.after_dot = P->last == '.';
  t->kind = lex_raw(t, P->scan);
  if (t->kind == 0) {
    t->loc.file = P->st.file;
    t->loc.line = P->st.line;
    t->loc.col = P->st.col;
  }
}

static void track_brackets(Parser *P, int tok, Loc at) {
  if (tok == '(' || tok == '[' || tok == '{') {
    if (P->depth == P->cap) {
      int ncap = P->cap ? P->cap * 2 : 64;
      char *nb = arena_alloc(P->ar, (size_t)ncap);
      Loc *nl = arena_alloc(P->ar, sizeof(Loc) * (size_t)ncap);
      if (P->depth) {
        memcpy(nb, P->brackets, (size_t)P->depth);
        memcpy(nl, P->bracket_at, sizeof(Loc) * (size_t)P->depth);
      }
      P->brackets = nb;
      P->bracket_at = nl;
      P->cap = ncap;
    }
    P->bracket_at[P->depth] = at;
    P->brackets[P->depth++] = (tok == '{' && P->last == T_SEQ) ? 'S' : (char)tok;
  } else if (P->depth > 0 && closes(tok, P->brackets[P->depth - 1])) {
    P->depth--;
  }
}

/* While recovering, a { ... } group is skipped whole, so the statements of
 * a broken if or for are not taken for statements of the enclosing body. */
static void skip_group(Parser *P, Tok *t) {
  int nest = 1;
  while (nest > 0) {
    read_raw(P, t);
    if (t->kind == 0)
      return;
    nest += t->kind == '{' ? 1 : t->kind == '}' ? -1 : 0;
  }
  read_raw(P, t);
}

/* The token filter between flex and bison: drops newlines inside brackets
 * and seq { }, after a token that continues the line, and before a line
 * that starts with '->' or 'else'; builds the semantic values. */
int cnnyylex(CNNYYSTYPE *lval, Loc *lloc, Parser *P) {
  Tok t;
  if (P->start) {
    int s = P->start;
    P->start = 0;
    lloc->file = P->st.file;
    lloc->line = P->st.line;
    lloc->col = P->st.col;
    return s;
  }
  for (;;) {
    read_raw(P, &t);
    if (P->recovering && t.kind == '{')
      skip_group(P, &t);
    if (t.kind != T_NEWLINE)
      break;
    if (P->recovering) {
      P->recovering = 0;
      break;
    }
    char top = P->depth ? P->brackets[P->depth - 1] : 0;
    if (top == '(' || top == '[' || top == 'S' || continues(P->last))
      continue;
    Tok next;
    do
      read_raw(P, &next);
    while (next.kind == T_NEWLINE);
    if (next.kind == T_ARROW || next.kind == T_ELSE) {
      t = next;
      break;
    }
    P->peek = next;
    P->has_peek = 1;
    break;
  }
  *lloc = t.loc;
  P->text = t.text;
  P->textlen = (int)t.len;
  lval->node = NULL;
  switch (t.kind) {
  case T_IDENT:
    lval->node = ast_new(P->ar, A_NAME, t.loc);
    lval->node->name = arena_strndup(P->ar, t.text, t.len);
    break;
  case T_INT:
    lval->node = ast_new(P->ar, A_INT, t.loc);
    lval->node->ival = t.ival;
    break;
  case T_FLOAT:
    lval->node = ast_new(P->ar, A_FLOAT, t.loc);
    lval->node->fval = t.fval;
    break;
  case T_STRING:
    lval->node = string_node(P, &t);
    break;
  default:
    break;
  }
  if (!P->recovering || t.kind == '}')
    track_brackets(P, t.kind, t.loc);
  P->last = t.kind;
  return t.kind;
}

/* Splits a string literal into text parts and {expression} parts, each
 * expression parsed with its own location inside the string. */
static Ast *string_node(Parser *P, const Tok *t) {
  Ast *s = ast_new(P->ar, A_STR, t->loc);
  char *buf = arena_alloc(P->ar, t->len + 1);
  size_t n = 0;
  const char *p = t->text, *end = t->text + t->len;
  int col = t->loc.col + 1;
  while (p < end) {
    if (*p == '\\' && p + 1 < end) {
      char c = p[1];
      buf[n++] = c == 'n' ? '\n' : c == 't' ? '\t' : c;
      p += 2, col += 2;
    } else if ((*p == '{' || *p == '}') && p + 1 < end && p[1] == *p) {
      buf[n++] = *p;
      p += 2, col += 2;
    } else if (*p == '{') {
      const char *q = p + 1;
      int depth = 1;
      while (q < end && depth) {
        depth += *q == '{' ? 1 : *q == '}' ? -1 : 0;
        q += depth ? 1 : 0;
      }
      Loc at = {t->loc.file, t->loc.line, col + 1};
      if (q >= end) {
        diag_error(P->d, (Loc){t->loc.file, t->loc.line, col},
                   "unterminated '{' in string");
        break;
      }
      if (n) {
        Ast *part = ast_new(P->ar, A_STRPART, t->loc);
        part->name = arena_strndup(P->ar, buf, n);
        vec_push(P->ar, s->list, part);
        n = 0;
      }
      Ast *e = parse_embedded_expr(P->d, P->ar, at, p + 1, (size_t)(q - p - 1));
      if (e)
        vec_push(P->ar, s->list, e);
      col += (int)(q - p) + 1;
      p = q + 1;
    } else if (*p == '}') {
      diag_error(P->d, (Loc){t->loc.file, t->loc.line, col},
                 "unmatched '}' in string; write '}}' for a brace");
      p++, col++;
    } else {
      buf[n++] = *p++;
      col++;
    }
  }
  if (n || s->list.n == 0) {
    Ast *part = ast_new(P->ar, A_STRPART, t->loc);
    part->name = arena_strndup(P->ar, buf, n);
    vec_push(P->ar, s->list, part);
  }
  return s;
}

static int run(Parser *P, const char *text, size_t len) {
  if (lex_open(&P->st, text, len, &P->scan) != 0) {
    diag_internal(P->d, "cannot create the scanner");
    return 1;
  }
  int rc = cnnyyparse(P);
  lex_close(P->scan);
  return rc;
}

AstFile *parse_file(Diag *d, Arena *ar, int file) {
  AstFile *f = arena_alloc(ar, sizeof *f);
  f->file = file;
  f->path = d->srcs.v[file].path;
  Parser P = {0};
  P.d = d;
  P.ar = ar;
  P.st = (LexState){d, file, 1, 1, 0};
  P.start = T_START_FILE;
  P.file = f;
  run(&P, d->srcs.v[file].text, d->srcs.v[file].len);
  return f;
}

Ast *parse_embedded_expr(Diag *d, Arena *ar, Loc loc, const char *text,
                         size_t len) {
  Parser P = {0};
  P.d = d;
  P.ar = ar;
  P.st = (LexState){d, loc.file, loc.line, loc.col, 0};
  P.start = T_START_EXPR;
  /* An embedded expression never spans lines: treat it as bracketed. */
  P.last = '(';
  track_brackets(&P, '(', loc);
  int errors = d->errors;
  run(&P, text, len);
  return d->errors == errors ? P.expr : NULL;
}
