/* Construction of the graph IR. */
#include "graph.h"

#include <string.h>

#include "ops.h"

Graph *graph_new(Arena *a, const char *name, Loc loc) {
  Graph *g = arena_alloc(a, sizeof *g);
  g->a = a;
  g->name = name;
  g->loc = loc;
  g->train = (TrainCfg){.batch = 1,
                        .epochs = 10,
                        .seed = 0,
                        .opt = OPT_SGD,
                        .lr = 0.01,
                        .beta1 = 0.9,
                        .beta2 = 0.999,
                        .eps = 1e-8,
                        .sched = SCHED_CONSTANT,
                        .every = 1,
                        .patience = 2,
                        .gamma = 0.1,
                        .factor = 0.1,
                        .init = INIT_DEFAULT};
  return g;
}

Node *graph_add_node(Graph *g, OpKind op, Loc loc, const char *name) {
  Node *n = arena_alloc(g->a, sizeof *n);
  n->id = g->nodes.n;
  n->op = op;
  n->loc = loc;
  n->name = name;
  vec_push(g->a, g->nodes, n);
  return n;
}

void graph_add_input(Graph *g, Node *n, Node *in) { vec_push(g->a, n->in, in); }

Param *graph_add_param(Graph *g, Node *n, const char *role, Shape shape,
                       ParamKind kind, DType dtype) {
  Param *p = arena_alloc(g->a, sizeof *p);
  p->name = arena_printf(g->a, "%s.%s", n->name, role);
  p->role = role;
  p->shape = shape;
  p->kind = kind;
  p->dtype = dtype;
  p->owner = n;
  p->index = -1;
  vec_push(g->a, n->params, p);
  return p;
}

int64_t shape_numel(Shape s) {
  int64_t n = 1;
  for (int i = 0; i < s.rank; i++)
    n *= s.d[i];
  return n;
}

char *shape_str(Arena *a, Shape s) {
  long long d[MAX_RANK];
  for (int i = 0; i < s.rank; i++)
    d[i] = (long long)s.d[i];
  return diag_dims(a, d, s.rank);
}

Shape shape_of(int rank, const int64_t *dims) {
  Shape s = {rank, {0}};
  memcpy(s.d, dims, sizeof(int64_t) * (size_t)rank);
  return s;
}

static const char *dtype_name(DType t) { return t == DT_I64 ? "i64" : "f32"; }

void graph_print(FILE *out, const Graph *g) {
  fprintf(out, "graph %s\n", g->name);
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = g->nodes.v[i];
    fprintf(out, "%%%d = %s %s", n->id, op_info[n->op].name, n->name);
    for (int j = 0; j < n->in.n; j++)
      fprintf(out, " %%%d", n->in.v[j]->id);
    op_print_attrs(out, n);
    fprintf(out, " : %s %s\n", dtype_name(n->dtype), shape_str(g->a, n->shape));
  }
  for (int i = 0; i < g->params.n; i++) {
    const Param *p = g->params.v[i];
    fprintf(out, "param %%%d %s %s %s %s%s\n", p->owner->id, p->name,
            dtype_name(p->dtype), shape_str(g->a, p->shape),
            p->kind == PK_PARAM ? "param" : "buffer",
            p->frozen ? " frozen" : "");
  }
  for (int i = 0; i < g->outputs.n; i++)
    fprintf(out, "output %s = %%%d\n", g->outputs.v[i].name,
            g->outputs.v[i].node->id);
  if (g->loss)
    fprintf(out, "loss = %%%d\n", g->loss->id);
}
