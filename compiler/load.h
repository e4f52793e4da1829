/* Loading: reads the main file and everything it imports, parses each
 * once, and collects their blocks and models under one namespace. */
#ifndef CNNC_LOAD_H
#define CNNC_LOAD_H

#include "ast.h"

typedef struct Sources {
  AstFile *main;
  AstList blocks; /* A_BLOCK of every loaded file */
  AstList models; /* A_MODEL of every loaded file */
} Sources;

/* NULL only when the main file itself cannot be read; other problems are
 * reported to d and leave a partial program. */
Sources *load_program(Diag *d, Arena *a, const char *path);
/* The same for text held in memory; imports resolve against the current
 * directory. */
Sources *load_program_text(Diag *d, Arena *a, const char *name,
                           const char *text);

const Ast *program_block(const Sources *p, const char *name);
const Ast *program_model(const Sources *p, const char *name);

#endif
