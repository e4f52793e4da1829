/* Elaboration: runs a model's program — block calls, loops, conditions,
 * pipes — and builds the flat graph it describes, naming every parameter
 * and inferring every shape as each node is created. */
#ifndef CNNC_ELABORATE_H
#define CNNC_ELABORATE_H

#include "graph.h"
#include "load.h"

/* Elaborates the model called `model`, or the only model of the main file
 * when model is NULL. Errors go to d; NULL when there is no graph at all. */
Graph *elaborate(Diag *d, Arena *a, const Sources *p, const char *model);

#endif
