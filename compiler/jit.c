/* The JIT. emit_llvm builds the Program as LLVM IR, optimized for this
 * machine's CPU; ORC's LLJIT makes machine code of it in memory; the
 * entry point is called on the state and the caller's arrays.
 *
 * `cnnc run --jit` does what the C path's driver does, in-process: the
 * weights go through the very loader every model.c carries (the template
 * emit_c_safetensors.c.in, included below), so the checks and messages
 * are the same; inputs and outputs go through the runtime's safetensors
 * code, with the driver's checks and messages. Files are checked before
 * anything is compiled, so a wrong file costs no compile time.
 *
 * The compiled code calls expf, logf and powf: they are bound to
 * this process's libm, the functions the C path's code calls; anything
 * else the code generator asks for (memset, memcpy) comes from the
 * process too.
 *
 * Without LLVM (CNNC_LLVM 0) only the stubs at the end are compiled. */
#include "jit.h"

#if CNNC_LLVM

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>

#include "cnnc_runtime.h"
#include "emit_llvm.h"
#include "threads.h"

/* The generated code's weights loader, with its identifiers kept as
 * PREFIX_...: it needs the table row type, as emit_c prints it. */
typedef struct PREFIX_tensor {
  const char *name;
  int dtype; /* 0: float32, 1: int64 */
  int ndim;
  int64_t shape[4];
  size_t offset; /* into f32 or i64 */
  size_t numel;
} PREFIX_tensor;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" /* the saver */
#include "emit_c_safetensors.c.in"
#pragma GCC diagnostic pop

struct Jit {
  const Program *p;
  LLVMOrcLLJITRef jit;
  EmitLlvmEntry entry, update;
  JitState st;
  PREFIX_tensor *tab;
  int ntab;
  int borrowed; /* f32 and i64 belong to another Jit (jit_share_params) */
  double t_ir, t_opt, t_code;
  int nparts; /* compiled on as many threads */
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int jit_available(void) { return 1; }

/* An LLVM error is cnnc's fault, never the user's. */
static int llvm_failed(Diag *d, LLVMErrorRef err, const char *what) {
  if (!err)
    return 0;
  char *msg = LLVMGetErrorMessage(err);
  diag_internal(d, "LLVM failed to %s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return 1;
}

/* A target machine for this CPU and its features. */
static LLVMTargetMachineRef host_machine(Diag *d) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  char *triple = LLVMGetDefaultTargetTriple(), *msg = NULL;
  LLVMTargetRef target;
  LLVMTargetMachineRef tm = NULL;
  if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
    diag_internal(d, "LLVM has no target for %s: %s", triple, msg);
    LLVMDisposeMessage(msg);
  } else {
    char *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
    tm = LLVMCreateTargetMachine(target, triple, cpu, features,
                                 LLVMCodeGenLevelAggressive, LLVMRelocDefault,
                                 LLVMCodeModelJITDefault);
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(features);
    if (!tm)
      diag_internal(d, "LLVM cannot make a target machine for %s", triple);
  }
  LLVMDisposeMessage(triple);
  return tm;
}

/* The weights table, as emit_c prints it into model.c. */
static PREFIX_tensor *weights_table(const Program *p, int *n) {
  PREFIX_tensor *tab = mem_alloc(sizeof *tab * (size_t)(p->bufs.n + 1));
  *n = 0;
  for (int i = 0; i < p->bufs.n; i++) {
    const Buffer *b = p->bufs.v[i];
    if (!b->param || (b->kind != BUF_F32 && b->kind != BUF_I64))
      continue;
    PREFIX_tensor *t = &tab[(*n)++];
    t->name = b->param->name;
    t->dtype = b->kind == BUF_I64;
    t->ndim = b->shape.rank;
    for (int k = 0; k < b->shape.rank && k < 4; k++)
      t->shape[k] = b->shape.d[k];
    t->offset = (size_t)b->offset;
    t->numel = (size_t)b->size;
  }
  return tab;
}

static const char *const libm_names[] = {"expf",
                                         "logf",
                                         "powf",
                                         "memset",
                                         "memcpy",
                                         "memmove",
                                         "threads_parallel_for"};

/* Binds the library functions the code calls to this process's. */
static int define_symbols(Diag *d, LLVMOrcLLJITRef jit) {
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(jit);
  LLVMOrcDefinitionGeneratorRef gen;
  if (llvm_failed(d,
                  LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
                      &gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL),
                  "search this process for symbols"))
    return -1;
  LLVMOrcJITDylibAddGenerator(jd, gen);
  void *addr[] = {(void *)expf,
                  (void *)logf,
                  (void *)powf,
                  (void *)memset,
                  (void *)memcpy,
                  (void *)memmove,
                  (void *)threads_parallel_for};
  enum { N = sizeof addr / sizeof addr[0] };
  LLVMJITCSymbolMapPair syms[N];
  for (int i = 0; i < N; i++) {
    syms[i].Name = LLVMOrcLLJITMangleAndIntern(jit, libm_names[i]);
    syms[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)addr[i];
    syms[i].Sym.Flags.GenericFlags =
        LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
    syms[i].Sym.Flags.TargetFlags = 0;
  }
  LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(syms, N);
  LLVMErrorRef err = LLVMOrcJITDylibDefine(jd, mu);
  if (err) {
    LLVMOrcDisposeMaterializationUnit(mu);
    llvm_failed(d, err, "define the libm symbols");
    return -1;
  }
  return 0;
}

/* One part of a split program (emit_llvm_part), optimized and made into
 * an object file on a thread of its own. */
typedef struct Part {
  LLVMContextRef cx;
  LLVMModuleRef m;
  LLVMTargetMachineRef tm;
  int level;
  LLVMMemoryBufferRef obj;
  char *opt_err;  /* LLVMDisposeErrorMessage */
  char *code_err; /* LLVMDisposeMessage */
  double t_opt, t_code;
  pthread_t thread;
  int started;
} Part;

static void *compile_part(void *arg) {
  Part *pt = arg;
  double t0 = now();
  if (emit_llvm_optimize(pt->m, pt->tm, pt->level, &pt->opt_err))
    return NULL;
  double t1 = now();
  if (LLVMTargetMachineEmitToMemoryBuffer(pt->tm, pt->m, LLVMObjectFile,
                                          &pt->code_err, &pt->obj))
    pt->obj = NULL;
  pt->t_opt = t1 - t0;
  pt->t_code = now() - t1;
  return NULL;
}

/* As many parts as the machine has processors: optimizing and making
 * machine code is most of the JIT's start-up, and each part is a separate
 * problem for LLVM. */
static int part_count(const Program *p, int want) {
  long n = want > 0 ? want : threads_count();
  if (n > p->kernels.n + p->update.n)
    n = p->kernels.n + p->update.n;
  return n < 1 ? 1 : n > EMIT_LLVM_MAX_PARTS ? EMIT_LLVM_MAX_PARTS : (int)n;
}

/* Builds, optimizes and compiles p; the entry points go into j. The parts
 * are compiled at the same time, the first on this thread; LLJIT links
 * their object files. */
static int compile_into(Diag *d, Jit *j, int level, int nparts) {
  const Program *p = j->p;
  Part part[EMIT_LLVM_MAX_PARTS];
  int n = part_count(p, nparts), bad = 0;
  memset(part, 0, sizeof part);
  double t0 = now();
  for (int i = 0; i < n && !bad; i++) {
    part[i].level = level;
    part[i].tm = host_machine(d);
    part[i].cx = LLVMContextCreate();
    part[i].m =
        part[i].tm ? emit_llvm_part(d, part[i].cx, p, part[i].tm, i, n) : NULL;
    bad = !part[i].m;
  }
  double t1 = now();
  for (int i = 1; i < n && !bad; i++)
    part[i].started =
        pthread_create(&part[i].thread, NULL, compile_part, &part[i]) == 0;
  if (!bad)
    compile_part(&part[0]);
  for (int i = 1; i < n; i++)
    if (part[i].started)
      pthread_join(part[i].thread, NULL);
    else if (!bad)
      compile_part(&part[i]); /* no thread to be had: here, then */
  double t2 = now(), t_opt = 0, t_code = 0;
  for (int i = 0; i < n; i++) {
    if (part[i].opt_err) {
      diag_internal(d, "LLVM failed to optimize: %s", part[i].opt_err);
      LLVMDisposeErrorMessage(part[i].opt_err);
      bad = 1;
    } else if (part[i].code_err) {
      diag_internal(d, "LLVM failed to make machine code: %s",
                    part[i].code_err);
      LLVMDisposeMessage(part[i].code_err);
      bad = 1;
    }
    if (part[i].t_opt > t_opt) /* the longest part is the time it took */
      t_opt = part[i].t_opt, t_code = part[i].t_code;
    if (part[i].m)
      LLVMDisposeModule(part[i].m);
    if (part[i].cx)
      LLVMContextDispose(part[i].cx);
    if (part[i].tm)
      LLVMDisposeTargetMachine(part[i].tm);
  }
  LLVMTargetMachineRef jtm = bad ? NULL : host_machine(d);
  if (!jtm) {
    for (int i = 0; i < n; i++)
      if (part[i].obj)
        LLVMDisposeMemoryBuffer(part[i].obj);
    return -1;
  }
  /* LLJIT links the object files, for the same CPU */
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(
      builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(jtm));
  int i = 0;
  if (llvm_failed(d, LLVMOrcCreateLLJIT(&j->jit, builder), "start the JIT")) {
    j->jit = NULL;
    goto fail;
  }
  if (define_symbols(d, j->jit))
    goto fail;
  for (; i < n; i++) /* each call takes its buffer, failing or not */
    if (llvm_failed(
            d,
            LLVMOrcLLJITAddObjectFile(
                j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), part[i].obj),
            "add the machine code")) {
      i++;
      goto fail;
    }
  LLVMOrcExecutorAddress addr = 0;
  if (llvm_failed(
          d,
          LLVMOrcLLJITLookup(j->jit, &addr, emit_llvm_entry_name(p->a, p, 0)),
          "link the machine code"))
    return -1;
  j->entry = (EmitLlvmEntry)(uintptr_t)addr;
  if (p->train) {
    if (llvm_failed(
            d,
            LLVMOrcLLJITLookup(j->jit, &addr, emit_llvm_entry_name(p->a, p, 1)),
            "link the machine code"))
      return -1;
    j->update = (EmitLlvmEntry)(uintptr_t)addr;
  }
  j->t_ir = t1 - t0;
  j->t_opt = t_opt;
  j->t_code = now() - t2 + t_code;
  j->nparts = n;
  return 0;
fail:
  for (; i < n; i++)
    LLVMDisposeMemoryBuffer(part[i].obj);
  return -1;
}

static Jit *jit_new(const Program *p) {
  Jit *j = mem_alloc(sizeof *j);
  j->p = p;
  j->st.f32 = mem_alloc_lines(sizeof(float) * (size_t)p->f32_count);
  j->st.i64 = mem_alloc_lines(sizeof(int64_t) * (size_t)p->i64_count);
  j->st.arena = mem_alloc_lines(sizeof(float) * (size_t)p->arena_count);
  if (p->packed_count)
    j->st.packed = mem_alloc_lines(sizeof(float) * (size_t)p->packed_count);
  /* the training areas mirror f32, where the program has them */
  for (int i = 0; i < p->bufs.n; i++) {
    BufKind k = p->bufs.v[i]->kind;
    float **area = k == BUF_GRAD ? &j->st.g32
                   : k == BUF_M  ? &j->st.m32
                   : k == BUF_V  ? &j->st.v32
                                 : NULL;
    if (area && !*area)
      *area = mem_alloc_lines(sizeof(float) * (size_t)p->f32_count);
  }
  j->tab = weights_table(p, &j->ntab);
  return j;
}

void jit_free(Jit *j) {
  if (!j)
    return;
  if (j->jit) {
    LLVMErrorRef err = LLVMOrcDisposeLLJIT(j->jit);
    if (err)
      LLVMConsumeError(err);
  }
  if (!j->borrowed) {
    mem_free(j->st.f32);
    mem_free(j->st.i64);
  }
  mem_free(j->st.arena);
  mem_free(j->st.packed);
  mem_free(j->st.g32);
  mem_free(j->st.m32);
  mem_free(j->st.v32);
  mem_free(j->tab);
  mem_free(j);
}

Jit *jit_compile(Diag *d, const Program *p, int level) {
  return jit_compile_parts(d, p, level, 0);
}

Jit *jit_compile_parts(Diag *d, const Program *p, int level, int nparts) {
  Jit *j = jit_new(p);
  if (compile_into(d, j, level, nparts)) {
    jit_free(j);
    return NULL;
  }
  return j;
}

void jit_weights_changed(Jit *j) {
  if (j->p->packed_ok)
    j->st.i64[j->p->packed_ok->offset] = 0;
}

int jit_load(Jit *j, const void *data, size_t size, char *err, size_t errlen) {
  jit_weights_changed(j);
  return PREFIX_st_load(data, size, j->tab, j->ntab, j->st.f32, j->st.i64, err,
                        errlen);
}

JitState *jit_state(Jit *j) { return &j->st; }

void jit_share_params(Jit *j, Jit *owner) {
  if (!j->borrowed) {
    mem_free(j->st.f32);
    mem_free(j->st.i64);
  }
  j->st.f32 = owner->st.f32;
  j->st.i64 = owner->st.i64;
  j->borrowed = 1;
}

int jit_call(Jit *j, int64_t count, const void *const *inputs,
             void *const *outputs) {
  return j->entry(&j->st, count, (void *const *)inputs, outputs);
}

int jit_update(Jit *j) {
  return j->update ? j->update(&j->st, 0, NULL, NULL) : -1;
}

void jit_times(const Jit *j, double *ir, double *opt, double *code) {
  *ir = j->t_ir;
  *opt = j->t_opt;
  *code = j->t_code;
}

int jit_write_ll(Diag *d, const Program *p, const char *path) {
  LLVMTargetMachineRef tm = host_machine(d);
  if (!tm)
    return 1;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = emit_llvm(d, ctx, p, tm);
  char *msg = NULL;
  int rc = 1;
  if (!m)
    goto done;
  if (emit_llvm_optimize(m, tm, 2, &msg)) {
    diag_internal(d, "LLVM failed to optimize: %s", msg);
    LLVMDisposeErrorMessage(msg);
  } else if (LLVMPrintModuleToFile(m, path, &msg)) {
    diag_error(d, (Loc){0, 0, 0}, "cannot write %s: %s", path, msg);
    LLVMDisposeMessage(msg);
  } else {
    rc = 0;
  }
  LLVMDisposeModule(m);
done:
  LLVMContextDispose(ctx);
  LLVMDisposeTargetMachine(tm);
  return rc;
}

/* --- cnnc run --jit ------------------------------------------------------ */

/* The dimensions of a per-sample shape as the driver prints them:
 * "[N, 1, 28, 28]". */
static const char *with_n(Arena *a, Shape s) {
  char *text = arena_strdup(a, "[N");
  for (int i = 0; i < s.rank; i++)
    text = arena_printf(a, "%s, %" PRId64, text, s.d[i]);
  return arena_printf(a, "%s]", text);
}

/* One input tensor against the model: float32, [N, per-sample dims], as
 * many samples as the other inputs; the driver's messages. */
static int check_input(Diag *d, const char *file, const rt_tensor *t,
                       const Buffer *b, int64_t *count) {
  const char *name = b->node->name;
  const char *want = with_n(d->arena, b->shape);
  int ok = t && t->dtype == RT_F32 && t->ndim == b->shape.rank + 1;
  for (int i = 0; ok && i < b->shape.rank; i++)
    ok = t->shape[i + 1] == b->shape.d[i];
  if (!t)
    diag_error(d, (Loc){0, 0, 0}, "%s: no tensor '%s' (the model's input, %s)",
               file, name, want);
  else if (!ok)
    diag_error(d, (Loc){0, 0, 0}, "%s: tensor '%s' must be F32 %s", file, name,
               want);
  else if (t->shape[0] < 1)
    diag_error(d, (Loc){0, 0, 0}, "%s: tensor '%s' has no samples", file, name);
  else if (*count >= 0 && t->shape[0] != *count)
    diag_error(d, (Loc){0, 0, 0},
               "%s: tensor '%s' has %lld samples, another input %lld", file,
               name, (long long)t->shape[0], (long long)*count);
  else {
    *count = t->shape[0];
    return 0;
  }
  return -1;
}

int jit_run(Diag *d, const Program *p, const RunOptions *o) {
  Loc none = {0, 0, 0};
  if (p->train) {
    diag_internal(d, "jit_run runs forward programs, not training ones");
    return 1;
  }
  char err[512];
  unsigned char *buf = NULL;
  size_t len = 0;
  int status = 1;
  rt_tensors in = {0}, out = {0};
  const float **data = mem_alloc(sizeof(float *) * (size_t)(p->inputs.n + 1));
  const void **ins = mem_alloc(sizeof(void *) * (size_t)(p->inputs.n + 1));
  void **outs = mem_alloc(sizeof(void *) * (size_t)(p->outputs.n + 1));
  float **results = mem_alloc(sizeof(float *) * (size_t)(p->outputs.n + 1));
  Jit *j = jit_new(p);

  if (rt_read_file(o->weights, &buf, &len, err, sizeof err)) {
    diag_error(d, none, "%s", err);
    goto done;
  }
  if (jit_load(j, buf, len, err, sizeof err)) {
    diag_error(d, none, "%s: %s", o->weights, err);
    goto done;
  }
  if (rt_safetensors_read(o->input, &in, err, sizeof err)) {
    diag_error(d, none, "%s", err);
    goto done;
  }
  int64_t count = -1;
  for (int i = 0; i < p->inputs.n; i++) {
    const Buffer *b = p->inputs.v[i];
    const rt_tensor *t = rt_tensors_find(&in, b->node->name);
    if (check_input(d, o->input, t, b, &count))
      goto done;
    data[i] = t->data;
  }
  if (in.n != p->inputs.n)
    for (int i = 0; i < in.n; i++) {
      int known = 0;
      for (int k = 0; k < p->inputs.n; k++)
        known |= strcmp(in.v[i].name, p->inputs.v[k]->node->name) == 0;
      if (!known) {
        char shown[256];
        diag_error(d, none, "%s: tensor '%s' is not an input of the model",
                   o->input, rt_printable(in.v[i].name, shown, sizeof shown));
        goto done;
      }
    }
  for (int i = 0; i < p->outputs.n; i++) {
    int64_t per = shape_numel(p->outputs.v[i]->shape);
    if (count > 0 && per > (int64_t)(SIZE_MAX / sizeof(float)) / count) {
      diag_error(d, none, "out of memory for the outputs");
      goto done;
    }
    results[i] = mem_alloc(sizeof(float) * (size_t)(count * per));
  }

  if (compile_into(d, j, 2, 0))
    goto done;
  if (o->verbose)
    fprintf(stderr,
            "cnnc: jit: IR %.0f ms, optimization %.0f ms, machine code "
            "%.0f ms (%d part%s at once)\n",
            1e3 * j->t_ir, 1e3 * j->t_opt, 1e3 * j->t_code, j->nparts,
            j->nparts == 1 ? "" : "s");
  for (int64_t at = 0; at < count; at += p->batch) {
    int64_t n = count - at < p->batch ? count - at : p->batch;
    for (int i = 0; i < p->inputs.n; i++)
      ins[i] = data[i] + at * shape_numel(p->inputs.v[i]->shape);
    for (int i = 0; i < p->outputs.n; i++)
      outs[i] = results[i] + at * shape_numel(p->outputs.v[i]->shape);
    if (jit_call(j, n, ins, outs)) {
      diag_internal(d, "the compiled model refused %lld samples", (long long)n);
      goto done;
    }
  }
  for (int i = 0; i < p->outputs.n; i++) {
    const Buffer *b = p->outputs.v[i];
    int64_t shape[MAX_RANK + 1] = {count};
    for (int k = 0; k < b->shape.rank; k++)
      shape[k + 1] = b->shape.d[k];
    const char *name = b->node ? p->g->outputs.v[i].name : b->name;
    if (rt_tensors_add(&out, name, RT_F32, b->shape.rank + 1, shape,
                       results[i])) {
      diag_error(d, none, "out of memory");
      goto done;
    }
  }
  if (rt_safetensors_write(o->output, &out, err, sizeof err)) {
    diag_error(d, none, "%s", err);
    goto done;
  }
  status = 0;
done:
  for (int i = 0; i < p->outputs.n; i++)
    mem_free(results[i]);
  mem_free(results);
  mem_free(data);
  mem_free(ins);
  mem_free(outs);
  free(buf);
  rt_tensors_free(&in);
  rt_tensors_free(&out);
  jit_free(j);
  return status;
}

#else /* built without LLVM */

static void no_jit(Diag *d) {
  diag_error(d, (Loc){0, 0, 0},
             "this cnnc was built without LLVM, so it has no JIT (run, grad "
             "and train compile with the C compiler instead); rebuild it "
             "with make LLVM=1, which needs llvm-14-dev, for --jit and "
             "--emit-llvm");
}

int jit_available(void) { return 0; }

int jit_run(Diag *d, const Program *p, const RunOptions *o) {
  (void)p;
  (void)o;
  no_jit(d);
  return 1;
}

int jit_write_ll(Diag *d, const Program *p, const char *path) {
  (void)p;
  (void)path;
  no_jit(d);
  return 1;
}

Jit *jit_compile(Diag *d, const Program *p, int level) {
  (void)p;
  (void)level;
  no_jit(d);
  return NULL;
}

Jit *jit_compile_parts(Diag *d, const Program *p, int level, int nparts) {
  (void)nparts;
  return jit_compile(d, p, level);
}

int jit_load(Jit *j, const void *data, size_t size, char *err, size_t errlen) {
  (void)j;
  (void)data;
  (void)size;
  if (err && errlen)
    snprintf(err, errlen, "this cnnc was built without LLVM");
  return -1;
}

JitState *jit_state(Jit *j) { return (void)j, NULL; }

void jit_weights_changed(Jit *j) { (void)j; }

void jit_share_params(Jit *j, Jit *owner) {
  (void)j;
  (void)owner;
}

int jit_update(Jit *j) { return (void)j, -1; }

int jit_call(Jit *j, int64_t count, const void *const *inputs,
             void *const *outputs) {
  (void)j;
  (void)count;
  (void)inputs;
  (void)outputs;
  return -1;
}

void jit_times(const Jit *j, double *ir, double *opt, double *code) {
  (void)j;
  *ir = *opt = *code = 0;
}

void jit_free(Jit *j) { (void)j; }

#endif
