/* The C backend: prints a Program as a standalone model.c and model.h. */
#ifndef CNNC_EMIT_C_H
#define CNNC_EMIT_C_H

#include <stdio.h>

#include "loop.h"

/* p: the forward pass; t: the training step, or NULL for inference
 * only. header_name is how model.c includes model.h (e.g. "lenet5.h"). */
void emit_c(FILE *c, FILE *h, const Program *p, const Program *t, const Diag *d,
            const char *header_name);

#endif
