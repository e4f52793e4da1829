/* Shape rules of every operator, with PyTorch's semantics: the output
 * shape of a node from its inputs and attributes, and the parameters and
 * buffers it owns with PyTorch's names and shapes. Errors name the layer,
 * the shapes involved and where each input came from. */
#include "shape.h"

#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "check.h"
#include "ops.h"

/* No tensor may hold more elements than this: far beyond any real model,
 * and small enough that byte counts never overflow. */
#define MAX_ELEMS ((int64_t)1 << 40)
#define MAX_MACS ((int64_t)1 << 50) /* per node and sample */

static void say(Diag *d, const Node *n, const char *fmt, va_list ap) {
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  diag_error(d, n->loc, "%s '%s': %s", op_info[n->op].name, n->name, msg);
}

static int fail(Diag *d, const Node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(Diag *d, const Node *n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  say(d, n, fmt, ap);
  va_end(ap);
  return 0;
}

/* Where input i came from, as a note after an error. */
static void from(Diag *d, Arena *a, const Node *n, int i) {
  const Node *in = n->in.v[i];
  if (in->op == OP_INPUT)
    diag_note(d, in->loc, "input '%s' of shape %s is declared here", in->name,
              shape_str(a, in->shape));
  else
    diag_note(d, in->loc, "'%s' produces %s here", in->name,
              shape_str(a, in->shape));
}

static int need_rank(Diag *d, Arena *a, const Node *n, int rank) {
  const Shape s = n->in.v[0]->shape;
  if (s.rank == rank)
    return 1;
  if (rank == 3 && s.rank == 1)
    fail(d, n,
         "needs a [C, H, W] input, but gets %s (apply it before "
         "'flatten')",
         shape_str(a, s));
  else if (rank == 3)
    fail(d, n, "needs a [C, H, W] input, but gets %s", shape_str(a, s));
  else
    fail(d, n, "needs a flat [F] input, but gets %s (write 'flatten' first)",
         shape_str(a, s));
  from(d, a, n, 0);
  return 0;
}

static Shape shp(int rank, int64_t a, int64_t b, int64_t c, int64_t e) {
  Shape s = {rank, {a, b, c, e}};
  return s;
}

static void param(Graph *g, Node *n, const char *role, Shape s) {
  graph_add_param(g, n, role, s, PK_PARAM, DT_F32);
}

static void buffer(Graph *g, Node *n, const char *role, Shape s, DType t) {
  graph_add_param(g, n, role, s, PK_BUFFER, t);
}

static const char *const axis_name[2] = {"height", "width"};
static const char *const axis_rows[2][2] = {{"row", "rows"},
                                            {"column", "columns"}};

/* Output size along one axis of a window sliding over the padded input,
 * PyTorch's formula; warns when real input rows are never read. */
static int window(Diag *d, Arena *a, const Node *n, int ax, int64_t in,
                  int64_t k, int64_t s, int64_t p_lo, int64_t p_hi, int64_t dil,
                  int ceil_mode, int64_t *out) {
  int64_t eff = dil * (k - 1) + 1;
  int64_t span = in + p_lo + p_hi - eff;
  if (span < 0) {
    if (dil > 1)
      return fail(d, n,
                  "the dilated kernel (%" PRId64 " with dilation %" PRId64
                  ") is larger than the padded input %s %" PRId64,
                  eff, dil, axis_name[ax], in + p_lo + p_hi);
    return fail(d, n,
                "the kernel %s %" PRId64 " is larger than the padded input "
                "%s %" PRId64 " (input %s)",
                axis_name[ax], k, axis_name[ax], in + p_lo + p_hi,
                shape_str(a, n->in.v[0]->shape));
  }
  int64_t o = span / s + 1;
  if (ceil_mode) {
    o = (span + s - 1) / s + 1;
    if ((o - 1) * s >= in + p_lo) /* the last window must start inside */
      o--;
  } else {
    int64_t unread = span % s - p_hi;
    if (unread > 0 && eff >= s) {
      int64_t down = in - span % s, up = down + s;
      diag_warning(
          d, n->loc,
          "%s '%s' never reads the last %" PRId64 " input %s of %" PRId64
          " (%" PRId64 " + padding %" PRId64 " - kernel %" PRId64
          " is not a multiple of the stride %" PRId64
          "); an input %s of %" PRId64 " or %" PRId64 " divides exactly",
          op_info[n->op].name, n->name, unread, axis_rows[ax][unread > 1], in,
          in, p_lo + p_hi, eff, s, axis_name[ax], down, up);
    }
  }
  *out = o;
  return 1;
}

static int conv_like(Diag *d, Graph *g, Node *n) {
  Arena *a = g->a;
  Attrs *at = &n->at;
  if (!need_rank(d, a, n, 3))
    return 0;
  Shape x = n->in.v[0]->shape;
  int64_t c = x.d[0];
  int deconv = n->op == OP_DECONV;
  if (c % at->groups || at->out % at->groups) {
    fail(d, n,
         "groups=%" PRId64 " must divide both the input channels (%" PRId64
         ") and the output channels (%" PRId64 ")",
         at->groups, c, at->out);
    from(d, a, n, 0);
    return 0;
  }
  int64_t o[2];
  for (int ax = 0; ax < 2; ax++) {
    if (at->same) {
      int64_t total = at->d[ax] * (at->k[ax] - 1);
      at->p[ax] = total / 2;
      at->pad_end[ax] = total - total / 2;
    } else {
      at->pad_end[ax] = at->p[ax];
    }
    if (deconv) {
      /* (in - 1) * s can pass 64 bits; the other terms are below 2^63. */
      int64_t span = at->d[ax] * (at->k[ax] - 1) + at->output_padding[ax] + 1;
      if (__builtin_mul_overflow(x.d[ax + 1] - 1, at->s[ax], &o[ax]) ||
          __builtin_add_overflow(o[ax], span, &o[ax]))
        return fail(d, n, "the output %s would not fit in 64 bits",
                    axis_name[ax]);
      o[ax] -= 2 * at->p[ax];
      if (o[ax] < 1)
        return fail(d, n, "the output %s would be %" PRId64, axis_name[ax],
                    o[ax]);
    } else if (!window(d, a, n, ax, x.d[ax + 1], at->k[ax], at->s[ax],
                       at->p[ax], at->pad_end[ax], at->d[ax], 0, &o[ax])) {
      from(d, a, n, 0);
      return 0;
    }
  }
  n->shape = shp(3, at->out, o[0], o[1], 0);
  if (deconv)
    param(g, n, "weight", shp(4, c, at->out / at->groups, at->k[0], at->k[1]));
  else
    param(g, n, "weight", shp(4, at->out, c / at->groups, at->k[0], at->k[1]));
  if (at->bias)
    param(g, n, "bias", shp(1, at->out, 0, 0, 0));
  return 1;
}

static int pool(Diag *d, Graph *g, Node *n) {
  Attrs *at = &n->at;
  if (!need_rank(d, g->a, n, 3))
    return 0;
  Shape x = n->in.v[0]->shape;
  int64_t o[2];
  for (int ax = 0; ax < 2; ax++) {
    at->pad_end[ax] = at->p[ax];
    at->d[ax] = 1;
    if (!window(d, g->a, n, ax, x.d[ax + 1], at->k[ax], at->s[ax], at->p[ax],
                at->p[ax], 1, at->ceil, &o[ax])) {
      from(d, g->a, n, 0);
      return 0;
    }
  }
  n->shape = shp(3, x.d[0], o[0], o[1], 0);
  return 1;
}

static int same_shape(Shape a, Shape b) {
  if (a.rank != b.rank)
    return 0;
  for (int i = 0; i < a.rank; i++)
    if (a.d[i] != b.d[i])
      return 0;
  return 1;
}

static int concat(Diag *d, Graph *g, Node *n) {
  Arena *a = g->a;
  Shape first = n->in.v[0]->shape;
  if (first.rank != 3 && first.rank != 1) {
    fail(d, n, "joins [C, H, W] or [F] tensors, not %s", shape_str(a, first));
    from(d, a, n, 0);
    return 0;
  }
  Shape out = first;
  for (int i = 1; i < n->in.n; i++) {
    Shape s = n->in.v[i]->shape;
    int ok = s.rank == first.rank &&
             (s.rank == 1 || (s.d[1] == first.d[1] && s.d[2] == first.d[2]));
    if (!ok) {
      fail(d, n, "input %d has shape %s but input 1 has %s; %s", i + 1,
           shape_str(a, s), shape_str(a, first),
           first.rank == 3 ? "height and width must match (crop the larger "
                             "one)"
                           : "both must be [C, H, W] or both [F]");
      from(d, a, n, 0);
      from(d, a, n, i);
      return 0;
    }
    out.d[0] += s.d[0];
  }
  n->shape = out;
  return 1;
}

static int binary_same(Diag *d, Graph *g, Node *n, const char *verb) {
  Shape x = n->in.v[0]->shape, y = n->in.v[1]->shape;
  if (same_shape(x, y)) {
    n->shape = n->op == OP_MSE ? shp(0, 0, 0, 0, 0) : x;
    return 1;
  }
  fail(d, n, "cannot %s %s and %s: the shapes must be identical", verb,
       shape_str(g->a, x), shape_str(g->a, y));
  from(d, g->a, n, 0);
  from(d, g->a, n, 1);
  return 0;
}

static int rules(Diag *d, Graph *g, Node *n) {
  Arena *a = g->a;
  Attrs *at = &n->at;
  Shape x = n->in.n ? n->in.v[0]->shape : n->shape;
  switch (n->op) {
  case OP_INPUT: return 1;
  case OP_CONV:
  case OP_DECONV: return conv_like(d, g, n);
  case OP_DENSE:
    if (!need_rank(d, a, n, 1))
      return 0;
    n->shape = shp(1, at->out, 0, 0, 0);
    param(g, n, "weight", shp(2, at->out, x.d[0], 0, 0));
    if (at->bias)
      param(g, n, "bias", shp(1, at->out, 0, 0, 0));
    return 1;
  case OP_MAXPOOL:
  case OP_AVGPOOL: return pool(d, g, n);
  case OP_GLOBAL_AVGPOOL:
    if (!need_rank(d, a, n, 3))
      return 0;
    n->shape = shp(3, x.d[0], 1, 1, 0);
    return 1;
  case OP_ADAPTIVE_AVGPOOL:
    if (!need_rank(d, a, n, 3))
      return 0;
    n->shape = shp(3, x.d[0], at->n[0], at->n[1], 0);
    return 1;
  case OP_RELU:
  case OP_LEAKY_RELU:
  case OP_TANH:
  case OP_SIGMOID:
  case OP_DROPOUT: n->shape = x; return 1;
  case OP_SOFTMAX:
    if (x.rank < 1)
      return fail(d, n, "needs a tensor with channels, not a scalar");
    n->shape = x;
    return 1;
  case OP_BN:
    if (x.rank != 3 && x.rank != 1) {
      fail(d, n, "normalizes [C, H, W] or [F] tensors, not %s",
           shape_str(a, x));
      from(d, a, n, 0);
      return 0;
    }
    n->shape = x;
    param(g, n, "weight", shp(1, x.d[0], 0, 0, 0));
    param(g, n, "bias", shp(1, x.d[0], 0, 0, 0));
    buffer(g, n, "running_mean", shp(1, x.d[0], 0, 0, 0), DT_F32);
    buffer(g, n, "running_var", shp(1, x.d[0], 0, 0, 0), DT_F32);
    buffer(g, n, "num_batches_tracked", shp(0, 0, 0, 0, 0), DT_I64);
    return 1;
  case OP_LAYERNORM:
    if (x.rank < 1)
      return fail(d, n, "needs a tensor, not a scalar");
    n->shape = x;
    param(g, n, "weight", x);
    param(g, n, "bias", x);
    return 1;
  case OP_INSTANCENORM:
    if (!need_rank(d, a, n, 3))
      return 0;
    n->shape = x;
    param(g, n, "weight", shp(1, x.d[0], 0, 0, 0));
    param(g, n, "bias", shp(1, x.d[0], 0, 0, 0));
    return 1;
  case OP_GROUPNORM:
    if (!need_rank(d, a, n, 3))
      return 0;
    if (x.d[0] % at->g) {
      fail(d, n, "%" PRId64 " groups do not divide %" PRId64 " channels", at->g,
           x.d[0]);
      from(d, a, n, 0);
      return 0;
    }
    n->shape = x;
    param(g, n, "weight", shp(1, x.d[0], 0, 0, 0));
    param(g, n, "bias", shp(1, x.d[0], 0, 0, 0));
    return 1;
  case OP_LRN:
    if (!need_rank(d, a, n, 3))
      return 0;
    n->shape = x;
    return 1;
  case OP_FLATTEN: {
    if (x.rank < 1)
      return fail(d, n, "needs a tensor, not a scalar");
    n->shape = shp(1, shape_numel(x), 0, 0, 0);
    return 1;
  }
  case OP_CONCAT: return concat(d, g, n);
  case OP_ADD: return binary_same(d, g, n, "add");
  case OP_MSE: return binary_same(d, g, n, "compare");
  case OP_UPSAMPLE:
    if (!need_rank(d, a, n, 3))
      return 0;
    for (int ax = 1; ax <= 2; ax++) {
      int64_t o;
      if (__builtin_mul_overflow(x.d[ax], at->scale, &o))
        return fail(d, n, "the output %s would not fit in 64 bits",
                    axis_name[ax - 1]);
    }
    n->shape = shp(3, x.d[0], x.d[1] * at->scale, x.d[2] * at->scale, 0);
    return 1;
  case OP_CROP: {
    Shape like = n->in.v[1]->shape;
    if (!need_rank(d, a, n, 3))
      return 0;
    if (like.rank != 3 || like.d[1] > x.d[1] || like.d[2] > x.d[2]) {
      fail(d, n, "cannot crop %s to the height and width of %s",
           shape_str(a, x), shape_str(a, like));
      from(d, a, n, 0);
      from(d, a, n, 1);
      return 0;
    }
    /* The crop's offsets, top and left. */
    at->p[0] = (x.d[1] - like.d[1]) / 2;
    at->p[1] = (x.d[2] - like.d[2]) / 2;
    n->shape = shp(3, x.d[0], like.d[1], like.d[2], 0);
    return 1;
  }
  case OP_CROSS_ENTROPY:
    if (x.rank != 1 && x.rank != 3) {
      fail(d, n, "needs logits of shape [K] or [K, H, W], not %s",
           shape_str(a, x));
      from(d, a, n, 0);
      return 0;
    }
    n->shape = shp(0, 0, 0, 0, 0);
    return 1;
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
  case OP_LOSS_DX: return 1; /* shaped by the pass that makes them */
  case OP_NONE:
  case OP_COUNT: break;
  }
  diag_internal(d, "no shape rule for operator %d", (int)n->op);
  return 0;
}

static int too_large(Shape s) {
  int64_t n = 1;
  for (int i = 0; i < s.rank; i++)
    if (__builtin_mul_overflow(n, s.d[i], &n) || n > MAX_ELEMS)
      return 1;
  return 0;
}

int shape_infer(Diag *d, Graph *g, Node *n) {
  if (!rules(d, g, n))
    return 0;
  if (too_large(n->shape))
    return fail(d, n, "its output %s has more than 2^40 elements",
                shape_str(g->a, n->shape));
  for (int i = 0; i < n->params.n; i++)
    if (too_large(n->params.v[i]->shape))
      return fail(d, n, "its %s %s has more than 2^40 elements",
                  n->params.v[i]->role, shape_str(g->a, n->params.v[i]->shape));
  if (check_macs(n) > MAX_MACS)
    return fail(d, n,
                "it needs more than 2^50 multiply-accumulates per sample");
  return 1;
}
