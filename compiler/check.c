/* The layer table of `cnnc check`.
 *
 * Receptive field: for each element of a tensor, the input region that
 * affects it, tracked per axis as the region of element 0 (start, size)
 * and the distance between neighbouring elements' regions (jump), in input
 * pixels: a window of effective size e, stride s and padding p maps
 * (start, size, jump) to (start - p*jump, size + (e-1)*jump, jump*s).
 * Joins take the union. Operators that mix all positions (dense, global
 * pooling, normalizations over H and W) see the whole input. */
#include "check.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "ops.h"

/* a * b * c * d, or INT64_MAX when that does not fit. */
static int64_t product(int64_t a, int64_t b, int64_t c, int64_t d) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r) || __builtin_mul_overflow(r, c, &r) ||
      __builtin_mul_overflow(r, d, &r))
    return INT64_MAX;
  return r;
}

static int64_t sum(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}

int64_t check_macs(const Node *n) {
  const Attrs *at = &n->at;
  switch (n->op) {
  case OP_CONV:
    return product(shape_numel(n->shape), n->in.v[0]->shape.d[0] / at->groups,
                   at->k[0], at->k[1]);
  case OP_DECONV:
    return product(shape_numel(n->in.v[0]->shape), at->out / at->groups,
                   at->k[0], at->k[1]);
  case OP_DENSE: return product(n->in.v[0]->shape.d[0], at->out, 1, 1);
  case OP_INPUT:
  case OP_MAXPOOL:
  case OP_AVGPOOL:
  case OP_GLOBAL_AVGPOOL:
  case OP_ADAPTIVE_AVGPOOL:
  case OP_RELU:
  case OP_LEAKY_RELU:
  case OP_TANH:
  case OP_SIGMOID:
  case OP_SOFTMAX:
  case OP_BN:
  case OP_LAYERNORM:
  case OP_INSTANCENORM:
  case OP_GROUPNORM:
  case OP_LRN:
  case OP_DROPOUT:
  case OP_FLATTEN:
  case OP_CONCAT:
  case OP_ADD:
  case OP_UPSAMPLE:
  case OP_CROP:
  case OP_CROSS_ENTROPY:
  case OP_MSE:
  case OP_PARAM:
  case OP_CONV_DX:
  case OP_CONV_DW:
  case OP_DECONV_DX:
  case OP_DECONV_DW:
  case OP_DENSE_DX:
  case OP_DENSE_DW:
  case OP_BIAS_GRAD:
  case OP_POOL_DX:
  case OP_ACT_DX:
  case OP_SOFTMAX_DX:
  case OP_BN_DX:
  case OP_BN_DW:
  case OP_NORM_DX:
  case OP_NORM_DW:
  case OP_NORM_DB:
  case OP_LRN_DX:
  case OP_DROPOUT_DX:
  case OP_SLICE:
  case OP_UPSAMPLE_DX:
  case OP_CROP_DX:
  case OP_LOSS_DX:
  case OP_NONE:
  case OP_COUNT: break;
  }
  return 0;
}

Totals check_totals(const Graph *g) {
  Totals t = {0};
  for (int i = 0; i < g->params.n; i++) {
    const Param *p = g->params.v[i];
    int64_t n = shape_numel(p->shape);
    if (p->kind == PK_BUFFER) {
      t.buffer_values += n;
      continue;
    }
    t.params += n;
    if (p->frozen)
      t.frozen += n;
    else
      t.trainable += n;
  }
  for (int i = 0; i < g->nodes.n; i++) {
    t.macs = sum(t.macs, check_macs(g->nodes.v[i]));
    t.activations += shape_numel(g->nodes.v[i]->shape);
  }
  return t;
}

/* --- receptive fields ------------------------------------------------------
 */

typedef enum { RF_NONE, RF_LOCAL, RF_ALL } RfKind;
typedef struct Rf {
  RfKind kind;
  double start[2], size[2], jump[2];
} Rf;

static Rf rf_window(Rf r, const int64_t *k, const int64_t *s, const int64_t *p,
                    const int64_t *d) {
  for (int ax = 0; ax < 2; ax++) {
    double eff = (double)(d[ax] * (k[ax] - 1) + 1);
    r.start[ax] -= (double)p[ax] * r.jump[ax];
    r.size[ax] += (eff - 1) * r.jump[ax];
    r.jump[ax] *= (double)s[ax];
  }
  return r;
}

static Rf rf_node(const Node *n, const Rf *rf) {
  Rf none = {RF_NONE, {0}, {0}, {0}};
  if (n->op == OP_INPUT) {
    if (n->shape.rank != 3 || n->dtype != DT_F32)
      return none;
    return (Rf){RF_LOCAL, {0, 0}, {1, 1}, {1, 1}};
  }
  /* Union over the inputs that come from an image. */
  Rf r = none;
  for (int i = 0; i < n->in.n; i++) {
    Rf x = rf[n->in.v[i]->id];
    if (x.kind == RF_NONE)
      continue;
    if (r.kind == RF_NONE || x.kind == RF_ALL) {
      if (r.kind != RF_ALL)
        r = x;
      continue;
    }
    if (r.kind == RF_ALL)
      continue;
    for (int ax = 0; ax < 2; ax++) {
      double end = fmax(r.start[ax] + r.size[ax], x.start[ax] + x.size[ax]);
      r.start[ax] = fmin(r.start[ax], x.start[ax]);
      r.size[ax] = end - r.start[ax];
      r.jump[ax] = fmax(r.jump[ax], x.jump[ax]);
    }
  }
  if (r.kind != RF_LOCAL)
    return r;
  const Attrs *at = &n->at;
  Rf all = {RF_ALL, {0}, {0}, {0}};
  switch (n->op) {
  case OP_CONV: return rf_window(r, at->k, at->s, at->p, at->d);
  case OP_MAXPOOL:
  case OP_AVGPOOL: {
    const int64_t one[2] = {1, 1};
    return rf_window(r, at->k, at->s, at->p, one);
  }
  case OP_DECONV:
    for (int ax = 0; ax < 2; ax++) {
      double eff = (double)(at->d[ax] * (at->k[ax] - 1) + 1);
      double taps = ceil(eff / (double)at->s[ax]);
      double first = ceil((double)(at->p[ax] - (eff - 1)) / (double)at->s[ax]);
      r.start[ax] += first * r.jump[ax];
      r.size[ax] += (taps - 1) * r.jump[ax];
      r.jump[ax] /= (double)at->s[ax];
    }
    return r;
  case OP_ADAPTIVE_AVGPOOL: {
    Shape x = n->in.v[0]->shape;
    for (int ax = 0; ax < 2; ax++) {
      double win = ceil((double)x.d[ax + 1] / (double)at->n[ax]);
      r.size[ax] += (win - 1) * r.jump[ax];
      r.jump[ax] *= (double)x.d[ax + 1] / (double)at->n[ax];
    }
    return r;
  }
  case OP_UPSAMPLE:
    for (int ax = 0; ax < 2; ax++) {
      if (at->mode && strcmp(at->mode, "bilinear") == 0)
        r.size[ax] += r.jump[ax];
      r.jump[ax] /= (double)at->scale;
    }
    return r;
  case OP_CROP:
    for (int ax = 0; ax < 2; ax++)
      r.start[ax] += (double)at->p[ax] * r.jump[ax];
    return r;
  case OP_GLOBAL_AVGPOOL:
  case OP_DENSE:
  case OP_FLATTEN:
  case OP_LAYERNORM:
  case OP_INSTANCENORM:
  case OP_GROUPNORM:
  case OP_CROSS_ENTROPY:
  case OP_MSE: return all;
  case OP_INPUT:
  case OP_RELU:
  case OP_LEAKY_RELU:
  case OP_TANH:
  case OP_SIGMOID:
  case OP_SOFTMAX:
  case OP_BN:
  case OP_LRN:
  case OP_DROPOUT:
  case OP_CONCAT:
  case OP_ADD:
  case OP_PARAM:
  case OP_CONV_DX:
  case OP_CONV_DW:
  case OP_DECONV_DX:
  case OP_DECONV_DW:
  case OP_DENSE_DX:
  case OP_DENSE_DW:
  case OP_BIAS_GRAD:
  case OP_POOL_DX:
  case OP_ACT_DX:
  case OP_SOFTMAX_DX:
  case OP_BN_DX:
  case OP_BN_DW:
  case OP_NORM_DX:
  case OP_NORM_DW:
  case OP_NORM_DB:
  case OP_LRN_DX:
  case OP_DROPOUT_DX:
  case OP_SLICE:
  case OP_UPSAMPLE_DX:
  case OP_CROP_DX:
  case OP_LOSS_DX:
  case OP_NONE:
  case OP_COUNT: break;
  }
  return r;
}

/* --- printing ------------------------------------------------------------ */

static char *commas(char *buf, int64_t v) {
  char tmp[32];
  snprintf(tmp, sizeof tmp, "%" PRId64, v < 0 ? -v : v);
  int len = (int)strlen(tmp), k = 0;
  if (v < 0)
    buf[k++] = '-';
  for (int i = 0; i < len; i++) {
    buf[k++] = tmp[i];
    if ((len - i - 1) % 3 == 0 && i != len - 1)
      buf[k++] = ',';
  }
  buf[k] = 0;
  return buf;
}

static void human(char *buf, size_t n, double v, const char *unit) {
  const char *pre[] = {"", "K", "M", "G", "T"};
  int i = 0;
  while (v >= 1000 && i < 4) {
    v /= 1000;
    i++;
  }
  snprintf(buf, n, i ? "%.1f %s%s" : "%.0f %s%s", v, pre[i], unit);
}

static void fmt_pair(char *buf, size_t n, double a, double b) {
  if (a == b)
    snprintf(buf, n, "%g", a);
  else
    snprintf(buf, n, "%gx%g", a, b);
}

enum { NCOL = 7 };

typedef struct Row {
  const char *col[NCOL];
} Row;

void check_print_table(FILE *out, const Graph *g, const char *path) {
  Arena *a = g->a;
  Rf *rf = arena_alloc(a, sizeof(Rf) * (size_t)(g->nodes.n + 1));
  int64_t extent[2] = {0, 0};
  for (int i = 0; i < g->inputs.n; i++)
    if (g->inputs.v[i]->shape.rank == 3 && g->inputs.v[i]->dtype == DT_F32 &&
        !extent[0]) {
      extent[0] = g->inputs.v[i]->shape.d[1];
      extent[1] = g->inputs.v[i]->shape.d[2];
    }
  Row *rows = arena_alloc(a, sizeof(Row) * (size_t)(g->nodes.n + 1));
  rows[0] = (Row){
      {"layer", "op", "output", "params", "MACs", "receptive field", "train"}};
  int nrows = 1;
  for (int i = 0; i < g->nodes.n; i++) {
    const Node *n = g->nodes.v[i];
    rf[n->id] = rf_node(n, rf);
    char buf[64];
    int64_t params = 0;
    for (int j = 0; j < n->params.n; j++)
      if (n->params.v[j]->kind == PK_PARAM)
        params += shape_numel(n->params.v[j]->shape);
    Row *r = &rows[nrows++];
    r->col[0] = n->name;
    r->col[1] = op_info[n->op].name;
    r->col[2] = shape_str(a, n->shape);
    r->col[3] = params ? arena_strdup(a, commas(buf, params)) : "-";
    int64_t macs = check_macs(n);
    r->col[4] = macs ? arena_strdup(a, commas(buf, macs)) : "-";
    Rf x = rf[n->id];
    if (x.kind == RF_LOCAL) {
      char s[32], j[32];
      fmt_pair(s, sizeof s, fmin(x.size[0], (double)extent[0]),
               fmin(x.size[1], (double)extent[1]));
      fmt_pair(j, sizeof j, x.jump[0], x.jump[1]);
      r->col[5] = arena_printf(a, "%s, jump %s", s, j);
    } else if (x.kind == RF_ALL) {
      r->col[5] = "whole input";
    } else {
      r->col[5] = "-";
    }
    r->col[6] = n->params.n ? (n->frozen ? "frozen" : "yes") : "";
  }
  int w[NCOL] = {0};
  for (int i = 0; i < nrows; i++)
    for (int c = 0; c < NCOL; c++) {
      int len = (int)strlen(rows[i].col[c]);
      if (len > w[c])
        w[c] = len;
    }
  fprintf(out, "model %s (%s)\n\n", g->name, path);
  for (int i = 0; i < nrows; i++) {
    const Row *r = &rows[i];
    char line[1024];
    snprintf(line, sizeof line, "%-*s  %-*s  %-*s  %*s  %*s  %-*s  %s", w[0],
             r->col[0], w[1], r->col[1], w[2], r->col[2], w[3], r->col[3], w[4],
             r->col[4], w[5], r->col[5], r->col[6]);
    size_t len = strlen(line);
    while (len > 0 && line[len - 1] == ' ')
      line[--len] = 0;
    fprintf(out, "%s\n", line);
  }
  Totals t = check_totals(g);
  char b1[32], b2[32], b3[32], h[32];
  fprintf(out, "\n");
  for (int i = 0; i < g->outputs.n; i++)
    fprintf(out, "output %s: %s from '%s'\n", g->outputs.v[i].name,
            shape_str(a, g->outputs.v[i].node->shape),
            g->outputs.v[i].node->name);
  if (g->loss)
    fprintf(out, "loss: %s ('%s')\n", op_info[g->loss->op].name, g->loss->name);
  fprintf(out, "parameters: %s total, %s trainable, %s frozen\n",
          commas(b1, t.params), commas(b2, t.trainable), commas(b3, t.frozen));
  if (t.buffer_values)
    fprintf(out, "buffers: %s values (running statistics)\n",
            commas(b1, t.buffer_values));
  human(h, sizeof h, (double)t.macs, "MAC");
  fprintf(out, "MACs per sample: %s (%s)\n", commas(b1, t.macs), h);
  human(h, sizeof h, (double)t.activations * 4.0, "B");
  fprintf(out,
          "activation memory per sample: %s (%s float32 values in all "
          "layer outputs)\n",
          h, commas(b1, t.activations));
}

void check_print_params(FILE *out, const Graph *g) {
  for (int i = 0; i < g->params.n; i++) {
    const Param *p = g->params.v[i];
    fprintf(out, "%s\t", p->name);
    for (int j = 0; j < p->shape.rank; j++)
      fprintf(out, "%s%" PRId64, j ? "," : "", p->shape.d[j]);
    fprintf(out, "\t%s\n", p->kind == PK_PARAM ? "param" : "buffer");
  }
}
