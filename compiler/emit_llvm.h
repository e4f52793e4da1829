/* The LLVM backend: a Program as LLVM IR, built through LLVM's C API and
 * optimized for the machine that runs it. The JIT (jit.c) is its only
 * user; the rest of cnnc goes through jit.h, which needs no LLVM headers.
 * Compiled to nothing when cnnc is built without LLVM (CNNC_LLVM 0). */
#ifndef CNNC_EMIT_LLVM_H
#define CNNC_EMIT_LLVM_H

#if CNNC_LLVM

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>
#include <stdint.h>

#include "loop.h"

/* What the generated entry point reads the state's areas from (the C
 * backend's state struct holds the same arrays inline). */
typedef struct EmitLlvmState {
  float *f32;   /* parameters and float buffers: BUF_F32 */
  int64_t *i64; /* integer buffers: BUF_I64 */
  float *arena; /* activations: BUF_ARENA */
  float *g32;   /* gradients: BUF_GRAD */
} EmitLlvmState;

/* The entry point's signature. inputs and outputs hold one array per
 * p->inputs and p->outputs, in order, each count samples (float, or
 * int64_t for an integer buffer). Returns 0, or -1 when count is not in
 * 1..p->batch or a check of the program failed (S_FAIL). */
typedef int32_t (*EmitLlvmEntry)(EmitLlvmState *s, int64_t count,
                                 void *const *inputs, void *const *outputs);

/* The entry point's name in the module: NAME_forward, or NAME_train_step
 * for a training program. */
const char *emit_llvm_entry_name(Arena *a, const Program *p);

/* Builds the module for p (after plan()) in ctx, for tm's target, CPU and
 * features. Returns NULL after reporting a construct this backend cannot
 * compile. */
LLVMModuleRef emit_llvm(Diag *d, LLVMContextRef ctx, const Program *p,
                        LLVMTargetMachineRef tm);

/* Runs LLVM's default<O{level}> pipeline (level 0..3) with loop and SLP
 * vectorization, for tm's CPU. Returns 0, or -1 with *err set (free it
 * with LLVMDisposeErrorMessage). */
int emit_llvm_optimize(LLVMModuleRef m, LLVMTargetMachineRef tm, int level,
                       char **err);

#endif
#endif
