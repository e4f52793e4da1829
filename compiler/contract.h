/* Contraction: a multiply feeding an add becomes one fused multiply-add
 * (X_FMA, one rounding), in every kernel of a program. */
#ifndef CNNC_CONTRACT_H
#define CNNC_CONTRACT_H

#include "loop.h"

void contract(Program *p);

#endif
