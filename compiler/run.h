/* `cnnc run`: the model compiled with the system C compiler, together with
 * a small driver that reads and writes safetensors files, cached by content
 * hash, and run. */
#ifndef CNNC_RUN_H
#define CNNC_RUN_H

#include "loop.h"

typedef struct RunOptions {
  const char *weights, *input, *output;
  const char *cc;   /* compiler command; NULL: "cc" */
  const char *self; /* argv[0], to find the runtime */
  int verbose;      /* say what is compiled and where */
  /* cnnc train: the driver's command line ("key=value" words after a
   * slot for the program's name), NULL otherwise */
  char **train_argv;
} RunOptions;

/* Runs the forward pass p, or with train (cnnc grad) one training step's
 * loss and gradients. Returns the exit status to report: 0, 1 for bad
 * files (the driver says why), or 1 after reporting a failure to compile
 * or start. */
int run_program(Diag *d, const Program *p, const Program *train,
                const RunOptions *o);

#endif
