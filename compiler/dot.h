/* `cnnc dot`: the graph in Graphviz's language, block calls as clusters. */
#ifndef CNNC_DOT_H
#define CNNC_DOT_H

#include <stdio.h>

#include "graph.h"

void dot_print(FILE *out, const Graph *g);

#endif
