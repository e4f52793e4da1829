/* Memory planning: parameters laid out in one block, activations in one
 * arena where buffers whose lifetimes do not overlap share space. */
#ifndef CNNC_PLAN_H
#define CNNC_PLAN_H

#include "loop.h"

void plan(Program *p);

#endif
