/* What `cnnc check` shows: per layer its output shape, parameters,
 * multiply-accumulates and receptive field, then the model's totals. */
#ifndef CNNC_CHECK_H
#define CNNC_CHECK_H

#include <stdio.h>

#include "graph.h"

typedef struct Totals {
  int64_t params, trainable, frozen; /* parameter values (not buffers) */
  int64_t buffer_values;
  int64_t macs;        /* per sample */
  int64_t activations; /* float values of all node outputs, per sample */
} Totals;

/* Multiply-accumulates of one node per sample (conv, deconv, dense). */
int64_t check_macs(const Node *n);
Totals check_totals(const Graph *g);
void check_print_table(FILE *out, const Graph *g, const char *path);
/* One line per parameter and buffer: name, dims, "param" or "buffer". */
void check_print_params(FILE *out, const Graph *g);

#endif
