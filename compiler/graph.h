/* The graph IR: operator nodes with attributes, each producing one tensor
 * of a static per-sample shape (the batch is never part of a shape), and
 * the named parameters and buffers they own. Every node keeps the source
 * place that created it. */
#ifndef CNNC_GRAPH_H
#define CNNC_GRAPH_H

#include <stdint.h>
#include <stdio.h>

#include "diag.h"

typedef enum OpKind {
  OP_NONE = -1,
#define X(e, name, inputs, sig, flags) OP_##e,
#include "ops.def"
#undef X
  OP_COUNT
} OpKind;

enum { OPF_PARAMS = 1, OPF_LOSS = 2, OPF_INTERNAL = 4 };

enum { MAX_RANK = 4 };
typedef struct Shape {
  int rank;
  int64_t d[MAX_RANK];
} Shape;

typedef enum DType { DT_F32, DT_I64 } DType;

/* Attributes of every operator; each uses the fields its signature names.
 * Pairs are [h, w]. */
typedef struct Attrs {
  int64_t out, groups, g, size, scale;
  int64_t k[2], s[2], p[2], d[2], output_padding[2], n[2];
  int64_t pad_end[2]; /* padding after the data; differs for p="same" */
  int same, bias, ceil;
  double a, eps, momentum, alpha, beta, lrn_k, prob;
  const char *mode;
} Attrs;

typedef enum ParamKind { PK_PARAM, PK_BUFFER } ParamKind;

typedef struct Node Node;

typedef struct Param {
  const char *name; /* full state_dict name: owner name + "." + role */
  const char *role; /* weight, bias, running_mean, ... */
  Shape shape;
  DType dtype;
  ParamKind kind;
  int frozen;
  Node *owner;
  int index; /* in the graph's params, or -1 before it joins them */
} Param;

VEC_TYPE(NodeVec, Node *);
VEC_TYPE(ParamVec, Param *);

/* A block call or seq: what `cnnc dot` draws as a cluster. */
typedef struct Scope {
  int id;
  const char *prefix; /* parameter-name prefix inside it ("" at top) */
  const char *what;   /* block name, or "seq" */
  Loc loc;
  struct Scope *parent;
} Scope;
VEC_TYPE(ScopeVec, Scope *);

struct Node {
  int id;
  OpKind op;
  Loc loc;          /* the operator's name in the source */
  Loc label_loc;    /* its label, where its name comes from (else loc) */
  const char *name; /* "layer1.0.conv1", or an automatic "relu3" */
  NodeVec in;
  Shape shape;
  DType dtype;
  Attrs at;
  ParamVec params;
  Scope *scope;
  int frozen;
  /* Made by autodiff: the forward node this one differentiates (its
   * attributes and name), the parameter whose gradient it is, and the
   * parameter an OP_PARAM node reads. */
  const Node *of;
  const Param *grad_of;
  const Param *param;
  int whole;      /* one value for the whole batch, not one per sample */
  int64_t offset; /* OP_SLICE: first channel */
};

typedef struct Output {
  const char *name;
  Node *node;
  Loc loc;
} Output;
VEC_TYPE(OutputVec, Output);

typedef enum OptKind { OPT_SGD, OPT_ADAM } OptKind;
typedef enum SchedKind {
  SCHED_CONSTANT,
  SCHED_STEP,
  SCHED_PLATEAU,
  SCHED_COSINE
} SchedKind;
typedef enum InitKind { INIT_DEFAULT, INIT_XAVIER, INIT_HE } InitKind;

/* The train { } section with its defaults filled in. */
typedef struct TrainCfg {
  int64_t batch, epochs, seed;
  OptKind opt;
  double lr, momentum, weight_decay, beta1, beta2, eps;
  int nesterov;
  SchedKind sched;
  int64_t every, patience;
  double gamma, factor;
  InitKind init;
} TrainCfg;

typedef struct Graph {
  Arena *a;
  const char *name;
  Loc loc;
  NodeVec nodes; /* in creation order, which is a topological order */
  NodeVec inputs;
  OutputVec outputs;
  ParamVec params; /* parameters and buffers, in creation order */
  ScopeVec scopes;
  Node *loss;
  TrainCfg train;
  int backward; /* nodes from this index on are the backward pass */
} Graph;

Graph *graph_new(Arena *a, const char *name, Loc loc);
Node *graph_add_node(Graph *g, OpKind op, Loc loc, const char *name);
void graph_add_input(Graph *g, Node *n, Node *in);
/* Adds a parameter or buffer to n; its full name is n's name + role. */
Param *graph_add_param(Graph *g, Node *n, const char *role, Shape shape,
                       ParamKind kind, DType dtype);
int64_t shape_numel(Shape s);
char *shape_str(Arena *a, Shape s);
Shape shape_of(int rank, const int64_t *dims);

/* The graph's one text form, for --dump-after and tests:
 *   graph NAME
 *   %ID = OP NAME %IN... ATTR=VALUE... : DTYPE [DIMS]
 *   param %OWNER NAME DTYPE [DIMS] param|buffer [frozen]
 *   output NAME = %ID
 *   loss = %ID */
void graph_print(FILE *out, const Graph *g);

#endif
