/* The loop IR: what the graph becomes before a backend prints it. A
 * program is a list of kernels, one per layer, each a nest of loops with
 * constant extents (the batch loop runs to the caller's n) over loads and
 * stores into planned buffers, with scalar arithmetic. The C backend and
 * the LLVM backend both walk this IR; neither decides anything. */
#ifndef CNNC_LOOP_H
#define CNNC_LOOP_H

#include <stdio.h>

#include "graph.h"

typedef enum BufKind {
  BUF_F32,    /* a parameter or float buffer: state f32 area */
  BUF_I64,    /* an integer buffer (num_batches_tracked): state i64 area */
  BUF_ARENA,  /* an activation: the state's arena, offset by the planner */
  BUF_INPUT,  /* a model input: the caller's array */
  BUF_OUTPUT, /* a model output: the caller's array */
  BUF_GRAD,   /* a parameter's gradient: the state's g32 area */
  BUF_M,      /* optimizer state: momentum, or Adam's first moment (m32) */
  BUF_V,      /* Adam's second moment (v32) */
  BUF_LOCAL,  /* a kernel's own small array (a tile of accumulators): on
                 the stack of the kernel's function, not in the state */
  BUF_PACKED, /* weights packed for the forward pass's tiles, made once
                 after the weights change and kept: the state's packed
                 area (Program.packed_ok) */
} BufKind;

typedef struct Buffer {
  int id;           /* index in the program's buffers; -1 for BUF_LOCAL */
  const char *name; /* a C identifier made from the model's name for it */
  BufKind kind;
  int64_t size;   /* elements, all samples of the batch */
  int64_t offset; /* elements into its area */
  Shape shape;    /* per sample for activations, whole for parameters */
  const Node *node;
  const Param *param;
  struct Buffer *alias;     /* shares this buffer's storage (flatten, ...) */
  struct Buffer *param_buf; /* BUF_GRAD: the parameter's own buffer */
  int is_int;               /* int64 elements (labels, counters) */
  int hwc;         /* an activation stored (n, h, w, c), channels innermost, not
                      (n, c, h, w): between convolutions (lower_layout.c) */
  int first, last; /* kernels that write it first and read it last */
} Buffer;
VEC_TYPE(BufferVec, Buffer *);

typedef enum XKind {
  X_INT,   /* i */
  X_FLOAT, /* f */
  X_VAR,   /* loop variable var */
  X_TEMP,  /* scalar temporary var */
  X_N,     /* the number of samples the caller passed */
  X_LOAD,  /* buf[a] */
  X_ADD,
  X_SUB,
  X_MUL,
  X_DIV, /* floor division for integers */
  X_MOD, /* integers, non-negative operands */
  X_MAX,
  X_MIN,
  X_NEG,
  X_EXP,
  X_LOG,
  X_SQRT,
  X_POW,
  X_LT, /* comparisons and conjunction give booleans */
  X_LE,
  X_EQ,
  X_AND,
  X_SELECT,  /* a ? b : c */
  X_TOFLOAT, /* integer to float */
  X_RAND,    /* uniform in [0, 1) from key a, stream i and the state's seed */
  X_LR,      /* the state's learning rate */
  X_STEP,    /* the state's optimizer step count (integer) */
  X_FMA,     /* a * b + c, rounded once (contract.c makes these) */
} XKind;

typedef struct Expr {
  XKind k;
  int isint; /* integer (index) or boolean, else float */
  int64_t i;
  double f;
  int var;
  Buffer *buf;
  struct Expr *a, *b, *c;
} Expr;

typedef enum SKind {
  S_FOR,      /* for var in [0, extent) (extent -1: the caller's n) body */
  S_STORE,    /* buf[index] = value */
  S_ACCUM,    /* buf[index] += value */
  S_LET,      /* float temp var = value (declares it) */
  S_SET,      /* temp var = value */
  S_IF,       /* if (value) body */
  S_FAIL,     /* if (value) the call fails: the function returns -1 */
  S_PREFETCH, /* a hint that buf[index] will be read soon; no effect on
                 any result (index stays within buf) */
} SKind;

typedef struct Stmt Stmt;
VEC_TYPE(StmtVec, Stmt *);

struct Stmt {
  SKind k;
  int var;
  int64_t extent;
  int parallel; /* S_FOR at a kernel's top: its iterations write apart
                   and read nothing another writes, and use no temporary
                   from outside, so they may run on several threads */
  Buffer *buf;
  Expr *index, *value;
  StmtVec body;
};

/* One layer's loop nest. */
typedef struct Kernel {
  const char *name; /* the layer's name */
  const char *what; /* its operator, or what the kernel does */
  Loc loc;
  StmtVec body;
  const char **vars; /* names of loop variables and temporaries, by id */
  int nvars;
  unsigned char *kinds; /* by id: 0 loop variable, 1 float temporary,
                           2 integer temporary, 3 double temporary,
                           4 the name of a local array */
  BufferVec locals;     /* BUF_LOCAL arrays, float, declared at the top */
  const char *schedule; /* the loop schedule lowering chose (schedule.h),
                           for dumps and the generated code's comments */
} Kernel;
VEC_TYPE(KernelVec, Kernel *);

/* How init() fills a parameter or buffer. */
typedef enum InitFill {
  FILL_UNIFORM, /* uniform in [-bound, bound] */
  FILL_CONST,   /* every element = value */
} InitFill;

typedef struct ParamInit {
  Buffer *buf;
  InitFill fill;
  double bound, value;
} ParamInit;
VEC_TYPE(ParamInitVec, ParamInit);

typedef struct Program {
  Arena *a;
  const Graph *g;
  int64_t batch;
  BufferVec bufs;
  BufferVec inputs, outputs; /* the caller's arrays, in declaration order */
  KernelVec kernels;         /* in order */
  int train;                 /* the training step, not the forward pass */
  int tile;         /* lowering tiles loop nests for vectors of this many floats
                       (schedule.h: TARGET_AVX2 or TARGET_AVX512), 0 not at all */
  Buffer *loss;     /* train: the loss value */
  KernelVec update; /* train: the optimizer's update */
  ParamInitVec inits;
  /* Where inference keeps convolutions' weights packed (BUF_PACKED), an
   * integer buffer in both programs: 1 while the packed area holds the
   * weights as they are. The forward pass packs them when it is 0 and
   * then sets it; init, load and the optimizer's update clear it. NULL
   * when no convolution keeps its weights packed. */
  Buffer *packed_ok;
  int64_t f32_count, i64_count, arena_count, packed_count;
  int64_t activation_sum; /* elements of all arena buffers, unshared */
  NameSet names;          /* the buffers' names: lowering keeps them unique */
} Program;

/* Building kernels. */
Kernel *loop_kernel(Program *p, const char *name, const char *what, Loc loc);
int loop_var(Program *p, Kernel *k, const char *name, int temp);
Stmt *loop_stmt(Program *p, SKind kind);
/* A float array of size elements local to kernel k, named in the
 * kernel's namespace of variables. */
Buffer *loop_local(Program *p, Kernel *k, const char *name, int64_t size);
Expr *x_int(Program *p, int64_t v);
Expr *x_float(Program *p, double v);
Expr *x_var(Program *p, int var);
Expr *x_temp(Program *p, int var);
Expr *x_n(Program *p);
Expr *x_load(Program *p, Buffer *b, Expr *index);
Expr *x_bin(Program *p, XKind k, Expr *a, Expr *b); /* folds constants */
Expr *x_un(Program *p, XKind k, Expr *a);
Expr *x_select(Program *p, Expr *c, Expr *a, Expr *b);
Expr *x_itemp(Program *p, int var);
Expr *x_rand(Program *p, int64_t stream, Expr *key);
Expr *x_state(Program *p, XKind k); /* X_LR or X_STEP */
Expr *x_fma(Program *p, Expr *a, Expr *b, Expr *c);
Expr *x_copy(Program *p, const Expr *e); /* a shallow copy */

/* Builds a kernel's statements with a stack of open loop bodies. */
typedef struct LoopBuilder {
  Program *p;
  Kernel *k;
  StmtVec *open[16];
  int depth;
} LoopBuilder;

LoopBuilder lb_start(Program *p, Kernel *k);
int lb_for(LoopBuilder *b, const char *var, int64_t extent); /* -1: n */
/* The same, a parallel loop (Stmt.parallel); only at a kernel's top. */
int lb_parallel_for(LoopBuilder *b, const char *var, int64_t extent);
void lb_if(LoopBuilder *b, Expr *cond);
void lb_end(LoopBuilder *b); /* closes the innermost for or if */
void lb_store(LoopBuilder *b, Buffer *buf, Expr *index, Expr *value);
void lb_accum(LoopBuilder *b, Buffer *buf, Expr *index, Expr *value);
int lb_let(LoopBuilder *b, const char *temp, Expr *value);
/* A float temporary kept in double precision: sums over a batch, whose
 * rounding would otherwise show (PyTorch accumulates these in double). */
int lb_let_wide(LoopBuilder *b, const char *temp, Expr *value);
void lb_set(LoopBuilder *b, int temp, Expr *value);
void lb_fail_if(LoopBuilder *b, Expr *cond);
void lb_prefetch(LoopBuilder *b, Buffer *buf, Expr *index);

/* Prints an expression; c selects C syntax (for the C backend) over the
 * IR's own text form. */
void loop_print_expr(FILE *out, const Kernel *k, const Expr *e, int c);
/* A float constant, in C syntax when c ("0.5f", "-INFINITY"). */
void loop_print_float(FILE *out, double f, int c);
void loop_print(FILE *out, const Program *p);

#endif
