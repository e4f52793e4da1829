/* The LLVM backend. It walks the same loop IR the C backend prints and
 * builds, through LLVM's C API, exactly what that C computes:
 *
 * - every kernel becomes one function, (count, state, one pointer per
 *   buffer it touches), whose loops, guards, loads and stores are the
 *   IR's; the entry point NAME_forward checks count and calls the kernels
 *   in order with their buffers' addresses. Kernels that are the same IR
 *   over different buffers (ResNet's repeated blocks) share one function,
 *   which keeps compile time down; the arithmetic is the same either way.
 * - C's arithmetic: floats in single precision, with no contraction into
 *   fused multiply-adds (ISO C mode, as `cc -std=c99` compiles model.c);
 *   wide temporaries in double, and mixed operands converted as C's usual
 *   arithmetic conversions do; indices in 64-bit integers (ptrdiff_t),
 *   signed overflow undefined as in C; integer division and remainder
 *   truncate (the IR only divides non-negative operands); && and ?:
 *   evaluate only what C evaluates, so a guarded load never runs when its
 *   guard is false.
 * - float constants are what the C compiler reads from the printed
 *   literal ("%.9g" then strtof), so both see the same bits.
 * - fmaxf/fminf are written out as glibc's x86-64 code computes them
 *   (maxss/minss, with the NaN cases: fmaxf(x, y) is x > y ? x : y, and
 *   x when y is NaN), which vectorizes; expf, logf and powf are
 *   calls into the process's libm, marked nobuiltin so LLVM neither folds
 *   nor rewrites them (powf(2, x) is not exp2f(x) to the last bit);
 *   sqrtf is llvm.sqrt, correctly rounded like sqrtss and libm.
 *
 * Function arguments are noalias when the IR guarantees it: the buffers
 * of a kernel are disjoint unless two of them share storage, which is
 * checked here from the plan's offsets. */
#if CNNC_LLVM

#include "emit_llvm.h"
#include "schedule.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Transforms/PassBuilder.h>

/* Kernels already built, by their IR with buffers replaced by slots. */
typedef struct Built {
  char *key;
  size_t len;
  LLVMValueRef fn;
  LLVMTypeRef type;
} Built;
VEC_TYPE(BuiltVec, Built);

typedef struct Emit {
  Diag *d;
  Arena *a;
  const Program *p;
  LLVMContextRef cx;
  LLVMModuleRef m;
  LLVMBuilderRef b;
  LLVMTypeRef f32, f64, i64, i32, i1, i8p, state, statep, un, bin;
  LLVMTypeRef *fields; /* of JitState */
  LLVMValueRef expf_, logf_, powf_, sqrt_, fma_, prefetch_;
  LLVMTypeRef prefetch_type; /* void (i8*, i32, i32, i32) */
  LLVMTypeRef tri;           /* float (float, float, float) */
  int has_fma;               /* the target machine has the instruction */
  LLVMValueRef parallel_for; /* threads_parallel_for, in cnnc */
  LLVMTypeRef parallel_type, body_type;
  LLVMAttributeRef nobuiltin;
  char *cpu, *features;
  BuiltVec built;
  /* the kernel being built */
  const Kernel *k;
  LLVMValueRef fn, count, s;
  LLVMValueRef *vars;   /* by variable id: its stack slot */
  LLVMValueRef *locals; /* by index in the kernel's locals: its array */
  int *slot;            /* by buffer id: the argument of its root, or -1 */
  const Buffer **roots;
  int nroots;
  LLVMValueRef *args; /* by slot */
  int bad;            /* a failure was reported */
  /* the part of the program this module holds (emit_llvm_part) */
  int part, nparts;
  /* the kernels of a forward or backward pass at batch 1: the entry
   * points take no other count, so the loops over samples go */
  int count_is_1;
  int64_t load[EMIT_LLVM_MAX_PARTS]; /* estimated size of each part */
} Emit;

static const Buffer *root(const Buffer *b) {
  while (b->alias)
    b = b->alias;
  return b;
}

/* JitState's fields, in order. */
enum {
  SF_F32,
  SF_I64,
  SF_ARENA,
  SF_G32,
  SF_M32,
  SF_V32,
  SF_PACKED,
  SF_LR,
  SF_STEP,
  SF_SEED,
  SF_DRAWS,
  SF_COUNT
};

static LLVMValueRef state_field(Emit *e, LLVMValueRef s, unsigned field) {
  LLVMValueRef at = LLVMBuildStructGEP2(e->b, e->state, s, field, "");
  return LLVMBuildLoad2(e->b, e->fields[field], at, "");
}

static int is_int_buffer(const Buffer *r) {
  return r->kind == BUF_I64 || r->is_int;
}

static LLVMTypeRef elem_type(Emit *e, const Buffer *r) {
  return is_int_buffer(r) ? e->i64 : e->f32;
}

/* The float a C compiler reads from the literal emit_c prints. */
static float c_float(double f) {
  char buf[64];
  if (isinf(f) || isnan(f))
    return (float)f;
  snprintf(buf, sizeof buf, "%.9g", f);
  return strtof(buf, NULL);
}

static LLVMValueRef ci64(Emit *e, int64_t v) {
  return LLVMConstInt(e->i64, (unsigned long long)v, 1);
}

/* --- conversions, as C's usual arithmetic conversions make them ------- */

/* A value's arithmetic rank in C: int (booleans too) < float < double
 * (the IR's wide temporaries). Mixed operands meet at the higher one. */
static int rank(Emit *e, LLVMValueRef v) {
  LLVMTypeRef t = LLVMTypeOf(v);
  return t == e->f64 ? 2 : t == e->f32 ? 1 : 0;
}

static LLVMTypeRef rank_type(Emit *e, int r) {
  return r == 2 ? e->f64 : r == 1 ? e->f32 : e->i64;
}

/* v as type t (i64, float or double), as a C conversion makes it. */
static LLVMValueRef convert(Emit *e, LLVMValueRef v, LLVMTypeRef t) {
  LLVMTypeRef from = LLVMTypeOf(v);
  if (from == t)
    return v;
  if (t == e->i64)
    return from == e->i1 ? LLVMBuildZExt(e->b, v, t, "")
                         : LLVMBuildFPToSI(e->b, v, t, "");
  if (from == e->i1)
    return LLVMBuildUIToFP(e->b, v, t, "");
  if (from == e->i64)
    return LLVMBuildSIToFP(e->b, v, t, "");
  return t == e->f64 ? LLVMBuildFPExt(e->b, v, t, "")
                     : LLVMBuildFPTrunc(e->b, v, t, "");
}

/* Whether a target's feature string ("+avx2,-avx512f,+fma,...") turns
 * the feature on. */
static int has_feature(const char *features, const char *name) {
  size_t n = strlen(name);
  for (const char *f = features; f && *f;) {
    const char *end = strchr(f, ',');
    size_t len = end ? (size_t)(end - f) : strlen(f);
    if (len == n + 1 && f[0] == '+' && strncmp(f + 1, name, n) == 0)
      return 1;
    f = end ? end + 1 : f + len;
  }
  return 0;
}

static LLVMValueRef to_float(Emit *e, LLVMValueRef v) {
  return convert(e, v, e->f32);
}

static LLVMValueRef to_int(Emit *e, LLVMValueRef v) {
  return convert(e, v, e->i64);
}

static LLVMValueRef to_bool(Emit *e, LLVMValueRef v) {
  LLVMTypeRef t = LLVMTypeOf(v);
  if (t == e->i1)
    return v;
  if (t != e->i64) /* nonzero, NaN included */
    return LLVMBuildFCmp(e->b, LLVMRealUNE, v, LLVMConstReal(t, 0), "");
  return LLVMBuildICmp(e->b, LLVMIntNE, v, ci64(e, 0), "");
}

/* The type of a temporary: loop variables and integer temporaries are
 * ptrdiff_t, the others float or double. */
static LLVMTypeRef var_type(Emit *e, int var) {
  int kind = e->k->kinds[var];
  return kind == 1 ? e->f32 : kind == 3 ? e->f64 : e->i64;
}

/* --- expressions ------------------------------------------------------ */

static LLVMBasicBlockRef block(Emit *e, const char *name) {
  return LLVMAppendBasicBlockInContext(e->cx, e->fn, name);
}

static LLVMValueRef expr(Emit *e, const Expr *x);

static LLVMValueRef call(Emit *e, LLVMValueRef fn, LLVMTypeRef type,
                         LLVMValueRef *args, unsigned n) {
  LLVMValueRef c = LLVMBuildCall2(e->b, type, fn, args, n, "");
  LLVMAddCallSiteAttribute(c, LLVMAttributeFunctionIndex, e->nobuiltin);
  return c;
}

/* The index of a local array among its kernel's. */
static int local_index(Emit *e, const Buffer *b) {
  for (int i = 0; i < e->k->locals.n; i++)
    if (e->k->locals.v[i] == b)
      return i;
  return -1;
}

static LLVMValueRef address(Emit *e, const Buffer *b, const Expr *index) {
  const Buffer *r = root(b);
  LLVMValueRef i = to_int(e, expr(e, index));
  if (r->kind == BUF_LOCAL) {
    LLVMValueRef at[2] = {ci64(e, 0), i};
    LLVMTypeRef t = LLVMArrayType(e->f32, (unsigned)r->size);
    return LLVMBuildInBoundsGEP2(e->b, t, e->locals[local_index(e, r)], at, 2,
                                 "");
  }
  return LLVMBuildInBoundsGEP2(e->b, elem_type(e, r), e->args[e->slot[r->id]],
                               &i, 1, "");
}

/* glibc's fmaxf (x86-64: maxss, then the NaN cases): x > y ? x : y, but x
 * when y is NaN. fminf likewise with <. */
static LLVMValueRef fminmax(Emit *e, int max, LLVMValueRef x, LLVMValueRef y) {
  LLVMValueRef gt =
      LLVMBuildFCmp(e->b, max ? LLVMRealOGT : LLVMRealOLT, x, y, "");
  LLVMValueRef ynan = LLVMBuildFCmp(e->b, LLVMRealUNO, y, y, "");
  return LLVMBuildSelect(e->b, gt, x, LLVMBuildSelect(e->b, ynan, x, y, ""),
                         max ? "fmaxf" : "fminf");
}

static LLVMValueRef binary(Emit *e, const Expr *x) {
  LLVMValueRef a = expr(e, x->a), b = expr(e, x->b);
  int r = rank(e, a) > rank(e, b) ? rank(e, a) : rank(e, b);
  if (r > 0 && (x->k == X_MAX || x->k == X_MIN || x->k == X_POW))
    r = 1; /* fmaxf, fminf, powf: float parameters */
  if (r > 0) {
    a = convert(e, a, rank_type(e, r));
    b = convert(e, b, rank_type(e, r));
    switch (x->k) {
    case X_ADD: return LLVMBuildFAdd(e->b, a, b, "");
    case X_SUB: return LLVMBuildFSub(e->b, a, b, "");
    case X_MUL: return LLVMBuildFMul(e->b, a, b, "");
    case X_DIV: return LLVMBuildFDiv(e->b, a, b, "");
    case X_MOD: return LLVMBuildFRem(e->b, a, b, "");
    case X_MAX: return fminmax(e, 1, a, b);
    case X_MIN: return fminmax(e, 0, a, b);
    case X_LT: return LLVMBuildFCmp(e->b, LLVMRealOLT, a, b, "");
    case X_LE: return LLVMBuildFCmp(e->b, LLVMRealOLE, a, b, "");
    case X_EQ: return LLVMBuildFCmp(e->b, LLVMRealOEQ, a, b, "");
    case X_POW: {
      LLVMValueRef args[2] = {a, b};
      return call(e, e->powf_, e->bin, args, 2);
    }
    default: break;
    }
  } else {
    a = to_int(e, a);
    b = to_int(e, b);
    switch (x->k) {
    case X_ADD: return LLVMBuildNSWAdd(e->b, a, b, "");
    case X_SUB: return LLVMBuildNSWSub(e->b, a, b, "");
    case X_MUL: return LLVMBuildNSWMul(e->b, a, b, "");
    case X_DIV: return LLVMBuildSDiv(e->b, a, b, "");
    case X_MOD: return LLVMBuildSRem(e->b, a, b, "");
    case X_MAX:
      return LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSGT, a, b, ""), a,
                             b, "");
    case X_MIN:
      return LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, a, b, ""), a,
                             b, "");
    case X_LT: return LLVMBuildICmp(e->b, LLVMIntSLT, a, b, "");
    case X_LE: return LLVMBuildICmp(e->b, LLVMIntSLE, a, b, "");
    case X_EQ: return LLVMBuildICmp(e->b, LLVMIntEQ, a, b, "");
    case X_POW: { /* C converts both to float for powf */
      LLVMValueRef args[2] = {to_float(e, a), to_float(e, b)};
      return call(e, e->powf_, e->bin, args, 2);
    }
    default: break;
    }
  }
  diag_internal(e->d, "emit_llvm: %d is not a binary operator", (int)x->k);
  e->bad = 1;
  return LLVMGetUndef(e->f32);
}

/* C's a && b: b only when a holds. */
static LLVMValueRef conjunction(Emit *e, const Expr *x) {
  LLVMValueRef a = to_bool(e, expr(e, x->a));
  LLVMBasicBlockRef from = LLVMGetInsertBlock(e->b);
  LLVMBasicBlockRef rhs = block(e, "and.rhs"), end = block(e, "and.end");
  LLVMBuildCondBr(e->b, a, rhs, end);
  LLVMPositionBuilderAtEnd(e->b, rhs);
  LLVMValueRef b = to_bool(e, expr(e, x->b));
  LLVMBasicBlockRef rhs_end = LLVMGetInsertBlock(e->b);
  LLVMBuildBr(e->b, end);
  LLVMPositionBuilderAtEnd(e->b, end);
  LLVMValueRef phi = LLVMBuildPhi(e->b, e->i1, "and");
  LLVMValueRef vals[2] = {LLVMConstInt(e->i1, 0, 0), b};
  LLVMBasicBlockRef from_blocks[2] = {from, rhs_end};
  LLVMAddIncoming(phi, vals, from_blocks, 2);
  return phi;
}

/* C's c ? a : b: only the chosen operand is evaluated; the result has the
 * operands' common type. */
static LLVMValueRef conditional(Emit *e, const Expr *x) {
  LLVMValueRef c = to_bool(e, expr(e, x->a));
  LLVMBasicBlockRef yes = block(e, "sel.true"), no = block(e, "sel.false"),
                    end = block(e, "sel.end");
  LLVMBuildCondBr(e->b, c, yes, no);
  LLVMPositionBuilderAtEnd(e->b, yes);
  LLVMValueRef a = expr(e, x->b);
  LLVMBasicBlockRef yes_end = LLVMGetInsertBlock(e->b);
  LLVMValueRef yes_br = LLVMBuildBr(e->b, end);
  LLVMPositionBuilderAtEnd(e->b, no);
  LLVMValueRef b = expr(e, x->c);
  LLVMBasicBlockRef no_end = LLVMGetInsertBlock(e->b);
  LLVMValueRef no_br = LLVMBuildBr(e->b, end);
  int r = rank(e, a) > rank(e, b) ? rank(e, a) : rank(e, b);
  LLVMTypeRef t = rank_type(e, r);
  LLVMPositionBuilderBefore(e->b, yes_br);
  a = convert(e, a, t);
  LLVMPositionBuilderBefore(e->b, no_br);
  b = convert(e, b, t);
  LLVMPositionBuilderAtEnd(e->b, end);
  LLVMValueRef phi = LLVMBuildPhi(e->b, t, "sel");
  LLVMValueRef vals[2] = {a, b};
  LLVMBasicBlockRef from[2] = {yes_end, no_end};
  LLVMAddIncoming(phi, vals, from, 2);
  return phi;
}

static LLVMValueRef cu64(Emit *e, uint64_t v) {
  return LLVMConstInt(e->i64, v, 0);
}

/* emit_c's uniform(s, layer, key): splitmix64 of the seed, the draw, the
 * layer and the key; 24 bits as a float in [0, 1). */
static LLVMValueRef uniform(Emit *e, int64_t layer, LLVMValueRef key) {
  LLVMBuilderRef b = e->b;
  LLVMValueRef seed = state_field(e, e->s, SF_SEED);
  LLVMValueRef draws = state_field(e, e->s, SF_DRAWS);
  LLVMValueRef z = LLVMBuildXor(
      b, seed, LLVMBuildMul(b, draws, cu64(e, 0x9e3779b97f4a7c15u), ""), "");
  z = LLVMBuildXor(b, z, cu64(e, (uint64_t)layer << 48), "");
  z = LLVMBuildXor(b, z, key, "");
  z = LLVMBuildXor(b, z, LLVMBuildLShr(b, z, cu64(e, 30), ""), "");
  z = LLVMBuildMul(b, z, cu64(e, 0xbf58476d1ce4e5b9u), "");
  z = LLVMBuildXor(b, z, LLVMBuildLShr(b, z, cu64(e, 27), ""), "");
  z = LLVMBuildMul(b, z, cu64(e, 0x94d049bb133111ebu), "");
  z = LLVMBuildXor(b, z, LLVMBuildLShr(b, z, cu64(e, 31), ""), "");
  LLVMValueRef u =
      LLVMBuildUIToFP(b, LLVMBuildLShr(b, z, cu64(e, 40), ""), e->f32, "");
  return LLVMBuildFMul(b, u, LLVMConstReal(e->f32, 1.0 / 16777216.0), "rand");
}

static LLVMValueRef expr(Emit *e, const Expr *x) {
  switch (x->k) {
  case X_INT: return ci64(e, x->i);
  case X_FLOAT: return LLVMConstReal(e->f32, (double)c_float(x->f));
  case X_VAR:
    return LLVMBuildLoad2(e->b, e->i64, e->vars[x->var], e->k->vars[x->var]);
  case X_TEMP:
    return LLVMBuildLoad2(e->b, var_type(e, x->var), e->vars[x->var],
                          e->k->vars[x->var]);
  case X_N: return e->count;
  case X_LOAD: {
    const Buffer *r = root(x->buf);
    return LLVMBuildLoad2(e->b, elem_type(e, r), address(e, x->buf, x->a),
                          x->buf->name);
  }
  case X_ADD:
  case X_SUB:
  case X_MUL:
  case X_DIV:
  case X_MOD:
  case X_MAX:
  case X_MIN:
  case X_POW:
  case X_LT:
  case X_LE:
  case X_EQ: return binary(e, x);
  case X_AND: return conjunction(e, x);
  case X_SELECT: return conditional(e, x);
  case X_NEG: {
    LLVMValueRef a = expr(e, x->a);
    if (rank(e, a) > 0)
      return LLVMBuildFNeg(e->b, a, "");
    return LLVMBuildNSWNeg(e->b, to_int(e, a), "");
  }
  case X_EXP:
  case X_LOG:
  case X_SQRT: {
    LLVMValueRef a = to_float(e, expr(e, x->a));
    LLVMValueRef fn = x->k == X_EXP   ? e->expf_
                      : x->k == X_LOG ? e->logf_
                                      : e->sqrt_;
    if (x->k == X_SQRT) /* an intrinsic, not a library call */
      return LLVMBuildCall2(e->b, e->un, fn, &a, 1, "");
    return call(e, fn, e->un, &a, 1);
  }
  case X_TOFLOAT: return to_float(e, expr(e, x->a));
  case X_FMA: {
    /* madd() in the generated C: fused where the machine has it */
    LLVMValueRef args[3] = {to_float(e, expr(e, x->a)),
                            to_float(e, expr(e, x->b)),
                            to_float(e, expr(e, x->c))};
    if (e->has_fma)
      return LLVMBuildCall2(e->b, e->tri, e->fma_, args, 3, "");
    return LLVMBuildFAdd(e->b, LLVMBuildFMul(e->b, args[0], args[1], ""),
                         args[2], "");
  }
  case X_RAND: return uniform(e, x->i, to_int(e, expr(e, x->a)));
  case X_LR: return state_field(e, e->s, SF_LR);
  case X_STEP: return state_field(e, e->s, SF_STEP);
  }
  diag_internal(e->d, "emit_llvm: no code for expression kind %d", (int)x->k);
  e->bad = 1;
  return x->isint ? ci64(e, 0) : LLVMConstReal(e->f32, 0);
}

/* --- statements ------------------------------------------------------- */

static void stmts(Emit *e, const StmtVec *body);
static void parallel_loop(Emit *e, const Stmt *s);

/* for var in [lo, hi): s's body. */
static void loop(Emit *e, const Stmt *s, LLVMValueRef lo, LLVMValueRef hi) {
  const char *name = e->k->vars[s->var];
  LLVMValueRef var = e->vars[s->var];
  LLVMBuildStore(e->b, lo, var);
  LLVMBasicBlockRef head = block(e, name),
                    body = block(e, arena_printf(e->a, "%s.body", name)),
                    end = block(e, arena_printf(e->a, "%s.end", name));
  LLVMBuildBr(e->b, head);
  LLVMPositionBuilderAtEnd(e->b, head);
  LLVMValueRef i = LLVMBuildLoad2(e->b, e->i64, var, name);
  LLVMBuildCondBr(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, i, hi, ""), body, end);
  LLVMPositionBuilderAtEnd(e->b, body);
  stmts(e, &s->body);
  i = LLVMBuildLoad2(e->b, e->i64, var, name);
  LLVMBuildStore(e->b, LLVMBuildNSWAdd(e->b, i, ci64(e, 1), ""), var);
  LLVMBuildBr(e->b, head);
  LLVMMoveBasicBlockAfter(end, LLVMGetInsertBlock(e->b));
  LLVMPositionBuilderAtEnd(e->b, end);
}

static void stmt(Emit *e, const Stmt *s) {
  switch (s->k) {
  case S_FOR:
    if (s->parallel)
      parallel_loop(e, s);
    else
      loop(e, s, ci64(e, 0), s->extent < 0 ? e->count : ci64(e, s->extent));
    break;
  case S_IF: {
    LLVMValueRef c = to_bool(e, expr(e, s->value));
    LLVMBasicBlockRef then = block(e, "if"), end = block(e, "endif");
    LLVMBuildCondBr(e->b, c, then, end);
    LLVMPositionBuilderAtEnd(e->b, then);
    stmts(e, &s->body);
    LLVMBuildBr(e->b, end);
    LLVMMoveBasicBlockAfter(end, LLVMGetInsertBlock(e->b));
    LLVMPositionBuilderAtEnd(e->b, end);
    break;
  }
  case S_STORE:
  case S_ACCUM: {
    const Buffer *r = root(s->buf);
    LLVMTypeRef t = elem_type(e, r);
    LLVMValueRef at = address(e, s->buf, s->index);
    LLVMValueRef v = expr(e, s->value);
    if (s->k == S_ACCUM) { /* buf[i] = buf[i] + v, in C's types */
      LLVMValueRef old = LLVMBuildLoad2(e->b, t, at, s->buf->name);
      int wide = rank(e, old) > rank(e, v) ? rank(e, old) : rank(e, v);
      LLVMTypeRef rt = rank_type(e, wide);
      v = wide ? LLVMBuildFAdd(e->b, convert(e, old, rt), convert(e, v, rt), "")
               : LLVMBuildNSWAdd(e->b, old, to_int(e, v), "");
    }
    LLVMBuildStore(e->b, convert(e, v, t), at);
    break;
  }
  case S_LET:
  case S_SET: {
    LLVMBuildStore(e->b, convert(e, expr(e, s->value), var_type(e, s->var)),
                   e->vars[s->var]);
    break;
  }
  case S_PREFETCH: { /* a read, into L2 (locality 2), of data */
    LLVMValueRef args[4] = {
        LLVMBuildBitCast(e->b, address(e, s->buf, s->index), e->i8p, ""),
        LLVMConstInt(e->i32, 0, 0), LLVMConstInt(e->i32, 2, 0),
        LLVMConstInt(e->i32, 1, 0)};
    LLVMBuildCall2(e->b, e->prefetch_type, e->prefetch_, args, 4, "");
    break;
  }
  case S_FAIL: {
    LLVMValueRef c = to_bool(e, expr(e, s->value));
    LLVMBasicBlockRef fail = block(e, "fail"), ok = block(e, "ok");
    LLVMBuildCondBr(e->b, c, fail, ok);
    LLVMPositionBuilderAtEnd(e->b, fail);
    LLVMBuildRet(e->b, LLVMConstInt(e->i32, (unsigned long long)-1, 1));
    LLVMPositionBuilderAtEnd(e->b, ok);
    break;
  }
  }
}

static void stmts(Emit *e, const StmtVec *body) {
  for (int i = 0; i < body->n; i++)
    stmt(e, body->v[i]);
}

/* --- kernels ------------------------------------------------------------ */

static void use(Emit *e, const Buffer *b) {
  const Buffer *r = root(b);
  if (r->kind == BUF_LOCAL) /* not an argument: the kernel's own */
    return;
  if (e->slot[r->id] < 0) {
    e->slot[r->id] = e->nroots;
    e->roots[e->nroots++] = r;
  }
}

static void find_expr(Emit *e, const Expr *x) {
  if (!x)
    return;
  if (x->k == X_LOAD)
    use(e, x->buf);
  find_expr(e, x->a);
  find_expr(e, x->b);
  find_expr(e, x->c);
}

/* Numbers the roots of the kernel's buffers in order of first use. */
static void find_buffers(Emit *e, const StmtVec *body) {
  for (int i = 0; i < body->n; i++) {
    const Stmt *s = body->v[i];
    if (s->buf)
      use(e, s->buf);
    find_expr(e, s->index);
    find_expr(e, s->value);
    find_buffers(e, &s->body);
  }
}

/* The kernel's IR with buffers as slots: kernels with the same key are
 * the same function of their buffers. */
static void key_expr(Emit *e, FILE *f, const Expr *x) {
  if (!x) {
    fputc('.', f);
    return;
  }
  fprintf(f, "(%d %d %" PRId64 " %a %d", (int)x->k, x->isint, x->i, x->f,
          x->var);
  if (x->buf && x->buf->kind == BUF_LOCAL)
    fprintf(f, " l%d", local_index(e, x->buf));
  else if (x->buf)
    fprintf(f, " b%d", e->slot[root(x->buf)->id]);
  key_expr(e, f, x->a);
  key_expr(e, f, x->b);
  key_expr(e, f, x->c);
  fputc(')', f);
}

static void key_stmts(Emit *e, FILE *f, const StmtVec *body) {
  for (int i = 0; i < body->n; i++) {
    const Stmt *s = body->v[i];
    fprintf(f, "[%d %d %" PRId64, (int)s->k, s->var, s->extent);
    if (s->buf && s->buf->kind == BUF_LOCAL)
      fprintf(f, " l%d", local_index(e, s->buf));
    else if (s->buf)
      fprintf(f, " b%d", e->slot[root(s->buf)->id]);
    key_expr(e, f, s->index);
    key_expr(e, f, s->value);
    key_stmts(e, f, &s->body);
    fputc(']', f);
  }
}

/* Whether two of the kernel's buffers can overlap: roots in the same area
 * whose planned ranges intersect. The caller's arrays are disjoint. */
static int overlapping(Emit *e) {
  for (int i = 0; i < e->nroots; i++)
    for (int j = i + 1; j < e->nroots; j++) {
      const Buffer *a = e->roots[i], *b = e->roots[j];
      if (a->kind != b->kind || a->kind == BUF_INPUT || a->kind == BUF_OUTPUT)
        continue;
      if (a->offset < b->offset + b->size && b->offset < a->offset + a->size)
        return 1;
    }
  return 0;
}

static void add_attr(Emit *e, LLVMValueRef fn, unsigned index,
                     const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(fn, index, LLVMCreateEnumAttribute(e->cx, kind, 0));
}

static void str_attr(Emit *e, LLVMValueRef fn, const char *key,
                     const char *value) {
  LLVMAddAttributeAtIndex(
      fn, LLVMAttributeFunctionIndex,
      LLVMCreateStringAttribute(e->cx, key, (unsigned)strlen(key), value,
                                (unsigned)strlen(value)));
}

static void target_attrs(Emit *e, LLVMValueRef fn) {
  str_attr(e, fn, "target-cpu", e->cpu);
  str_attr(e, fn, "target-features", e->features);
  /* LLVM's tuning for AVX-512 processors keeps vectors at 256 bits, so
   * a tile of 4 x 16 lanes would take 8 registers a position and spill */
  if (e->p->tile == TARGET_AVX512)
    str_attr(e, fn, "prefer-vector-width", "512");
  add_attr(e, fn, LLVMAttributeFunctionIndex, "nounwind");
}

/* A kernel's size after LLVM fully unrolls its short constant loops (the
 * accumulator tiles, not the loops around them): roughly what optimizing
 * it costs. *flat: the statements hold no loop that stays a loop. */
static int64_t expr_size(const Expr *x) {
  return x ? 1 + expr_size(x->a) + expr_size(x->b) + expr_size(x->c) : 0;
}

static int64_t stmts_size(const StmtVec *body, int *flat) {
  int64_t n = 0;
  *flat = 1;
  for (int i = 0; i < body->n; i++) {
    const Stmt *s = body->v[i];
    int inner_flat;
    int64_t inner = stmts_size(&s->body, &inner_flat);
    if (s->k == S_FOR && inner_flat && s->extent > 0 && s->extent <= 32 &&
        inner * s->extent <= 2048)
      inner *= s->extent; /* unrolled */
    else if (s->k == S_FOR)
      *flat = 0;
    *flat &= inner_flat;
    /* a branch costs more than its size: blocks for every pass to walk */
    n += (s->k == S_IF ? 8 : 1) + expr_size(s->index) + expr_size(s->value) +
         inner;
  }
  return n;
}

/* The part a new kernel function goes to: the smallest so far. Every
 * module of a split program makes the same choices in the same order. */
static int choose_part(Emit *e, const Kernel *k) {
  int best = 0;
  for (int i = 1; i < e->nparts; i++)
    if (e->load[i] < e->load[best])
      best = i;
  int flat;
  e->load[best] += stmts_size(&k->body, &flat);
  return best;
}

/* The kernel's temporaries and local arrays, on the stack of the function
 * being built: each kernel function, and each range of a parallel loop,
 * has its own. */
static void frame(Emit *e) {
  const Kernel *k = e->k;
  e->vars = arena_alloc(e->a, sizeof *e->vars * (size_t)(k->nvars + 1));
  for (int i = 0; i < k->nvars; i++)
    e->vars[i] = k->kinds[i] == 4
                     ? NULL /* a local array's name */
                     : LLVMBuildAlloca(e->b, var_type(e, i), k->vars[i]);
  e->locals = arena_alloc(e->a, sizeof *e->locals * (size_t)(k->locals.n + 1));
  for (int i = 0; i < k->locals.n; i++) {
    const Buffer *l = k->locals.v[i];
    e->locals[i] = LLVMBuildAlloca(
        e->b, LLVMArrayType(e->f32, (unsigned)l->size), l->name);
  }
}

/* int32_t kernel(int64_t count, JitState *s, T *buf0, T *buf1, ...):
 * returns 0, or -1 when an S_FAIL fires. In a split program, the kernels
 * of other parts are only declared. */
static int kernel_function(Emit *e, const Kernel *k) {
  char *key = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&key, &len);
  int noalias = !overlapping(e);
  fprintf(f, "%d%d:", noalias, e->count_is_1);
  for (int i = 0; i < e->nroots; i++)
    fputc(is_int_buffer(e->roots[i]) ? 'i' : 'f', f);
  for (int i = 0; i < k->nvars; i++)
    fputc('0' + k->kinds[i], f);
  for (int i = 0; i < k->locals.n; i++)
    fprintf(f, "l%" PRId64, k->locals.v[i]->size);
  key_stmts(e, f, &k->body);
  fclose(f);
  for (int i = 0; i < e->built.n; i++)
    if (e->built.v[i].len == len && memcmp(e->built.v[i].key, key, len) == 0) {
      free(key);
      return i;
    }
  Built nb = {arena_strndup(e->a, key, len), len, NULL, NULL};
  free(key);

  int n = 2 + e->nroots;
  LLVMTypeRef *params = arena_alloc(e->a, sizeof *params * (size_t)n);
  params[0] = e->i64;
  params[1] = e->statep;
  for (int i = 0; i < e->nroots; i++)
    params[2 + i] = LLVMPointerType(elem_type(e, e->roots[i]), 0);
  nb.type = LLVMFunctionType(e->i32, params, (unsigned)n, 0);
  char *name = arena_printf(e->a, "%s.%s", e->p->g->name, k->name);
  nb.fn = e->fn = LLVMAddFunction(e->m, name, nb.type);
  int here = choose_part(e, k) == e->part;
  if (e->nparts == 1) /* else part 0 calls it by name */
    LLVMSetLinkage(e->fn, LLVMInternalLinkage);
  target_attrs(e, e->fn);
  /* one function per kernel keeps each optimization problem small */
  add_attr(e, e->fn, LLVMAttributeFunctionIndex, "noinline");
  e->count = LLVMGetParam(e->fn, 0);
  LLVMSetValueName2(e->count, "count", 5);
  if (e->count_is_1)
    e->count = ci64(e, 1);
  e->s = LLVMGetParam(e->fn, 1);
  LLVMSetValueName2(e->s, "s", 1);
  for (int i = 0; i < e->nroots; i++) {
    e->args[i] = LLVMGetParam(e->fn, (unsigned)(2 + i));
    LLVMSetValueName2(e->args[i], e->roots[i]->name, strlen(e->roots[i]->name));
    add_attr(e, e->fn, (unsigned)(3 + i), "nocapture");
    if (noalias)
      add_attr(e, e->fn, (unsigned)(3 + i), "noalias");
  }
  if (!here) {
    vec_push(e->a, e->built, nb);
    return e->built.n - 1;
  }

  LLVMPositionBuilderAtEnd(e->b, block(e, "entry"));
  frame(e);
  stmts(e, &k->body);
  LLVMBuildRet(e->b, LLVMConstInt(e->i32, 0, 0));
  vec_push(e->a, e->built, nb);
  return e->built.n - 1;
}

/* A parallel loop (Stmt.parallel) becomes two functions:
 *   i32 K.par(count, s, buffers..., i64 lo, i64 hi): the loop over
 *       [lo, hi), with the kernel's arguments and their noalias;
 *   void K.range(const i64 *args, i64 lo, i64 hi): calls it with the
 *       count, state and buffers args holds;
 * and the kernel calls threads_parallel_for(K.range, args, extent). Every
 * range has its own temporaries and accumulators. */
static int can_fail(const StmtVec *body) {
  for (int i = 0; i < body->n; i++)
    if (body->v[i]->k == S_FAIL || can_fail(&body->v[i]->body))
      return 1;
  return 0;
}

static void parallel_loop(Emit *e, const Stmt *s) {
  const Kernel *k = e->k;
  if (can_fail(&s->body)) { /* a range has no way to report it */
    diag_internal(e->d, "kernel %s: a parallel loop that can fail", k->name);
    e->bad = 1;
    return;
  }
  LLVMValueRef fn = e->fn, count = e->count, st = e->s;
  LLVMValueRef *vars = e->vars, *locals = e->locals;
  LLVMValueRef *args =
      arena_alloc(e->a, sizeof *args * (size_t)(e->nroots + 1));
  memcpy(args, e->args, sizeof *args * (size_t)e->nroots);
  LLVMBasicBlockRef here = LLVMGetInsertBlock(e->b);
  const char *name = LLVMGetValueName(fn);
  /* K.par */
  int n = 4 + e->nroots;
  LLVMTypeRef *params = arena_alloc(e->a, sizeof *params * (size_t)n);
  params[0] = e->i64;
  params[1] = e->statep;
  for (int i = 0; i < e->nroots; i++)
    params[2 + i] = LLVMPointerType(elem_type(e, e->roots[i]), 0);
  params[n - 2] = params[n - 1] = e->i64;
  LLVMTypeRef par_type = LLVMFunctionType(e->i32, params, (unsigned)n, 0);
  LLVMValueRef par =
      LLVMAddFunction(e->m, arena_printf(e->a, "%s.par", name), par_type);
  LLVMSetLinkage(par, LLVMInternalLinkage);
  target_attrs(e, par);
  int noalias = !overlapping(e);
  for (int i = 0; i < e->nroots; i++) {
    add_attr(e, par, (unsigned)(3 + i), "nocapture");
    if (noalias)
      add_attr(e, par, (unsigned)(3 + i), "noalias");
  }
  e->fn = par;
  LLVMPositionBuilderAtEnd(e->b, block(e, "entry"));
  e->count = e->count_is_1 ? ci64(e, 1) : LLVMGetParam(par, 0);
  e->s = LLVMGetParam(par, 1);
  for (int i = 0; i < e->nroots; i++)
    e->args[i] = LLVMGetParam(par, (unsigned)(2 + i));
  frame(e);
  loop(e, s, LLVMGetParam(par, (unsigned)(n - 2)),
       LLVMGetParam(par, (unsigned)(n - 1)));
  LLVMBuildRet(e->b, LLVMConstInt(e->i32, 0, 0));
  /* K.range */
  LLVMValueRef range =
      LLVMAddFunction(e->m, arena_printf(e->a, "%s.range", name), e->body_type);
  LLVMSetLinkage(range, LLVMInternalLinkage);
  target_attrs(e, range);
  LLVMPositionBuilderAtEnd(
      e->b, LLVMAppendBasicBlockInContext(e->cx, range, "entry"));
  LLVMValueRef a = LLVMGetParam(range, 0);
  LLVMValueRef *call = arena_alloc(e->a, sizeof *call * (size_t)n);
  for (int j = 0; j < 2 + e->nroots; j++) {
    LLVMValueRef at = ci64(e, j);
    LLVMValueRef v = LLVMBuildLoad2(
        e->b, e->i64, LLVMBuildInBoundsGEP2(e->b, e->i64, a, &at, 1, ""), "");
    call[j] = j == 0 ? v : LLVMBuildIntToPtr(e->b, v, params[j], "");
  }
  call[n - 2] = LLVMGetParam(range, 1);
  call[n - 1] = LLVMGetParam(range, 2);
  LLVMBuildCall2(e->b, par_type, par, call, (unsigned)n, "");
  LLVMBuildRetVoid(e->b);
  /* back in the kernel: the arguments, then the call */
  e->fn = fn;
  e->count = count;
  e->s = st;
  e->vars = vars;
  e->locals = locals;
  memcpy(e->args, args, sizeof *args * (size_t)e->nroots);
  LLVMPositionBuilderAtEnd(e->b, here);
  LLVMValueRef arr = LLVMBuildAlloca(
      e->b, LLVMArrayType(e->i64, (unsigned)(2 + e->nroots)), "args");
  for (int j = 0; j < 2 + e->nroots; j++) {
    LLVMValueRef idx[2] = {ci64(e, 0), ci64(e, j)};
    LLVMValueRef v = j == 0 ? count
                     : j == 1
                         ? LLVMBuildPtrToInt(e->b, st, e->i64, "")
                         : LLVMBuildPtrToInt(e->b, args[j - 2], e->i64, "");
    LLVMBuildStore(e->b, v,
                   LLVMBuildInBoundsGEP2(
                       e->b, LLVMArrayType(e->i64, (unsigned)(2 + e->nroots)),
                       arr, idx, 2, ""));
  }
  LLVMValueRef argv[3] = {
      range, LLVMBuildBitCast(e->b, arr, LLVMPointerType(e->i64, 0), ""),
      s->extent < 0 ? count : ci64(e, s->extent)};
  LLVMBuildCall2(e->b, e->parallel_type, e->parallel_for, argv, 3, "");
}

/* --- the module ---------------------------------------------------------- */

static LLVMValueRef libm(Emit *e, const char *name, LLVMTypeRef type) {
  LLVMValueRef fn = LLVMAddFunction(e->m, name, type);
  add_attr(e, fn, LLVMAttributeFunctionIndex, "nounwind");
  add_attr(e, fn, LLVMAttributeFunctionIndex, "willreturn");
  /* errno aside, which the model never reads */
  add_attr(e, fn, LLVMAttributeFunctionIndex, "readnone");
  return fn;
}

static int index_of(const BufferVec *v, const Buffer *b) {
  for (int i = 0; i < v->n; i++)
    if (root(v->v[i]) == b)
      return i;
  return -1;
}

/* The address of a root buffer, in an entry point: in one of the state's
 * areas (loaded once, by JitState field), or one of the caller's arrays. */
static LLVMValueRef base(Emit *e, const Buffer *r, const LLVMValueRef *areas,
                         LLVMValueRef in, LLVMValueRef out) {
  LLVMTypeRef pt = LLVMPointerType(elem_type(e, r), 0);
  if (r->kind != BUF_INPUT && r->kind != BUF_OUTPUT) {
    unsigned field = r->kind == BUF_F32     ? SF_F32
                     : r->kind == BUF_I64   ? SF_I64
                     : r->kind == BUF_ARENA ? SF_ARENA
                     : r->kind == BUF_GRAD  ? SF_G32
                     : r->kind == BUF_M     ? SF_M32
                     : r->kind == BUF_V     ? SF_V32
                                            : SF_PACKED;
    LLVMValueRef area = areas[field];
    LLVMValueRef off = ci64(e, r->offset);
    return LLVMBuildInBoundsGEP2(e->b, elem_type(e, r), area, &off, 1, r->name);
  }
  const BufferVec *list = r->kind == BUF_INPUT ? &e->p->inputs : &e->p->outputs;
  int i = index_of(list, r);
  if (i < 0) {
    diag_internal(e->d, "emit_llvm: buffer %s is not among the %s", r->name,
                  r->kind == BUF_INPUT ? "inputs" : "outputs");
    e->bad = 1;
    return LLVMConstNull(pt);
  }
  LLVMValueRef idx = ci64(e, i);
  LLVMValueRef at = LLVMBuildInBoundsGEP2(
      e->b, e->i8p, r->kind == BUF_INPUT ? in : out, &idx, 1, "");
  LLVMValueRef p = LLVMBuildLoad2(e->b, e->i8p, at, "");
  return LLVMBuildBitCast(e->b, p, pt, r->name);
}

/* s->field += 1 */
static void bump(Emit *e, LLVMValueRef s, unsigned field) {
  LLVMValueRef at = LLVMBuildStructGEP2(e->b, e->state, s, field, "");
  LLVMValueRef v = LLVMBuildLoad2(e->b, e->i64, at, "");
  LLVMBuildStore(e->b, LLVMBuildAdd(e->b, v, ci64(e, 1), ""), at);
}

typedef enum Entry { ENTRY_FORWARD, ENTRY_BACKWARD, ENTRY_UPDATE } Entry;

/* An entry point, int32_t NAME(JitState *s, int64_t count, void *const
 * *inputs, void *const *outputs), that calls the kernels in order: what
 * emit_c's NAME_forward, NAME_backward (which counts the draw first) and
 * NAME_update (the step first; its kernels see count 0) do. */
static void entry_point(Emit *e, const char *name, const KernelVec *ks,
                        Entry what) {
  const Program *p = e->p;
  int *fn = arena_alloc(e->a, sizeof(int) * (size_t)(ks->n + 1));
  const Buffer ***roots =
      arena_alloc(e->a, sizeof(Buffer **) * (size_t)(ks->n + 1));
  int *nroots = arena_alloc(e->a, sizeof(int) * (size_t)(ks->n + 1));
  e->count_is_1 = p->batch == 1 && what != ENTRY_UPDATE;
  for (int i = 0; i < ks->n && !e->bad; i++) {
    e->k = ks->v[i];
    e->nroots = 0;
    find_buffers(e, &e->k->body);
    fn[i] = kernel_function(e, e->k);
    nroots[i] = e->nroots;
    roots[i] = arena_alloc(e->a, sizeof(Buffer *) * (size_t)(e->nroots + 1));
    memcpy(roots[i], e->roots, sizeof(Buffer *) * (size_t)e->nroots);
    for (int j = 0; j < e->nroots; j++) /* unnumbered for the next kernel */
      e->slot[e->roots[j]->id] = -1;
  }
  if (e->bad || e->part != 0) /* the entry points are part 0's */
    return;

  LLVMTypeRef params[4] = {e->statep, e->i64, LLVMPointerType(e->i8p, 0),
                           LLVMPointerType(e->i8p, 0)};
  LLVMTypeRef type = LLVMFunctionType(e->i32, params, 4, 0);
  e->fn = LLVMAddFunction(e->m, name, type);
  target_attrs(e, e->fn);
  LLVMValueRef s = LLVMGetParam(e->fn, 0), count = LLVMGetParam(e->fn, 1);
  LLVMValueRef in = LLVMGetParam(e->fn, 2), out = LLVMGetParam(e->fn, 3);
  LLVMSetValueName2(s, "s", 1);
  LLVMSetValueName2(count, "count", 5);
  LLVMSetValueName2(in, "inputs", 6);
  LLVMSetValueName2(out, "outputs", 7);
  LLVMBasicBlockRef entry = block(e, "entry"), run = block(e, "run"),
                    fail = block(e, "fail");
  LLVMPositionBuilderAtEnd(e->b, entry);
  if (what == ENTRY_UPDATE) {
    count = ci64(e, 0);
    LLVMBuildBr(e->b, run);
  } else {
    LLVMValueRef low = LLVMBuildICmp(e->b, LLVMIntSLT, count, ci64(e, 1), "");
    LLVMValueRef high =
        LLVMBuildICmp(e->b, LLVMIntSGT, count, ci64(e, p->batch), "");
    LLVMBuildCondBr(e->b, LLVMBuildOr(e->b, low, high, ""), fail, run);
  }
  LLVMPositionBuilderAtEnd(e->b, fail);
  LLVMBuildRet(e->b, LLVMConstInt(e->i32, (unsigned long long)-1, 1));
  LLVMPositionBuilderAtEnd(e->b, run);
  if (what != ENTRY_FORWARD)
    bump(e, s, what == ENTRY_BACKWARD ? SF_DRAWS : SF_STEP);
  LLVMValueRef areas[SF_PACKED + 1];
  for (unsigned i = 0; i <= SF_PACKED; i++)
    areas[i] = state_field(e, s, i);
  for (int i = 0; i < ks->n; i++) {
    int n = 2 + nroots[i];
    LLVMValueRef *args = arena_alloc(e->a, sizeof *args * (size_t)n);
    args[0] = count;
    args[1] = s;
    for (int j = 0; j < nroots[i]; j++)
      args[2 + j] = base(e, roots[i][j], areas, in, out);
    const Built *b = &e->built.v[fn[i]];
    LLVMValueRef r =
        LLVMBuildCall2(e->b, b->type, b->fn, args, (unsigned)n, ks->v[i]->name);
    LLVMBasicBlockRef next = block(e, "next");
    LLVMBuildCondBr(
        e->b, LLVMBuildICmp(e->b, LLVMIntNE, r, LLVMConstInt(e->i32, 0, 0), ""),
        fail, next);
    LLVMPositionBuilderAtEnd(e->b, next);
  }
  LLVMBuildRet(e->b, LLVMConstInt(e->i32, 0, 0));
}

const char *emit_llvm_entry_name(Arena *a, const Program *p, int update) {
  return arena_printf(a, "%s_%s", p->g->name,
                      !p->train ? "forward"
                      : update  ? "update"
                                : "backward");
}

LLVMModuleRef emit_llvm(Diag *d, LLVMContextRef ctx, const Program *p,
                        LLVMTargetMachineRef tm) {
  return emit_llvm_part(d, ctx, p, tm, 0, 1);
}

LLVMModuleRef emit_llvm_part(Diag *d, LLVMContextRef ctx, const Program *p,
                             LLVMTargetMachineRef tm, int part, int nparts) {
  Emit E = {0}, *e = &E;
  e->part = part;
  e->nparts = nparts < 1                     ? 1
              : nparts > EMIT_LLVM_MAX_PARTS ? EMIT_LLVM_MAX_PARTS
                                             : nparts;
  e->d = d;
  e->a = p->a;
  e->p = p;
  e->cx = ctx;
  e->m = LLVMModuleCreateWithNameInContext(p->g->name, ctx);
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(e->m, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(e->m, layout);
  LLVMDisposeTargetData(layout);
  e->cpu = LLVMGetTargetMachineCPU(tm);
  e->features = LLVMGetTargetMachineFeatureString(tm);
  e->b = LLVMCreateBuilderInContext(ctx);
  e->f32 = LLVMFloatTypeInContext(ctx);
  e->f64 = LLVMDoubleTypeInContext(ctx);
  e->i64 = LLVMInt64TypeInContext(ctx);
  e->i32 = LLVMInt32TypeInContext(ctx);
  e->i1 = LLVMInt1TypeInContext(ctx);
  e->i8p = LLVMPointerType(LLVMInt8TypeInContext(ctx), 0);
  LLVMTypeRef f32p = LLVMPointerType(e->f32, 0);
  /* JitState, field by field */
  LLVMTypeRef fields[SF_COUNT] = {f32p,   LLVMPointerType(e->i64, 0),
                                  f32p,   f32p,
                                  f32p,   f32p,
                                  f32p,   e->f32,
                                  e->i64, e->i64,
                                  e->i64};
  e->state = LLVMStructCreateNamed(ctx, "JitState");
  LLVMStructSetBody(e->state, fields, SF_COUNT, 0);
  e->fields = fields;
  e->statep = LLVMPointerType(e->state, 0);
  LLVMTypeRef two[2] = {e->f32, e->f32};
  e->un = LLVMFunctionType(e->f32, two, 1, 0);
  e->bin = LLVMFunctionType(e->f32, two, 2, 0);
  e->expf_ = libm(e, "expf", e->un);
  e->logf_ = libm(e, "logf", e->un);
  e->powf_ = libm(e, "powf", e->bin);
  LLVMTypeRef i64p = LLVMPointerType(e->i64, 0);
  LLVMTypeRef range_params[3] = {i64p, e->i64, e->i64};
  e->body_type =
      LLVMFunctionType(LLVMVoidTypeInContext(ctx), range_params, 3, 0);
  LLVMTypeRef pf_params[3] = {LLVMPointerType(e->body_type, 0), i64p, e->i64};
  e->parallel_type =
      LLVMFunctionType(LLVMVoidTypeInContext(ctx), pf_params, 3, 0);
  e->parallel_for =
      LLVMAddFunction(e->m, "threads_parallel_for", e->parallel_type);
  add_attr(e, e->parallel_for, LLVMAttributeFunctionIndex, "nounwind");
  e->sqrt_ = LLVMGetIntrinsicDeclaration(
      e->m, LLVMLookupIntrinsicID("llvm.sqrt", 9), &e->f32, 1);
  LLVMTypeRef three[3] = {e->f32, e->f32, e->f32};
  e->tri = LLVMFunctionType(e->f32, three, 3, 0);
  e->fma_ = LLVMGetIntrinsicDeclaration(
      e->m, LLVMLookupIntrinsicID("llvm.fma", 8), &e->f32, 1);
  e->prefetch_ = LLVMGetIntrinsicDeclaration(
      e->m, LLVMLookupIntrinsicID("llvm.prefetch", 13), &e->i8p, 1);
  LLVMTypeRef pf_args[4] = {e->i8p, e->i32, e->i32, e->i32};
  e->prefetch_type =
      LLVMFunctionType(LLVMVoidTypeInContext(ctx), pf_args, 4, 0);
  e->has_fma = has_feature(e->features, "fma");
  e->nobuiltin = LLVMCreateEnumAttribute(
      ctx, LLVMGetEnumAttributeKindForName("nobuiltin", 9), 0);
  e->slot = arena_alloc(p->a, sizeof(int) * (size_t)(p->bufs.n + 1));
  for (int i = 0; i < p->bufs.n; i++)
    e->slot[i] = -1;
  e->roots = arena_alloc(p->a, sizeof(Buffer *) * (size_t)(p->bufs.n + 1));
  e->args = arena_alloc(p->a, sizeof(LLVMValueRef) * (size_t)(p->bufs.n + 1));

  entry_point(e, emit_llvm_entry_name(e->a, p, 0), &p->kernels,
              p->train ? ENTRY_BACKWARD : ENTRY_FORWARD);
  if (p->train && !e->bad)
    entry_point(e, emit_llvm_entry_name(e->a, p, 1), &p->update, ENTRY_UPDATE);
  LLVMDisposeBuilder(e->b);
  LLVMDisposeMessage(e->cpu);
  LLVMDisposeMessage(e->features);
  if (e->bad) {
    LLVMDisposeModule(e->m);
    return NULL;
  }
  char *msg = NULL;
  if (LLVMVerifyModule(e->m, LLVMReturnStatusAction, &msg)) {
    diag_internal(d, "emit_llvm built an invalid module: %s", msg);
    LLVMDisposeMessage(msg);
    LLVMDisposeModule(e->m);
    return NULL;
  }
  LLVMDisposeMessage(msg);
  return e->m;
}

/* Level 2, what the JIT runs: LLVM 14's default<O2> pipeline as `opt
 * -passes='default<O2>' -print-pipeline-passes` prints it, with one change:
 * the late loop-unroll makes no partial or runtime unrolling. Full
 * unrolling of small constant loops (a 3x3 window) stays. On ResNet-50 the
 * partial unrolling tripled compile time for no measurable speed: the
 * code it copies is the serial float reductions the IR prescribes.
 * gcc -O2 does not unroll either. */
static const char pipeline_o2[] =
    "verify,annotation2metadata,forceattrs,inferattrs,"
    "function<eager-inv>(lower-expect,simplifycfg<bonus-inst-threshold=1;"
    "no-forward-switch-cond;no-switch-range-to-icmp;no-switch-to-lookup;"
    "keep-loops;no-hoist-common-insts;no-sink-common-insts>,sroa,early-cse<>,"
    "coro-early),openmp-opt,ipsccp,called-value-propagation,globalopt,"
    "function(mem2reg),deadargelim,function<eager-inv>(instcombine,"
    "simplifycfg<bonus-inst-threshold=1;no-forward-switch-cond;"
    "switch-range-to-icmp;no-switch-to-lookup;keep-loops;"
    "no-hoist-common-insts;no-sink-common-insts>),require<globals-aa>,"
    "function(invalidate<aa>),require<profile-summary>,"
    "cgscc(devirt<4>(inline<only-mandatory>,inline,function-attrs,"
    "openmp-opt-cgscc,function<eager-inv>(sroa,early-cse<memssa>,"
    "speculative-execution,jump-threading,correlated-propagation,"
    "simplifycfg<bonus-inst-threshold=1;no-forward-switch-cond;"
    "switch-range-to-icmp;no-switch-to-lookup;keep-loops;"
    "no-hoist-common-insts;no-sink-common-insts>,instcombine,"
    "libcalls-shrinkwrap,tailcallelim,simplifycfg<bonus-inst-threshold=1;"
    "no-forward-switch-cond;switch-range-to-icmp;no-switch-to-lookup;"
    "keep-loops;no-hoist-common-insts;no-sink-common-insts>,reassociate,"
    "require<opt-remark-emit>,loop-mssa(loop-instsimplify,loop-simplifycfg,"
    "licm,loop-rotate,licm,simple-loop-unswitch<no-nontrivial;trivial>),"
    "simplifycfg<bonus-inst-threshold=1;no-forward-switch-cond;"
    "switch-range-to-icmp;no-switch-to-lookup;keep-loops;"
    "no-hoist-common-insts;no-sink-common-insts>,instcombine,loop(loop-idiom,"
    "indvars,loop-deletion,loop-unroll-full),sroa,"
    "mldst-motion<no-split-footer-bb>,gvn<>,sccp,bdce,instcombine,"
    "jump-threading,correlated-propagation,adce,memcpyopt,dse,"
    "loop-mssa(licm),coro-elide,simplifycfg<bonus-inst-threshold=1;"
    "no-forward-switch-cond;switch-range-to-icmp;no-switch-to-lookup;"
    "keep-loops;hoist-common-insts;sink-common-insts>,instcombine),"
    "coro-split)),globalopt,globaldce,elim-avail-extern,rpo-function-attrs,"
    "require<globals-aa>,function<eager-inv>(float2int,"
    "lower-constant-intrinsics,loop(loop-rotate,loop-deletion),"
    "loop-distribute,inject-tli-mappings,"
    "loop-vectorize<no-interleave-forced-only;no-vectorize-forced-only;>,"
    "loop-load-elim,instcombine,simplifycfg<bonus-inst-threshold=1;"
    "forward-switch-cond;switch-range-to-icmp;switch-to-lookup;no-keep-loops;"
    "hoist-common-insts;sink-common-insts>,slp-vectorizer,vector-combine,"
    "instcombine,loop-unroll<O2;no-partial;no-runtime>,transform-warning,"
    "instcombine,require<opt-remark-emit>,loop-mssa(licm),"
    "alignment-from-assumptions,loop-sink,instsimplify,div-rem-pairs,"
    "simplifycfg<bonus-inst-threshold=1;no-forward-switch-cond;"
    "switch-range-to-icmp;no-switch-to-lookup;keep-loops;"
    "no-hoist-common-insts;no-sink-common-insts>,coro-cleanup),cg-profile,"
    "globaldce,constmerge,rel-lookup-table-converter,"
    "function(annotation-remarks),verify";

static LLVMErrorRef run_passes(LLVMModuleRef m, const char *passes,
                               LLVMTargetMachineRef tm) {
  LLVMPassBuilderOptionsRef o = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(o, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(o, 1);
  LLVMPassBuilderOptionsSetLoopInterleaving(o, 1);
  LLVMPassBuilderOptionsSetLoopUnrolling(o, 1);
  LLVMErrorRef e = LLVMRunPasses(m, passes, tm, o);
  LLVMDisposePassBuilderOptions(o);
  return e;
}

int emit_llvm_optimize(LLVMModuleRef m, LLVMTargetMachineRef tm, int level,
                       char **err) {
  static const char *const defaults[4] = {"default<O0>", "default<O1>",
                                          "default<O2>", "default<O3>"};
  level = level < 0 ? 0 : level > 3 ? 3 : level;
  LLVMErrorRef e = NULL;
  if (level == 2) {
    /* another LLVM may not know a pass by its name: nothing has run
     * then, and its own O2 does the job */
    e = run_passes(m, pipeline_o2, tm);
    if (e) {
      LLVMConsumeError(e);
      e = run_passes(m, defaults[2], tm);
    }
  } else {
    e = run_passes(m, defaults[level], tm);
  }
  if (e) {
    *err = LLVMGetErrorMessage(e);
    return -1;
  }
  return 0;
}

#endif
