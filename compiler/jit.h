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

/* `--emit-llvm FILE.ll`: writes the module the JIT runs, optimized for
 * this machine, as LLVM IR text. Returns 0, or 1 after reporting. */
int jit_write_ll(Diag *d, const Program *p, const char *path);

/* The pieces, for tests and benchmarks. A Jit owns the compiled code and
 * one state (parameters, buffers, arena), zeroed at first. */
typedef struct Jit Jit;

/* Compiles p (after plan()) at LLVM optimization level 0..3 (run uses
 * 3). Returns NULL after reporting a failure. */
Jit *jit_compile(Diag *d, const Program *p, int level);
/* Loads weights from a safetensors image in memory with NAME_load's
 * checks and messages. Returns 0, or -1 with a message in err (errlen
 * bytes) and the state unchanged. */
int jit_load(Jit *j, const void *data, size_t size, char *err, size_t errlen);
/* The state's areas, as the planner laid them out. */
float *jit_f32(Jit *j);
int64_t *jit_i64(Jit *j);
/* One call of the compiled entry point on count samples (1..p->batch):
 * one array per model input, then per output, in declaration order.
 * Returns 0, or -1 when count is out of range. */
int jit_call(Jit *j, int64_t count, const void *const *inputs,
             void *const *outputs);
/* Seconds spent building the IR, optimizing it, and making machine code. */
void jit_times(const Jit *j, double *ir, double *opt, double *code);
void jit_free(Jit *j);

#endif
