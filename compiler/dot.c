/* Graphviz output. Each block call and seq becomes a cluster nested as the
 * calls were; edges carry the shape of the tensor they move. */
#include "dot.h"

#include "ops.h"

static void quoted(FILE *out, const char *s) {
  fputc('"', out);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fputc('\\', out);
    fputc(*s, out);
  }
  fputc('"', out);
}

static int scope_used(const Graph *g, const Scope *s) {
  for (int i = 0; i < g->nodes.n; i++)
    for (const Scope *t = g->nodes.v[i]->scope; t; t = t->parent)
      if (t == s)
        return 1;
  return 0;
}

static void print_node(FILE *out, const Graph *g, const Node *n) {
  fprintf(out, "n%d [label=", n->id);
  char buf[512];
  snprintf(buf, sizeof buf, "%s\n%s %s", n->name, op_info[n->op].name,
           shape_str(g->a, n->shape));
  quoted(out, buf);
  if (n->op == OP_INPUT)
    fprintf(out, ", shape=ellipse");
  else if (op_info[n->op].flags & OPF_LOSS)
    fprintf(out, ", shape=octagon");
  else if (n->frozen)
    fprintf(out, ", style=filled, fillcolor=lightgrey");
  fprintf(out, "];\n");
}

static void print_scope(FILE *out, const Graph *g, const Scope *s, int depth) {
  int cluster = s->parent != NULL;
  if (cluster) {
    fprintf(out, "%*ssubgraph cluster_%d {\n%*slabel=", depth * 2, "", s->id,
            depth * 2 + 2, "");
    char buf[512];
    if (s->prefix[0] && (!s->parent || s->prefix != s->parent->prefix))
      snprintf(buf, sizeof buf, "%s: %s", s->prefix, s->what);
    else
      snprintf(buf, sizeof buf, "%s", s->what);
    quoted(out, buf);
    fprintf(out, ";\n");
  }
  for (int i = 0; i < g->nodes.n; i++)
    if (g->nodes.v[i]->scope == s) {
      fprintf(out, "%*s", depth * 2 + 2, "");
      print_node(out, g, g->nodes.v[i]);
    }
  for (int i = 0; i < g->scopes.n; i++)
    if (g->scopes.v[i]->parent == s && scope_used(g, g->scopes.v[i]))
      print_scope(out, g, g->scopes.v[i], depth + 1);
  if (cluster)
    fprintf(out, "%*s}\n", depth * 2, "");
}

void dot_print(FILE *out, const Graph *g) {
  fprintf(out, "digraph ");
  quoted(out, g->name);
  fprintf(out, " {\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", "
               "fontsize=10];\n  edge [fontname=\"Helvetica\", fontsize=8];\n");
  for (int i = 0; i < g->scopes.n; i++)
    if (!g->scopes.v[i]->parent)
      print_scope(out, g, g->scopes.v[i], 0);
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = g->nodes.v[i];
    for (int j = 0; j < n->in.n; j++) {
      fprintf(out, "  n%d -> n%d [label=", n->in.v[j]->id, n->id);
      quoted(out, shape_str(g->a, n->in.v[j]->shape));
      fprintf(out, "];\n");
    }
  }
  for (int i = 0; i < g->outputs.n; i++) {
    fprintf(out, "  out%d [shape=ellipse, label=", i);
    quoted(out, g->outputs.v[i].name);
    fprintf(out, "];\n  n%d -> out%d;\n", g->outputs.v[i].node->id, i);
  }
  fprintf(out, "}\n");
}
