/* The JIT: a Program compiled in-process through LLVM (emit_llvm.c, then
 * ORC's LLJIT) and run, for `cnnc run --jit`. This header needs no LLVM:
 * in a cnnc built without it (make LLVM=0) jit_available() is 0 and every
 * other function reports that there is no JIT and fails. */
#ifndef CNNC_JIT_H
#define CNNC_JIT_H

#include <stddef.h>
#include <stdint.h>

#include "run.h"

/* 1 when this cnnc was built with LLVM, else 0. */
int jit_available(void);

/* `cnnc run` through the JIT, with run_program's contract: reads the
 * weights (as strictly as the generated NAME_load, with its messages) and
 * the inputs, checks both before compiling, runs the forward pass on
 * every sample in chunks of p->batch and writes the outputs. o->cc is not
 * used; o->verbose reports the compile times. Returns 0, or 1 after
 * reporting what went wrong. */
int jit_run(Diag *d, const Program *p, const RunOptions *o);

/* `cnnc grad` through the JIT (jit_train.c), with the C driver's
 * contract: t is the training program; one forward and backward pass on
 * every sample of the input file (at most t->batch), then the loss and
 * every gradient written under its parameter's name. */
int jit_grad(Diag *d, const Program *t, const RunOptions *o);

/* `cnnc train` through the JIT: the forward program p (test accuracy) and
 * the training program t share one set of weights, behind the runtime's
 * training loop (rt_train_main) with o->train_argv. Returns its exit
 * status, or 1 after reporting a failure to compile. */
int jit_train(Diag *d, const Program *p, const Program *t, const RunOptions *o);

/* `--emit-llvm FILE.ll`: writes the module the JIT runs, optimized for
 * this machine, as LLVM IR text. Returns 0, or 1 after reporting. */
int jit_write_ll(Diag *d, const Program *p, const char *path);

/* What the compiled code works on: the areas of the state, as the planner
 * laid them out, and the training scalars (the fields of emit_c's state
 * struct of the same names). */
typedef struct JitState {
  float *f32;     /* parameters and float buffers */
  int64_t *i64;   /* integer buffers */
  float *arena;   /* activations */
  float *g32;     /* training: gradients */
  float *m32;     /* training: momentum, or Adam's first moments */
  float *v32;     /* training: Adam's second moments */
  float *packed;  /* inference: weights packed once (Program.packed_ok) */
  float lr;       /* training: the learning rate */
  int64_t step;   /* training: optimizer steps taken */
  uint64_t seed;  /* training: dropout's random stream */
  uint64_t draws; /* training: steps that drew from it */
} JitState;

/* The pieces, for tests and benchmarks. A Jit owns the compiled code and
 * one state, zeroed at first (the areas a program does not use are
 * NULL). */
typedef struct Jit Jit;

/* Compiles p (after plan()) at optimization level 0..3, as
 * emit_llvm_optimize() says (jit_run uses 2). Returns NULL after
 * reporting a failure. */
Jit *jit_compile(Diag *d, const Program *p, int level);
/* The same, split into nparts modules compiled at the same time (0: one a
 * processor, as jit_compile does; at most 16). The split changes no
 * result. */
Jit *jit_compile_parts(Diag *d, const Program *p, int level, int nparts);
/* Loads weights from a safetensors image in memory with NAME_load's
 * checks and messages. Returns 0, or -1 with a message in err (errlen
 * bytes) and the state unchanged. */
int jit_load(Jit *j, const void *data, size_t size, char *err, size_t errlen);
JitState *jit_state(Jit *j);
/* After writing weights into jit_state(j)->f32 other than by jit_load:
 * the forward pass packs its kept weights again on its next call. */
void jit_weights_changed(Jit *j);
/* Points j's parameter and buffer areas (f32, i64) at owner's, so a
 * forward and a training program compiled from one graph (their planner
 * places every parameter at the same offset) work on one set of
 * weights. owner must outlive j. */
void jit_share_params(Jit *j, Jit *owner);
/* One call of the program's entry point (forward, or a training
 * program's backward) on count samples (1..p->batch): one array per model
 * input, then per output, in declaration order. Returns 0, or -1 when
 * count is out of range or a check failed (a label out of range). */
int jit_call(Jit *j, int64_t count, const void *const *inputs,
             void *const *outputs);
/* A training program's optimizer update; -1 for a forward program. */
int jit_update(Jit *j);
/* Seconds spent building the IR, optimizing it, and making machine code. */
void jit_times(const Jit *j, double *ir, double *opt, double *code);
void jit_free(Jit *j);

#endif
