/* The LLVM backend: a Program as LLVM IR, built through LLVM's C API and
 * optimized for the machine that runs it. The JIT (jit.c) is its only
 * user; the rest of cnnc goes through jit.h, which needs no LLVM headers.
 * Compiled to nothing when cnnc is built without LLVM (CNNC_LLVM 0). */
#ifndef CNNC_EMIT_LLVM_H
#define CNNC_EMIT_LLVM_H

#if CNNC_LLVM

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "jit.h"
#include "loop.h"

/* The entry points the module defines, each
 *
 *   int32_t NAME(JitState *s, int64_t count, void *const *inputs,
 *                void *const *outputs);
 *
 * inputs and outputs hold one array per p->inputs and p->outputs, in
 * order, each count samples (float, or int64_t for an integer buffer).
 * They return 0, or -1 when count is not in 1..p->batch or a check of the
 * program failed (S_FAIL). A forward program has NAME_forward; a training
 * program NAME_backward (its kernels, after counting the draw in
 * s->draws) and NAME_update (its update kernels, after counting the step
 * in s->step; count and the arrays are not used). */
typedef int32_t (*EmitLlvmEntry)(JitState *s, int64_t count,
                                 void *const *inputs, void *const *outputs);

/* The name of p's first entry point, or with update of NAME_update. */
const char *emit_llvm_entry_name(Arena *a, const Program *p, int update);

/* Builds the module for p (after plan()) in ctx, for tm's target, CPU and
 * features. Returns NULL after reporting a failure. */
LLVMModuleRef emit_llvm(Diag *d, LLVMContextRef ctx, const Program *p,
                        LLVMTargetMachineRef tm);

/* The same program split into nparts modules that can be optimized and
 * compiled at the same time, on as many threads: part 0 holds the entry
 * points and some kernels, the others the rest of the kernels, which part
 * 0 calls by name. Each kernel goes to the part with the least code so
 * far. Calls with the same p and nparts agree on the split. */
#define EMIT_LLVM_MAX_PARTS 16
LLVMModuleRef emit_llvm_part(Diag *d, LLVMContextRef ctx, const Program *p,
                             LLVMTargetMachineRef tm, int part, int nparts);

/* Optimizes m for tm's CPU with loop and SLP vectorization. Level 2 (what
 * the JIT runs) is LLVM's O2 without partial and runtime loop unrolling;
 * 0, 1 and 3 are LLVM's default<O0>, <O1> and <O3>. Returns 0, or -1 with
 * *err set (free it with LLVMDisposeErrorMessage). */
int emit_llvm_optimize(LLVMModuleRef m, LLVMTargetMachineRef tm, int level,
                       char **err);

#endif
#endif
