/* Lowering of every operator's forward pass, eval mode: batch norm with
 * running statistics, dropout as identity. Each case of lower_node says
 * how one operator computes, as loops; PyTorch's definitions are the
 * reference (the oracle tests compare against it). Activations are NCHW
 * with the batch outermost; an element's index is built by idx(). */
#include "lower_impl.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

#include "contract.h"
#include "fuse.h"
#include "ops.h"
#include "schedule.h"

/* C keywords and the generated code's own names, which buffers avoid. */
static const char *const reserved[] = {
    "auto",
    "break",
    "case",
    "char",
    "const",
    "continue",
    "default",
    "do",
    "double",
    "else",
    "enum",
    "extern",
    "float",
    "for",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "register",
    "restrict",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "typedef",
    "union",
    "unsigned",
    "void",
    "volatile",
    "while",
    "s",
    "count",
    "INFINITY",
    "NAN",
    "int64_t",
    "size_t",
    "uint64_t",
    "main",
    "ptrdiff_t",
    "err",
    "errlen",
    "seed",
    "data",
    "size",
    /* loop variables and temporaries of the kernels */
    "n",
    "g",
    "oc",
    "ocg",
    "oh",
    "ow",
    "ic",
    "icg",
    "kh",
    "kw",
    "i",
    "ih",
    "iw",
    "o",
    "c",
    "p",
    "j",
    "h",
    "w",
    "acc",
    "v",
    "m",
    "sum",
    "scale",
    "shift",
    "mean",
    "sq",
    "d",
    "inv",
    "lh",
    "lw",
    "wv",
    "ob",
    "t",
    "a",
    "l",
    "arg",
    "base",
    "buf",
    "cc",
    "dc",
    "di",
    "dot",
    "gv",
    "h0",
    "jj",
    "k",
    "kc",
    "label",
    "q",
    "r",
    "rh",
    "root",
    "rw",
    "se",
    "sum_g",
    "sum_g_xhat",
    "total",
    "w0",
    "xhat",
    "z",
    "row",
    "col",
    /* functions the kernels call */
    "max_of",
    "min_of",
    "madd",
    "sqrtf",
    "expf",
    "logf",
    "powf",
    "uniform",
};

/* Whether s is one or more digits and nothing else. */
static int all_digits(const char *s) {
  if (!*s)
    return 0;
  for (; *s; s++)
    if (!isdigit((unsigned char)*s))
      return 0;
  return 1;
}

static int name_taken(const Program *p, const char *name) {
  for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++) {
    size_t len = strlen(reserved[i]);
    if (strncmp(reserved[i], name, len) != 0)
      continue;
    /* the name itself, or a numbered loop variable like "c_2" (only that:
     * "l_2_weight" is free, and a suffix added after it must free a name
     * or c_name never ends) */
    if (name[len] == 0 || (name[len] == '_' && all_digits(name + len + 1)))
      return 1;
  }
  return nameset_has(&p->names, name);
}

/* A C identifier for a model name: "layer1.0.conv1" -> "layer1_0_conv1". */
static const char *c_name(Program *p, const char *model_name) {
  size_t len = strlen(model_name);
  char *s = arena_alloc(p->a, len + 2);
  size_t k = 0;
  if (!isalpha((unsigned char)model_name[0]) && model_name[0] != '_')
    s[k++] = 't';
  for (size_t i = 0; i < len; i++)
    s[k++] = isalnum((unsigned char)model_name[i]) ? model_name[i] : '_';
  const char *name = s;
  for (int suffix = 1; name_taken(p, name); suffix++)
    name = suffix == 1 ? arena_printf(p->a, "%s_t", s)
                       : arena_printf(p->a, "%s_t%d", s, suffix);
  return name;
}

static Buffer *new_buffer(Program *p, const char *name, BufKind kind,
                          int64_t size) {
  Buffer *b = arena_alloc(p->a, sizeof *b);
  b->id = p->bufs.n;
  b->name = c_name(p, name);
  nameset_add(p->a, &p->names, b->name);
  b->kind = kind;
  b->size = size;
  b->first = b->last = -1;
  vec_push(p->a, p->bufs, b);
  return b;
}

static Buffer *scratch(Lower *L, const char *what, int64_t size, Shape s) {
  const Node *nd = L->node;
  Buffer *b = new_buffer(L->p, arena_printf(L->p->a, "%s.%s", nd->name, what),
                         BUF_ARENA, size);
  b->node = nd;
  b->shape = s;
  return b;
}

Buffer *lower_scratch(Lower *L, const char *what, Shape s) {
  return scratch(L, what, shape_numel(s) * L->p->batch, s);
}

Buffer *lower_scratch_once(Lower *L, const char *what, int64_t numel) {
  return scratch(L, what, numel, shape_of(1, &numel));
}

Buffer *lower_packed(Lower *L, int64_t numel) {
  Buffer *b = scratch(L, "packed", numel, shape_of(1, &numel));
  b->kind = BUF_PACKED;
  return b;
}

/* Convolution, accumulating each (input channel, tap) into the output
 * plane: the innermost loop walks an output row and the matching input
 * row, which compilers vectorize, and every output element still sums
 * bias, then channels and taps in PyTorch's order. */
static void lower_conv(Lower *L, Buffer *y, Buffer *x, Buffer *w,
                       Buffer *bias) {
  if (lower_conv_tiled(L, y, x, w, bias))
    return;
  const Node *nd = L->node;
  const Attrs *at = &nd->at;
  Shape xs = nd->in.v[0]->shape, ys = nd->shape;
  int64_t G = at->groups, Cg = xs.d[0] / G, Og = ys.d[0] / G;
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int g = G > 1 ? lb_for(b, "g", G) : -1;
  int oc = lb_for(b, G > 1 ? "ocg" : "oc", Og);
  Expr *ocx = g >= 0 ? add(L, mul(L, V(L, g), I(L, Og)), V(L, oc)) : V(L, oc);
  int oh = lb_for(b, "oh", ys.d[1]);
  int ow = lb_for(b, "ow", ys.d[2]);
  lb_store(b, y, idx(L, V(L, n), ocx, V(L, oh), V(L, ow), ys),
           bias ? load(L, bias, ocx) : F(L, 0));
  close(L, 2);
  int ic = lb_for(b, "ic", Cg);
  int kh = lb_for(b, "kh", at->k[0]);
  int kw = lb_for(b, "kw", at->k[1]);
  Expr *icx = g >= 0 ? add(L, mul(L, V(L, g), I(L, Cg)), V(L, ic)) : V(L, ic);
  Shape ws = {3, {Cg, at->k[0], at->k[1], 0}};
  int wv = lb_let(b, "wv",
                  load(L, w, idx(L, ocx, V(L, ic), V(L, kh), V(L, kw), ws)));
  oh = lb_for(b, "oh", ys.d[1]);
  Expr *ih = window_coord(L, oh, kh, at, 0);
  int64_t maxh =
      (ys.d[1] - 1) * at->s[0] - at->p[0] + (at->k[0] - 1) * at->d[0];
  int gh = open_if(L, in_range(L, ih, 0, xs.d[1], -at->p[0], maxh));
  ow = lb_for(b, "ow", ys.d[2]);
  Expr *iw = window_coord(L, ow, kw, at, 1);
  int64_t maxw =
      (ys.d[2] - 1) * at->s[1] - at->p[1] + (at->k[1] - 1) * at->d[1];
  int gw = open_if(L, in_range(L, iw, 0, xs.d[2], -at->p[1], maxw));
  lb_accum(
      b, y, idx(L, V(L, n), ocx, V(L, oh), V(L, ow), ys),
      mul(L, load(L, x, idx(L, V(L, n), icx, ih, iw, xs)), x_temp(L->p, wv)));
  close(L, gw + 1 + gh + 1 + 3 + 2 + (g >= 0));
}

/* Transposed convolution as a scatter: every input element adds its
 * kernel-weighted contributions to the outputs it reaches. */
static void lower_deconv(Lower *L, Buffer *y, Buffer *x, Buffer *w,
                         Buffer *bias) {
  const Node *nd = L->node;
  const Attrs *at = &nd->at;
  Shape xs = nd->in.v[0]->shape, ys = nd->shape;
  int64_t G = at->groups, Cg = xs.d[0] / G, Og = ys.d[0] / G;
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int i = lb_for(b, "i", shape_numel(ys));
  Expr *start =
      bias ? load(L, bias, dvd(L, V(L, i), I(L, ys.d[1] * ys.d[2]))) : F(L, 0);
  lb_store(b, y, flat(L, V(L, n), V(L, i), ys), start);
  close(L, 1);
  int g = G > 1 ? lb_for(b, "g", G) : -1;
  int ic = lb_for(b, G > 1 ? "icg" : "ic", Cg);
  int ih = lb_for(b, "ih", xs.d[1]);
  int iw = lb_for(b, "iw", xs.d[2]);
  Expr *icx = g >= 0 ? add(L, mul(L, V(L, g), I(L, Cg)), V(L, ic)) : V(L, ic);
  int xv =
      lb_let(b, "v", load(L, x, idx(L, V(L, n), icx, V(L, ih), V(L, iw), xs)));
  int oc = lb_for(b, "ocg", Og);
  int kh = lb_for(b, "kh", at->k[0]);
  int kw = lb_for(b, "kw", at->k[1]);
  Expr *oh = deconv_out(L, ih, kh, at, 0), *ow = deconv_out(L, iw, kw, at, 1);
  int opened = open_if(L, deconv_guard(L, oh, ow, at, xs, ys));
  Expr *ocx = g >= 0 ? add(L, mul(L, V(L, g), I(L, Og)), V(L, oc)) : V(L, oc);
  Shape ws = {3, {Og, at->k[0], at->k[1], 0}};
  Expr *wv = load(L, w, idx(L, icx, V(L, oc), V(L, kh), V(L, kw), ws));
  lb_accum(b, y, idx(L, V(L, n), ocx, oh, ow, ys),
           mul(L, x_temp(L->p, xv), wv));
  close(L, opened + 3 + 4 + (g >= 0));
}

static void lower_dense(Lower *L, Buffer *y, Buffer *x, Buffer *w,
                        Buffer *bias) {
  if (lower_dense_tiled(L, y, x, w, bias))
    return;
  const Node *nd = L->node;
  int64_t in = nd->in.v[0]->shape.d[0], out = nd->shape.d[0];
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int o = lb_for(b, "o", out);
  int acc = lb_let(b, "acc", bias ? load(L, bias, V(L, o)) : F(L, 0));
  int i = lb_for(b, "i", in);
  Expr *xv = load(L, x, add(L, mul(L, V(L, n), I(L, in)), V(L, i)));
  Expr *wv = load(L, w, add(L, mul(L, V(L, o), I(L, in)), V(L, i)));
  lb_set(b, acc, add(L, x_temp(L->p, acc), mul(L, xv, wv)));
  close(L, 1);
  Expr *at = add(L, mul(L, V(L, n), I(L, out)), V(L, o));
  lb_store(b, y, at, lower_epilogue(L, x_temp(L->p, acc), V(L, o), at));
  close(L, 2);
}

/* The sample and channel loops of a pool's nests, the one threads share
 * out (schedule_parallel, PAR_SAMPLES or PAR_BLOCKS: channels) outermost:
 * ResNet-18's max pool, 1.8 million loads a sample, ran on one thread. */
static void pool_loops(Lower *L, Parallel par, int64_t C, int *n, int *c) {
  LoopBuilder *b = &L->b;
  if (par == PAR_BLOCKS) {
    *c = lb_parallel_for(b, "c", C);
    *n = lb_for(b, "n", -1);
  } else {
    *n = par == PAR_SAMPLES ? lb_parallel_for(b, "n", -1) : lb_for(b, "n", -1);
    *c = lb_for(b, "c", C);
  }
}

/* The windows of the outputs in rows r and columns q of the plane (n, c):
 * their taps, each tested against x's edges unless every window there
 * lies inside, then the value stored. */
static void pool_span(Lower *L, Buffer *y, Buffer *x, Expr *n, Expr *c, Span r,
                      Span q) {
  if (!r.count || !q.count)
    return;
  const Node *nd = L->node;
  const Attrs *at = &nd->at;
  int max = nd->op == OP_MAXPOOL;
  Shape xs = nd->in.v[0]->shape, ys = nd->shape;
  LoopBuilder *b = &L->b;
  int oh = lb_for(b, "oh", r.count);
  int ow = lb_for(b, "ow", q.count);
  Expr *ohx = add(L, V(L, oh), I(L, r.from)),
       *owx = add(L, V(L, ow), I(L, q.from));
  int acc = lb_let(b, max ? "m" : "sum", F(L, max ? -INFINITY : 0));
  int kh = lb_for(b, "kh", at->k[0]);
  int kw = lb_for(b, "kw", at->k[1]);
  SpanTap tap = span_tap(L, at, xs, r, q, ohx, owx, kh, kw);
  Expr *hs = tap.hs, *ws = tap.ws, *ih = tap.ih, *iw = tap.iw;
  int opened = open_if(L, tap.guard);
  Expr *xv = load(L, x, idx(L, n, c, ih, iw, xs));
  Expr *t = x_temp(L->p, acc);
  lb_set(b, acc, max ? x_bin(L->p, X_MAX, t, xv) : add(L, t, xv));
  close(L, opened + 2);
  Expr *v = x_temp(L->p, acc);
  if (!max)
    v = x_bin(L->p, X_DIV, v,
              x_un(L->p, X_TOFLOAT, avg_divisor(L, at, xs, hs, ws)));
  lb_store(b, y, idx(L, n, c, ohx, owx, ys), v);
  close(L, 2);
}

/* The windows of output row oh, columns q, of sample n, from x kept
 * channels innermost (lower_layout.c); oh lies in the span of rows r
 * (for the taps' tests). Each tap's run of channels is taken into acc,
 * a local array of them, in the taps' order, then the outputs stored, a
 * run where y too keeps channels innermost. */
static void pool_span_hwc(Lower *L, Buffer *y, Buffer *x, Buffer *acc, Expr *n,
                          Expr *oh, Span r, Span q) {
  const Node *nd = L->node;
  const Attrs *at = &nd->at;
  int max = nd->op == OP_MAXPOOL;
  Shape xs = nd->in.v[0]->shape, ys = nd->shape;
  int64_t C = ys.d[0];
  LoopBuilder *b = &L->b;
  int ow = lb_for(b, "ow", q.count);
  Expr *owx = add(L, V(L, ow), I(L, q.from));
  int c = lb_for(b, "c", C);
  lb_store(b, acc, V(L, c), F(L, max ? -INFINITY : 0));
  close(L, 1);
  int kh = lb_for(b, "kh", at->k[0]);
  int kw = lb_for(b, "kw", at->k[1]);
  SpanTap tap = span_tap(L, at, xs, r, q, oh, owx, kh, kw);
  int opened = open_if(L, tap.guard);
  c = lb_for(b, "c", C);
  Expr *xv = load(L, x, idx_hwc(L, n, V(L, c), tap.ih, tap.iw, xs));
  Expr *t = load(L, acc, V(L, c));
  lb_store(b, acc, V(L, c), max ? x_bin(L->p, X_MAX, t, xv) : add(L, t, xv));
  close(L, 1 + opened + 2);
  c = lb_for(b, "c", C);
  Expr *v = load(L, acc, V(L, c));
  if (!max)
    v = x_bin(L->p, X_DIV, v,
              x_un(L->p, X_TOFLOAT, avg_divisor(L, at, xs, tap.hs, tap.ws)));
  lb_store(b, y, idx_of(L, y, n, V(L, c), oh, owx, ys), v);
  close(L, 2);
}

/* A pool of x kept channels innermost: in one loop over the output rows
 * (or the samples), which threads share out, the rows whose windows
 * reach past the top or bottom edge, every tap tested, and the rows
 * between in lower_pool's three spans of columns. */
static void lower_pool_hwc(Lower *L, Buffer *y, Buffer *x, Parallel par) {
  const Node *nd = L->node;
  Shape ys = nd->shape;
  LoopBuilder *b = &L->b;
  Buffer *acc = loop_local(L->p, b->k, "acc", ys.d[0]);
  b->k->schedule = y->hwc ? "x read channels innermost; y stored channels "
                            "innermost"
                          : "x read channels innermost";
  Span r[5], q[5];
  pool_spans(&nd->at, nd->in.v[0]->shape, ys, r, q);
  Span all = {0, ys.d[1]}, in = r[2];
  int n = par == PAR_SAMPLES ? lb_parallel_for(b, "n", -1) : -1;
  int oh = n < 0 && par != PAR_NONE ? lb_parallel_for(b, "oh", ys.d[1])
                                    : lb_for(b, "oh", ys.d[1]);
  if (n < 0)
    n = lb_for(b, "n", -1);
  Expr *row = V(L, oh), *nx = V(L, n);
  int64_t end = in.from + in.count;
  if (in.from > 0) {
    lb_if(b, x_bin(L->p, X_LT, row, I(L, in.from)));
    pool_span_hwc(L, y, x, acc, nx, row, all, q[0]);
    close(L, 1);
  }
  if (end < ys.d[1]) {
    lb_if(b, x_bin(L->p, X_LE, I(L, end), row));
    pool_span_hwc(L, y, x, acc, nx, row, all, q[0]);
    close(L, 1);
  }
  if (in.count) {
    int opened = open_if(L, in_range(L, row, in.from, end, 0, ys.d[1] - 1));
    for (int i = 1; i < 4; i++)
      if (q[i].count)
        pool_span_hwc(L, y, x, acc, nx, row, in, q[i]);
    close(L, opened);
  }
  close(L, 2);
}

/* Max and average pooling. Tiled, each plane's outputs go in five
 * spans: the rows whose windows reach past the top or bottom edge, then
 * in the rows between, the columns whose windows reach past the left or
 * right edge, each tap tested; and the rest, whose windows lie inside and
 * need no test, a nest gcc vectorizes across the outputs. (A copy of x
 * padded with the fill, read unguarded, had cost ResNet-18's max pool a
 * pass over 3.2 MB and a copy of as much.) Plain, one span with the tests
 * wherever a window may reach the padding. The taps are summed in the
 * same order either way, the padding's left out: adding its zeros or
 * taking the max with its -inf changes no sum that starts at +0 or -inf. */
static void lower_pool(Lower *L, Buffer *y, Buffer *x) {
  const Node *nd = L->node;
  const Attrs *at = &nd->at;
  Shape ys = nd->shape;
  Parallel par = schedule_parallel(shape_numel(ys) * at->k[0] * at->k[1],
                                   L->p->batch, ys.d[0], 1);
  if (x->hwc) {
    lower_pool_hwc(L, y, x, par);
    return;
  }
  int n, c;
  pool_loops(L, par, ys.d[0], &n, &c);
  if (!L->p->tile) {
    pool_span(L, y, x, V(L, n), V(L, c), (Span){0, ys.d[1]},
              (Span){0, ys.d[2]});
  } else {
    Span r[5], q[5];
    pool_spans(at, nd->in.v[0]->shape, ys, r, q);
    for (int i = 0; i < 5; i++)
      pool_span(L, y, x, V(L, n), V(L, c), r[i], q[i]);
  }
  close(L, 2);
}

/* Adaptive average pooling: output cell o covers input rows
 * [floor(o*H/O), ceil((o+1)*H/O)), PyTorch's windows. */
static void lower_adaptive(Lower *L, Buffer *y, Buffer *x) {
  const Node *nd = L->node;
  Shape xs = nd->in.v[0]->shape, ys = nd->shape;
  LoopBuilder *b = &L->b;
  if (x->hwc)
    b->k->schedule = "x read channels innermost";
  int n = lb_for(b, "n", -1);
  int c = lb_for(b, "c", ys.d[0]);
  int oh = lb_for(b, "oh", ys.d[1]);
  int ow = lb_for(b, "ow", ys.d[2]);
  AdaptiveWindow a = adaptive_window(L, oh, ow, xs, ys);
  Expr *h0 = a.h0, *h1 = a.h1, *w0 = a.w0, *w1 = a.w1;
  int sum = lb_let(b, "sum", F(L, 0));
  int kh = lb_for(b, "kh", a.KH);
  int kw = lb_for(b, "kw", a.KW);
  Expr *ih = add(L, h0, V(L, kh)), *iw = add(L, w0, V(L, kw));
  lb_if(b, x_bin(L->p, X_AND, x_bin(L->p, X_LT, ih, h1),
                 x_bin(L->p, X_LT, iw, w1)));
  lb_set(b, sum,
         add(L, x_temp(L->p, sum),
             load(L, x, idx_of(L, x, V(L, n), V(L, c), ih, iw, xs))));
  close(L, 3);
  Expr *count = x_un(L->p, X_TOFLOAT, mul(L, sub(L, h1, h0), sub(L, w1, w0)));
  lb_store(b, y, idx(L, V(L, n), V(L, c), V(L, oh), V(L, ow), ys),
           x_bin(L->p, X_DIV, x_temp(L->p, sum), count));
  close(L, 4);
}

static Expr *tanh_of(Lower *L, int v);

/* y = f(x) element by element, f being activation node nd's. */
static Expr *activation(Lower *L, const Node *nd, Expr *v) {
  Program *p = L->p;
  switch (nd->op) {
  /* v < 0 ? 0 : v, not fmaxf: NaN and -0 pass as in PyTorch, and a call
   * of fmaxf (which gcc does not inline) would keep the nest around it
   * from vectorizing and its registers from living across it. */
  case OP_RELU: {
    int t = lb_let(&L->b, "v", v);
    return x_select(p, x_bin(p, X_LT, x_temp(p, t), F(L, 0)), F(L, 0),
                    x_temp(p, t));
  }
  case OP_LEAKY_RELU: {
    int t = lb_let(&L->b, "v", v);
    return x_select(p, x_bin(p, X_LT, F(L, 0), x_temp(p, t)), x_temp(p, t),
                    mul(L, F(L, nd->at.a), x_temp(p, t)));
  }
  case OP_SIGMOID:
    return x_bin(p, X_DIV, F(L, 1),
                 add(L, F(L, 1), x_un(p, X_EXP, x_un(p, X_NEG, v))));
  case OP_TANH: return tanh_of(L, lb_let(&L->b, "v", v));
  default: return v;
  }
}

/* tanh(v) as c P(c^2) / Q(c^2), c being v clamped to +-7.905 (beyond it
 * float's tanh is 1 within an ulp; a NaN passes the clamp). A loop of
 * these vectorizes, where one calling libm's tanhf does not: tanhf was 71%
 * of LeNet-5's inference and a third of its training. The coefficients
 * fit the relative error of tanh on [0, 7.905] (least squares reweighted
 * towards the largest errors); in float, the result is within 6 ulps of
 * tanh and never above 1 (test_tanh in tests/unit/test_jit.c checks it on
 * both backends' code). */
static const double tanh_edge = 7.905311;

static Expr *tanh_rational(Lower *L, int c) {
  static const double P[] = {1.0, 0.13450314, 0.003578622, 2.2016791e-05,
                             1.5418005e-08};
  static const double Q[] = {1.0, 0.4678364, 0.026190847, 0.00034230313,
                             8.59494e-07};
  Program *p = L->p;
  int z = lb_let(&L->b, "z", mul(L, x_temp(p, c), x_temp(p, c)));
  Expr *num = F(L, P[4]), *den = F(L, Q[4]);
  for (int k = 3; k >= 0; k--) {
    num = add(L, mul(L, num, x_temp(p, z)), F(L, P[k]));
    den = add(L, mul(L, den, x_temp(p, z)), F(L, Q[k]));
  }
  return dvd(L, mul(L, x_temp(p, c), num), den);
}

/* x above the edge: the edge; else otherwise */
static Expr *clamp_above(Lower *L, Expr *x, Expr *otherwise) {
  return x_select(L->p, x_bin(L->p, X_LT, F(L, tanh_edge), x), F(L, tanh_edge),
                  otherwise);
}

static Expr *clamp_below(Lower *L, Expr *x) {
  return x_select(L->p, x_bin(L->p, X_LT, x, F(L, -tanh_edge)),
                  F(L, -tanh_edge), x);
}

static Expr *tanh_of(Lower *L, int v) {
  Expr *x = x_temp(L->p, v);
  int c = lb_let(&L->b, "c", clamp_above(L, x, clamp_below(L, x)));
  return tanh_rational(L, c);
}

/* v * scale[ch] + shift[ch] when the epilogue folds a batch norm */
static Expr *epilogue_scale(Lower *L, const Epilogue *e, Expr *v, Expr *ch) {
  if (!e->scale)
    return v;
  return add(L, mul(L, v, load(L, e->scale, ch)), load(L, e->shift, ch));
}

int lower_epilogue_tanh(const Lower *L) {
  const Epilogue *e = L->ep;
  return e && !e->residual && e->act && e->act->op == OP_TANH;
}

/* The tanh epilogue in three loops over rows x width elements of buf
 * from base (lower_epilogue_in_place); one row has no loop of its own. */
static void tanh_passes(Lower *L, Buffer *buf, Expr *base, int64_t rows,
                        int64_t width, Expr *ch0, int by_column) {
  const Epilogue *e = L->ep;
  L->ep_used = 1;
  LoopBuilder *b = &L->b;
  for (int pass = 0; pass < 3; pass++) {
    Expr *j = rows > 1 ? V(L, lb_for(b, "j", rows)) : I(L, 0);
    int i = lb_for(b, "i", width);
    Expr *at = add(L, base, add(L, mul(L, j, I(L, width)), V(L, i)));
    Expr *v = load(L, buf, at);
    if (pass == 0)
      v = epilogue_scale(L, e, v, add(L, ch0, by_column ? V(L, i) : j));
    int t = lb_let(b, pass == 2 ? "c" : "v", v);
    lb_store(b, buf, at,
             pass == 0   ? clamp_above(L, x_temp(L->p, t), x_temp(L->p, t))
             : pass == 1 ? clamp_below(L, x_temp(L->p, t))
                         : tanh_rational(L, t));
    close(L, 1 + (rows > 1));
  }
}

int lower_epilogue_in_place(Lower *L, Buffer *acc, int64_t rows, int64_t width,
                            Expr *ch0, int by_column) {
  if (!lower_epilogue_tanh(L))
    return 0;
  tanh_passes(L, acc, I(L, 0), rows, width, ch0, by_column);
  return 1;
}

static void lower_elementwise(Lower *L, Buffer *y, Buffer *x) {
  Shape s = L->node->shape;
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int i = lb_for(b, "i", shape_numel(s));
  Expr *at = flat(L, V(L, n), V(L, i), s);
  lb_store(b, y, at, activation(L, L->node, load(L, x, at)));
  close(L, 2);
}

Expr *lower_epilogue(Lower *L, Expr *v, Expr *ch, Expr *at) {
  const Epilogue *e = L->ep;
  if (!e)
    return v;
  L->ep_used = 1;
  v = epilogue_scale(L, e, v, ch);
  if (e->residual)
    v = add(L, v, load(L, e->residual, at));
  if (e->act)
    v = activation(L, e->act, v);
  if (e->act_dx)
    v = lower_act_grad(L, e->act_dx->of, load(L, e->value, at), v);
  return v;
}

void lower_epilogue_pass(Lower *L, Buffer *y, Shape s, int n, int parallel) {
  int64_t C = s.d[0], P = shape_numel(s) / C;
  LoopBuilder *b = &L->b;
  int all = n < 0;
  if (all)
    n = parallel ? lb_parallel_for(b, "n", -1) : lb_for(b, "n", -1);
  if (lower_epilogue_tanh(L)) { /* vectorized (lower_epilogue_in_place) */
    Expr *base = mul(L, V(L, n), I(L, C * P));
    if (P > 1)
      tanh_passes(L, y, base, C, P, I(L, 0), 0);
    else
      tanh_passes(L, y, base, 1, C, I(L, 0), 1);
    close(L, all);
    return;
  }
  int c = lb_for(b, "c", C);
  Expr *at = add(L, mul(L, V(L, n), I(L, C)), V(L, c));
  if (P > 1) /* (a dense layer's outputs are channels of one element) */
    at = add(L, mul(L, at, I(L, P)), V(L, lb_for(b, "i", P)));
  lb_store(b, y, at, lower_epilogue(L, load(L, y, at), V(L, c), at));
  close(L, 1 + (P > 1) + all);
}

static void lower_add(Lower *L, Buffer *y, Buffer *a, Buffer *c) {
  Shape s = L->node->shape;
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int i = lb_for(b, "i", shape_numel(s));
  Expr *at = flat(L, V(L, n), V(L, i), s);
  lb_store(b, y, at,
           lower_epilogue(L, add(L, load(L, a, at), load(L, c, at)), NULL, at));
  close(L, 2);
}

/* Softmax over channels, at every pixel: subtract the maximum first so
 * exp cannot overflow. */
static void lower_softmax(Lower *L, Buffer *y, Buffer *x) {
  Shape s = L->node->shape;
  int64_t C = s.d[0], P = shape_numel(s) / C;
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int pix = lb_for(b, "p", P);
  Shape cp = {2, {C, P, 0, 0}};
  int m = lb_let(b, "m", F(L, -INFINITY));
  int c = lb_for(b, "c", C);
#define AT(cv)                                                                 \
  add(L, mul(L, add(L, mul(L, V(L, n), I(L, C)), (cv)), I(L, P)), V(L, pix))
  lb_set(b, m, x_bin(L->p, X_MAX, x_temp(L->p, m), load(L, x, AT(V(L, c)))));
  close(L, 1);
  int sum = lb_let(b, "sum", F(L, 0));
  c = lb_for(b, "c", C);
  Expr *e = x_un(L->p, X_EXP, sub(L, load(L, x, AT(V(L, c))), x_temp(L->p, m)));
  lb_store(b, y, AT(V(L, c)), e);
  lb_set(b, sum, add(L, x_temp(L->p, sum), load(L, y, AT(V(L, c)))));
  close(L, 1);
  c = lb_for(b, "c", C);
  lb_store(b, y, AT(V(L, c)),
           x_bin(L->p, X_DIV, load(L, y, AT(V(L, c))), x_temp(L->p, sum)));
#undef AT
  (void)cp;
  close(L, 3);
}

static Buffer *param(Buffer **params, const Node *nd, const char *role) {
  for (int i = 0; i < nd->params.n; i++)
    if (strcmp(nd->params.v[i]->role, role) == 0)
      return params[i];
  return NULL;
}

/* Batch norm node bn in eval mode as y = x * scale + shift for channel c:
 * the temporaries *sc and *sh. ps: bn's parameters and buffers. */
static void bn_eval(Lower *L, const Node *bn, Buffer **ps, int c, int *sc,
                    int *sh) {
  Buffer *w = param(ps, bn, "weight"), *bias = param(ps, bn, "bias");
  Buffer *mean = param(ps, bn, "running_mean"),
         *var = param(ps, bn, "running_var");
  Expr *scale = x_bin(
      L->p, X_DIV, load(L, w, V(L, c)),
      x_un(L->p, X_SQRT, add(L, load(L, var, V(L, c)), F(L, bn->at.eps))));
  *sc = lb_let(&L->b, "scale", scale);
  *sh = lb_let(&L->b, "shift",
               sub(L, load(L, bias, V(L, c)),
                   mul(L, load(L, mean, V(L, c)), x_temp(L->p, *sc))));
}

static void lower_bn(Lower *L, Buffer *y, Buffer *x, Buffer **ps) {
  const Node *nd = L->node;
  Shape s = nd->shape;
  int64_t C = s.d[0], P = shape_numel(s) / C;
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int c = lb_for(b, "c", C);
  int sc, sh;
  bn_eval(L, nd, ps, c, &sc, &sh);
  int i = lb_for(b, "i", P);
  Expr *at = add(L, mul(L, add(L, mul(L, V(L, n), I(L, C)), V(L, c)), I(L, P)),
                 V(L, i));
  lb_store(b, y, at,
           lower_epilogue(L,
                          add(L, mul(L, load(L, x, at), x_temp(L->p, sc)),
                              x_temp(L->p, sh)),
                          NULL, at));
  close(L, 3);
}

/* Normalizations over groups of contiguous elements of a sample: layer
 * (one group, element-wise affine), instance (a group per channel) and
 * group norm (a group per g channels). Biased variance, as PyTorch. */
static void lower_norm(Lower *L, Buffer *y, Buffer *x, Buffer **ps) {
  const Node *nd = L->node;
  Shape s = nd->shape;
  int64_t numel = shape_numel(s), C = s.d[0], P = numel / C;
  int64_t groups = nd->op == OP_LAYERNORM      ? 1
                   : nd->op == OP_INSTANCENORM ? C
                                               : nd->at.g;
  int64_t len = numel / groups;
  Buffer *w = param(ps, nd, "weight"), *bias = param(ps, nd, "bias");
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int g = lb_for(b, "g", groups);
  Expr *base =
      mul(L, add(L, mul(L, V(L, n), I(L, groups)), V(L, g)), I(L, len));
  int sum = lb_let(b, "sum", F(L, 0));
  int i = lb_for(b, "i", len);
  lb_set(b, sum, add(L, x_temp(L->p, sum), load(L, x, add(L, base, V(L, i)))));
  close(L, 1);
  int mean = lb_let(b, "mean",
                    x_bin(L->p, X_DIV, x_temp(L->p, sum), F(L, (double)len)));
  int sq = lb_let(b, "sq", F(L, 0));
  i = lb_for(b, "i", len);
  int dv = lb_let(
      b, "d", sub(L, load(L, x, add(L, base, V(L, i))), x_temp(L->p, mean)));
  lb_set(b, sq,
         add(L, x_temp(L->p, sq), mul(L, x_temp(L->p, dv), x_temp(L->p, dv))));
  close(L, 1);
  int inv = lb_let(
      b, "inv",
      x_bin(L->p, X_DIV, F(L, 1),
            x_un(L->p, X_SQRT,
                 add(L, x_bin(L->p, X_DIV, x_temp(L->p, sq), F(L, (double)len)),
                     F(L, nd->at.eps)))));
  i = lb_for(b, "i", len);
  Expr *at = add(L, base, V(L, i));
  /* the affine parameters: per element (layer norm) or per channel */
  Expr *pi = nd->op == OP_LAYERNORM
                 ? V(L, i)
                 : dvd(L, add(L, mul(L, V(L, g), I(L, len)), V(L, i)), I(L, P));
  Expr *norm =
      mul(L, sub(L, load(L, x, at), x_temp(L->p, mean)), x_temp(L->p, inv));
  lb_store(b, y, at, add(L, mul(L, norm, load(L, w, pi)), load(L, bias, pi)));
  close(L, 3);
}

Expr *lower_pow(Lower *L, Expr *base, double e) {
  double q = e * 4;
  if (q != (double)(int)q || q == 0 || q < -8 || q > 8)
    return x_bin(L->p, X_POW, base, F(L, e));
  int k = q < 0 ? (int)-q : (int)q;
  int b = lb_let(&L->b, "base", base);
  Expr *r = NULL;
  if (k & 3) {
    int root = lb_let(&L->b, "root", x_un(L->p, X_SQRT, x_temp(L->p, b)));
    if (k & 2)
      r = x_temp(L->p, root);
    if (k & 1) {
      Expr *r4 = x_un(L->p, X_SQRT, x_temp(L->p, root));
      r = r ? mul(L, r, r4) : r4;
    }
  }
  for (int i = 0; i < k / 4; i++)
    r = r ? mul(L, r, x_temp(L->p, b)) : x_temp(L->p, b);
  return q < 0 ? dvd(L, F(L, 1), r) : r;
}

/* Local response normalization across channels, as nn.LocalResponseNorm:
 * the window [c - size/2, c + (size-1)/2] is zero-padded and averaged. */
static void lower_lrn(Lower *L, Buffer *y, Buffer *x) {
  const Node *nd = L->node;
  const Attrs *at = &nd->at;
  Shape s = nd->shape;
  int64_t C = s.d[0], P = s.d[1] * s.d[2];
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int c = lb_for(b, "c", C);
  int pix = lb_for(b, "p", P);
  int sum = lb_let(b, "sum", F(L, 0));
  int j = lb_for(b, "j", at->size);
  Expr *cj = add(L, V(L, c), sub(L, V(L, j), I(L, at->size / 2)));
  lb_if(b, x_bin(L->p, X_AND, x_bin(L->p, X_LE, I(L, 0), cj),
                 x_bin(L->p, X_LT, cj, I(L, C))));
  int v =
      lb_let(b, "v",
             load(L, x,
                  add(L, mul(L, add(L, mul(L, V(L, n), I(L, C)), cj), I(L, P)),
                      V(L, pix))));
  lb_set(b, sum,
         add(L, x_temp(L->p, sum), mul(L, x_temp(L->p, v), x_temp(L->p, v))));
  close(L, 2);
  Expr *here = add(
      L, mul(L, add(L, mul(L, V(L, n), I(L, C)), V(L, c)), I(L, P)), V(L, pix));
  Expr *div = lower_pow(
      L,
      add(L, F(L, at->lrn_k),
          mul(L, F(L, at->alpha / (double)at->size), x_temp(L->p, sum))),
      at->beta);
  lb_store(b, y, here, x_bin(L->p, X_DIV, load(L, x, here), div));
  close(L, 3);
}

static void lower_concat(Lower *L, Buffer *y, Buffer **in) {
  const Node *nd = L->node;
  Shape ys = nd->shape;
  int64_t P = shape_numel(ys) / ys.d[0], off = 0;
  LoopBuilder *b = &L->b;
  for (int k = 0; k < nd->in.n; k++) {
    Shape xs = nd->in.v[k]->shape;
    int n = lb_for(b, "n", -1);
    int i = lb_for(b, "i", shape_numel(xs));
    Expr *dst =
        add(L, add(L, mul(L, V(L, n), I(L, shape_numel(ys))), I(L, off * P)),
            V(L, i));
    lb_store(b, y, dst, load(L, in[k], flat(L, V(L, n), V(L, i), xs)));
    close(L, 2);
    off += xs.d[0];
  }
}

static void lower_upsample(Lower *L, Buffer *y, Buffer *x) {
  const Node *nd = L->node;
  Shape xs = nd->in.v[0]->shape, ys = nd->shape;
  int64_t S = nd->at.scale;
  LoopBuilder *b = &L->b;
  if (strcmp(nd->at.mode, "nearest") == 0) {
    int n = lb_for(b, "n", -1);
    int c = lb_for(b, "c", ys.d[0]);
    int oh = lb_for(b, "oh", ys.d[1]);
    int ow = lb_for(b, "ow", ys.d[2]);
    lb_store(b, y, idx(L, V(L, n), V(L, c), V(L, oh), V(L, ow), ys),
             load(L, x,
                  idx(L, V(L, n), V(L, c), dvd(L, V(L, oh), I(L, S)),
                      dvd(L, V(L, ow), I(L, S)), xs)));
    close(L, 4);
    return;
  }
  /* Bilinear, align_corners=False: output o = S*i + r reads source
   * position i + (r + 0.5)/S - 0.5, clamped at 0. Each phase r has
   * constant weights, so each (rh, rw) gets its own nest. */
  for (int64_t rh = 0; rh < S; rh++)
    for (int64_t rw = 0; rw < S; rw++) {
      double fh = ((double)rh + 0.5) / (double)S - 0.5;
      double fw = ((double)rw + 0.5) / (double)S - 0.5;
      int n = lb_for(b, "n", -1);
      int c = lb_for(b, "c", ys.d[0]);
      int ih = lb_for(b, "ih", xs.d[1]);
      int iw = lb_for(b, "iw", xs.d[2]);
      Expr *h0, *w0, *lh, *lw;
      if (fh >= 0) {
        h0 = V(L, ih);
        lh = F(L, fh);
      } else {
        Expr *first = x_bin(L->p, X_EQ, V(L, ih), I(L, 0));
        h0 = x_select(L->p, first, I(L, 0), sub(L, V(L, ih), I(L, 1)));
        lh = x_select(L->p, first, F(L, 0), F(L, 1 + fh));
      }
      if (fw >= 0) {
        w0 = V(L, iw);
        lw = F(L, fw);
      } else {
        Expr *first = x_bin(L->p, X_EQ, V(L, iw), I(L, 0));
        w0 = x_select(L->p, first, I(L, 0), sub(L, V(L, iw), I(L, 1)));
        lw = x_select(L->p, first, F(L, 0), F(L, 1 + fw));
      }
      Expr *h1 = x_bin(L->p, X_MIN, add(L, h0, I(L, 1)), I(L, xs.d[1] - 1));
      Expr *w1 = x_bin(L->p, X_MIN, add(L, w0, I(L, 1)), I(L, xs.d[2] - 1));
      int vh = lb_let(b, "lh", lh), vw = lb_let(b, "lw", lw);
      Expr *a = load(L, x, idx(L, V(L, n), V(L, c), h0, w0, xs));
      Expr *bb = load(L, x, idx(L, V(L, n), V(L, c), h0, w1, xs));
      Expr *cc = load(L, x, idx(L, V(L, n), V(L, c), h1, w0, xs));
      Expr *dd = load(L, x, idx(L, V(L, n), V(L, c), h1, w1, xs));
      Expr *Lh = x_temp(L->p, vh), *Lw = x_temp(L->p, vw);
      Expr *top = add(L, mul(L, a, sub(L, F(L, 1), Lw)), mul(L, bb, Lw));
      Expr *bot = add(L, mul(L, cc, sub(L, F(L, 1), Lw)), mul(L, dd, Lw));
      Expr *v = add(L, mul(L, top, sub(L, F(L, 1), Lh)), mul(L, bot, Lh));
      Expr *oh = add(L, mul(L, V(L, ih), I(L, S)), I(L, rh));
      Expr *ow = add(L, mul(L, V(L, iw), I(L, S)), I(L, rw));
      lb_store(b, y, idx(L, V(L, n), V(L, c), oh, ow, ys), v);
      close(L, 4);
    }
}

static void lower_crop(Lower *L, Buffer *y, Buffer *x) {
  const Node *nd = L->node;
  Shape xs = nd->in.v[0]->shape, ys = nd->shape;
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int c = lb_for(b, "c", ys.d[0]);
  int h = lb_for(b, "h", ys.d[1]);
  int w = lb_for(b, "w", ys.d[2]);
  lb_store(b, y, idx(L, V(L, n), V(L, c), V(L, h), V(L, w), ys),
           load(L, x,
                idx(L, V(L, n), V(L, c), add(L, V(L, h), I(L, nd->at.p[0])),
                    add(L, V(L, w), I(L, nd->at.p[1])), xs)));
  close(L, 4);
}

static void copy_kernel(Lower *L, Buffer *dst, Buffer *src, Shape s) {
  LoopBuilder *b = &L->b;
  int n = lb_for(b, "n", -1);
  int i = lb_for(b, "i", shape_numel(s));
  Expr *at = flat(L, V(L, n), V(L, i), s);
  lb_store(b, dst, at, load(L, src, at));
  close(L, 2);
}

/* Returns 0 when the operator has no kernel of its own (its output
 * aliases its input). */
static int lower_node(Lower *L, Buffer *y, Buffer **in, Buffer **ps) {
  const Node *nd = L->node;
  switch (nd->op) {
  case OP_CONV: lower_conv(L, y, in[0], ps[0], param(ps, nd, "bias")); return 1;
  case OP_DECONV:
    lower_deconv(L, y, in[0], ps[0], param(ps, nd, "bias"));
    return 1;
  case OP_DENSE:
    lower_dense(L, y, in[0], ps[0], param(ps, nd, "bias"));
    return 1;
  case OP_MAXPOOL:
  case OP_AVGPOOL: lower_pool(L, y, in[0]); return 1;
  case OP_GLOBAL_AVGPOOL:
  case OP_ADAPTIVE_AVGPOOL: lower_adaptive(L, y, in[0]); return 1;
  case OP_RELU:
  case OP_LEAKY_RELU:
  case OP_TANH:
  case OP_SIGMOID: lower_elementwise(L, y, in[0]); return 1;
  case OP_SOFTMAX: lower_softmax(L, y, in[0]); return 1;
  case OP_BN: lower_bn(L, y, in[0], ps); return 1;
  case OP_LAYERNORM:
  case OP_INSTANCENORM:
  case OP_GROUPNORM: lower_norm(L, y, in[0], ps); return 1;
  case OP_LRN: lower_lrn(L, y, in[0]); return 1;
  case OP_CONCAT: lower_concat(L, y, in); return 1;
  case OP_ADD: lower_add(L, y, in[0], in[1]); return 1;
  case OP_UPSAMPLE: lower_upsample(L, y, in[0]); return 1;
  case OP_CROP: lower_crop(L, y, in[0]); return 1;
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
  case OP_LOSS_DX: return lower_grad_node(L, y, in, ps);
  case OP_DROPOUT:
  case OP_FLATTEN:
  case OP_INPUT:
  case OP_CROSS_ENTROPY:
  case OP_MSE:
  case OP_NONE:
  case OP_COUNT: break;
  }
  return 0;
}

/* --- the program --------------------------------------------------------- */

static int aliases_input(OpKind op) {
  return op == OP_DROPOUT || op == OP_FLATTEN;
}

/* Parameter initialization, PyTorch's layer defaults or the model's
 * train { init } choice. */
static void add_inits(Program *p, Buffer *b, const Param *prm) {
  const Node *nd = prm->owner;
  ParamInit pi = {b, FILL_CONST, 0, 0};
  int64_t fan_in = 1, fan_out = 1;
  const Shape s = prm->shape;
  if (nd->op == OP_CONV || nd->op == OP_DENSE || nd->op == OP_DECONV) {
    const Shape w = nd->params.v[0]->shape;
    int64_t rf = w.rank == 4 ? w.d[2] * w.d[3] : 1;
    fan_in = w.d[1] * rf;
    fan_out = w.d[0] * rf;
    InitKind init = p->g->train.init;
    int weight = strcmp(prm->role, "weight") == 0;
    if (init == INIT_DEFAULT) {
      /* kaiming_uniform(a=sqrt(5)) for weights, U(+-1/sqrt(fan_in)) for
       * biases: both give a bound of 1/sqrt(fan_in) */
      pi.fill = FILL_UNIFORM;
      pi.bound = 1.0 / sqrt((double)fan_in);
    } else if (weight) {
      pi.fill = FILL_UNIFORM;
      pi.bound = init == INIT_XAVIER ? sqrt(6.0 / (double)(fan_in + fan_out))
                                     : sqrt(6.0 / (double)fan_in);
    }
  } else if (strcmp(prm->role, "weight") == 0 ||
             strcmp(prm->role, "running_var") == 0) {
    pi.value = 1;
  }
  (void)s;
  vec_push(p->a, p->inits, pi);
}

/* Training: the labels must name a class, or the step fails before it
 * reads outside the logits. */
static void check_labels(Program *p, const Node *loss, Buffer *labels) {
  const Shape ls = loss->in.v[0]->shape;
  Kernel *k = loop_kernel(p, labels->name, "label check", labels->node->loc);
  Lower L = {p, lb_start(p, k), loss, NULL, 0};
  int n = lb_for(&L.b, "n", -1);
  int i = lb_for(&L.b, "i", shape_numel(labels->shape));
  Expr *v = load(&L, labels, flat(&L, V(&L, n), V(&L, i), labels->shape));
  lb_fail_if(&L.b, x_bin(p, X_LT, v, I(&L, 0)));
  lb_fail_if(&L.b, x_bin(p, X_LE, I(&L, ls.d[0]), v));
  close(&L, 2);
}

/* A kernel setting Program.packed_ok to v. */
static void packed_flag(Program *p, int64_t v, const char *what) {
  Kernel *k = loop_kernel(p, "weights_packed", what, (Loc){0, 0, 0});
  LoopBuilder b = lb_start(p, k);
  lb_store(&b, p->packed_ok, x_int(p, 0), x_int(p, v));
}

/* The optimizer's update of every trainable parameter, PyTorch's rules:
 * SGD with momentum (the buffer starts at zero, which equals PyTorch's
 * first-step copy), Nesterov and weight decay; Adam with bias correction
 * and weight decay added to the gradient. The caller counts the step.
 * gbuf[i] is the gradient the backward pass computes for parameter i, or
 * NULL where the loss does not reach it. */
static void lower_update(Program *p, Buffer **pbuf, Buffer **gbuf) {
  const Graph *g = p->g;
  const TrainCfg *t = &g->train;
  KernelVec forward = p->kernels;
  p->kernels = (KernelVec){0};
  for (int i = 0; i < g->params.n; i++) {
    const Param *prm = g->params.v[i];
    /* A parameter the loss does not reach (an output outside the loss)
     * keeps its value, as torch.optim skips a parameter whose gradient is
     * None: no weight decay, no momentum. */
    if (prm->kind != PK_PARAM || prm->frozen || !gbuf[i])
      continue;
    Buffer *w = pbuf[i];
    Buffer *gr = gbuf[i];
    Buffer *m =
        new_buffer(p, arena_printf(p->a, "%s.m", prm->name), BUF_M, w->size);
    m->param_buf = w;
    Buffer *v = NULL;
    if (t->opt == OPT_ADAM) {
      v = new_buffer(p, arena_printf(p->a, "%s.v", prm->name), BUF_V, w->size);
      v->param_buf = w;
    }
    Kernel *k = loop_kernel(p, prm->name, t->opt == OPT_ADAM ? "adam" : "sgd",
                            prm->owner->loc);
    Lower L = {p, lb_start(p, k), prm->owner, NULL, 0};
    LoopBuilder *b = &L.b;
    /* a large parameter's elements in runs that threads share out (the
     * update is a pass over four or five arrays, bound by memory) */
    int64_t runs = w->size >= PARALLEL_WORK ? largest_divisor(w->size, 64) : 1;
    int r = runs > 1 ? lb_parallel_for(b, "r", runs) : -1;
    int e = lb_for(b, "i", w->size / runs);
    Expr *at = r >= 0
                   ? add(&L, mul(&L, V(&L, r), I(&L, w->size / runs)), V(&L, e))
                   : V(&L, e);
    Expr *grad = load(&L, gr, at);
    if (t->weight_decay != 0)
      grad = add(&L, grad, mul(&L, F(&L, t->weight_decay), load(&L, w, at)));
    int gv = lb_let(b, "g", grad);
    Expr *G = x_temp(p, gv), *step;
    if (t->opt == OPT_ADAM) {
      int mv = lb_let(b, "m",
                      add(&L, mul(&L, F(&L, t->beta1), load(&L, m, at)),
                          mul(&L, F(&L, 1 - t->beta1), G)));
      int vv = lb_let(b, "v",
                      add(&L, mul(&L, F(&L, t->beta2), load(&L, v, at)),
                          mul(&L, F(&L, 1 - t->beta2), mul(&L, G, G))));
      lb_store(b, m, at, x_temp(p, mv));
      lb_store(b, v, at, x_temp(p, vv));
      Expr *tt = x_un(p, X_TOFLOAT, x_state(p, X_STEP));
      Expr *bc1 = sub(&L, F(&L, 1), x_bin(p, X_POW, F(&L, t->beta1), tt));
      Expr *bc2 = sub(&L, F(&L, 1), x_bin(p, X_POW, F(&L, t->beta2), tt));
      Expr *denom = add(
          &L,
          x_bin(p, X_DIV, x_un(p, X_SQRT, x_temp(p, vv)), x_un(p, X_SQRT, bc2)),
          F(&L, t->eps));
      step = x_bin(p, X_DIV, x_bin(p, X_DIV, x_temp(p, mv), bc1), denom);
    } else if (t->momentum != 0) {
      int mv = lb_let(b, "buf",
                      add(&L, mul(&L, F(&L, t->momentum), load(&L, m, at)), G));
      lb_store(b, m, at, x_temp(p, mv));
      step = t->nesterov
                 ? add(&L, G, mul(&L, F(&L, t->momentum), x_temp(p, mv)))
                 : x_temp(p, mv);
    } else {
      step = G;
    }
    lb_store(b, w, at,
             sub(&L, load(&L, w, at), mul(&L, x_state(p, X_LR), step)));
    close(&L, 1 + (r >= 0));
  }
  if (p->packed_ok)
    packed_flag(p, 0, "s->packed no longer holds the weights");
  p->update = p->kernels;
  p->kernels = forward;
}

/* A fused chain's batch norm as per-channel scale and shift, computed at
 * the start of the chain's kernel as lower_bn computes them. */
static void bn_coefficients(Lower *L, Epilogue *ep, const Node *bn,
                            Buffer **pbuf) {
  Program *p = L->p;
  int64_t C = bn->shape.d[0];
  Buffer *ps[8] = {0};
  for (int j = 0; j < bn->params.n && j < 8; j++)
    ps[j] = pbuf[bn->params.v[j]->index];
  Buffer **out[2] = {&ep->scale, &ep->shift};
  const char *what[2] = {"scale", "shift"};
  for (int j = 0; j < 2; j++) {
    Buffer *b = new_buffer(p, arena_printf(p->a, "%s.%s", bn->name, what[j]),
                           BUF_ARENA, C);
    b->node = bn;
    b->shape = shape_of(1, &C);
    *out[j] = b;
  }
  LoopBuilder *b = &L->b;
  int c = lb_for(b, "c", C), sc, sh;
  bn_eval(L, bn, ps, c, &sc, &sh);
  lb_store(b, ep->scale, V(L, c), x_temp(p, sc));
  lb_store(b, ep->shift, V(L, c), x_temp(p, sh));
  close(L, 1);
}

/* "conv+bn+relu with bn1 and relu0": the operators, then the layers the
 * head's kernel computes too. */
static const char *chain_what(Arena *a, const Chain *ch) {
  const Node *m[4];
  int n = 0;
  if (ch->bn)
    m[n++] = ch->bn;
  if (ch->add)
    m[n++] = ch->add;
  if (ch->act)
    m[n++] = ch->act;
  if (ch->act_dx)
    m[n++] = ch->act_dx;
  const char *s = arena_printf(a, "%s with %s", ch->what, m[0]->name);
  for (int i = 1; i < n; i++)
    s = arena_printf(a, "%s%s%s", s, i == n - 1 ? " and " : ", ", m[i]->name);
  return s;
}

Program *lower(Diag *d, Arena *a, const Graph *g, int64_t batch, int train) {
  return lower_passes(d, a, g, batch, train,
                      LOWER_TILE | LOWER_FUSE | LOWER_FMA);
}

static Program *build(Diag *d, Arena *a, const Graph *g, int64_t batch,
                      int train, unsigned passes) {
  Program *p = arena_alloc(a, sizeof *p);
  p->a = a;
  p->tile = !(passes & LOWER_TILE)  ? 0
            : passes & LOWER_AVX512 ? TARGET_AVX512
                                    : TARGET_AVX2;
  p->g = g;
  p->batch = batch;
  p->train = train;
  int nn = g->nodes.n;
  int *needed = arena_alloc(a, sizeof(int) * (size_t)(nn + 1));
  /* The forward pass computes every output, in training too, as a PyTorch
   * loop calling the model does: a batch norm on an output outside the
   * loss still updates its running statistics. */
  for (int i = 0; i < g->outputs.n; i++)
    needed[g->outputs.v[i].node->id] = 1;
  if (train) {
    needed[g->loss->id] = 1;
    for (int i = 0; i < nn; i++)
      needed[i] |= g->nodes.v[i]->grad_of != NULL;
  }
  for (int i = nn - 1; i >= 0; i--)
    if (needed[i])
      for (int j = 0; j < g->nodes.v[i]->in.n; j++)
        needed[g->nodes.v[i]->in.v[j]->id] = 1;
  Chain **chain = passes & LOWER_FUSE ? fuse(a, g, needed, train) : NULL;
  /* Parameters and buffers, in the graph's order. */
  Buffer **pbuf = arena_alloc(a, sizeof(Buffer *) * (size_t)(g->params.n + 1));
  Buffer **gbuf = arena_alloc(a, sizeof(Buffer *) * (size_t)(g->params.n + 1));
  for (int i = 0; i < g->params.n; i++) {
    const Param *prm = g->params.v[i];
    Buffer *b =
        new_buffer(p, prm->name, prm->dtype == DT_I64 ? BUF_I64 : BUF_F32,
                   shape_numel(prm->shape));
    b->param = prm;
    b->shape = prm->shape;
    b->is_int = prm->dtype == DT_I64;
    pbuf[i] = b;
    add_inits(p, b, prm);
  }
  /* after the parameters, so that both programs have it at one offset */
  for (int i = 0; i < nn && !p->packed_ok; i++)
    if (lower_keeps_packed(g->nodes.v[i], p->tile, batch)) {
      p->packed_ok = new_buffer(p, "weights_packed", BUF_I64, 1);
      p->packed_ok->shape = shape_of(1, &(int64_t){1});
      p->packed_ok->is_int = 1;
    }
  /* Inputs in declaration order, then one buffer per needed node. */
  Buffer **nbuf = arena_alloc(a, sizeof(Buffer *) * (size_t)(nn + 1));
  Buffer *labels = NULL;
  for (int i = 0; i < g->inputs.n; i++) {
    const Node *in = g->inputs.v[i];
    if (in->dtype != DT_F32 && !train)
      continue; /* labels feed only the loss */
    Buffer *b =
        new_buffer(p, in->name, BUF_INPUT, shape_numel(in->shape) * batch);
    b->node = in;
    b->shape = in->shape;
    b->is_int = in->dtype == DT_I64;
    nbuf[in->id] = b;
    vec_push(a, p->inputs, b);
    if (b->is_int)
      labels = b;
  }
  for (int i = 0; i < nn; i++) {
    const Node *nd = g->nodes.v[i];
    if (!needed[i] || nd->op == OP_INPUT)
      continue;
    if (chain && chain[i] && chain[i]->last != nd)
      continue; /* inside a fused kernel, never stored */
    if (nd->op == OP_PARAM) {
      nbuf[i] = pbuf[nd->param->index];
      continue;
    }
    int64_t size = shape_numel(nd->shape) * (nd->whole ? 1 : batch);
    Buffer *b;
    if (nd->grad_of) {
      b = new_buffer(p, arena_printf(a, "%s.grad", nd->grad_of->name), BUF_GRAD,
                     size);
      b->param_buf = pbuf[nd->grad_of->index];
      gbuf[nd->grad_of->index] = b;
    } else {
      b = new_buffer(p, nd->name, BUF_ARENA, size);
    }
    b->node = nd;
    b->shape = nd->shape;
    if (aliases_input(nd->op) && !(train && nd->op == OP_DROPOUT))
      b->alias = nbuf[nd->in.v[0]->id];
    nbuf[i] = b;
  }
  if (train && labels && g->loss->op == OP_CROSS_ENTROPY)
    check_labels(p, g->loss, labels);
  lower_layouts(p, g, chain, needed, nbuf);
  for (int i = 0; i < nn; i++) {
    const Node *last = g->nodes.v[i];
    if (!needed[i] || last->op == OP_INPUT || last->op == OP_PARAM)
      continue;
    /* A fused chain is one kernel, the head's, where its last node was. */
    const Chain *ch = chain ? chain[i] : NULL;
    if (ch && ch->last != last)
      continue;
    const Node *nd = ch ? ch->head : last;
    Buffer *in[64];
    Buffer **ins = nd->in.n <= 64
                       ? in
                       : arena_alloc(a, sizeof(Buffer *) * (size_t)nd->in.n);
    for (int j = 0; j < nd->in.n; j++)
      ins[j] = nbuf[nd->in.v[j]->id];
    /* Backward nodes see the parameters of the node they differentiate. */
    const Node *owner =
        nd->of && op_info[nd->op].flags & OPF_INTERNAL ? nd->of : nd;
    Buffer **ps =
        arena_alloc(a, sizeof(Buffer *) * (size_t)(owner->params.n + 1));
    for (int j = 0; j < owner->params.n; j++)
      ps[j] = pbuf[owner->params.v[j]->index];
    Kernel *k = loop_kernel(
        p, nd->name, ch ? chain_what(a, ch) : op_info[nd->op].name, nd->loc);
    Epilogue ep = {NULL, NULL, NULL, NULL, NULL, NULL};
    Lower L = {p, lb_start(p, k), nd, ch ? &ep : NULL, 0};
    if (ch) {
      if (ch->bn)
        bn_coefficients(&L, &ep, ch->bn, pbuf);
      ep.residual = ch->residual ? nbuf[ch->residual->id] : NULL;
      ep.act = ch->act;
      ep.act_dx = ch->act_dx;
      ep.value = ch->value ? nbuf[ch->value->id] : NULL;
    }
    int made = train && lower_train_node(&L, nbuf[i], ins, ps);
    if (!made && !lower_node(&L, nbuf[i], ins, ps))
      p->kernels.n--; /* an alias: nothing to compute */
    else if (ch && !L.ep_used)
      lower_epilogue_pass(&L, nbuf[i], nd->shape, -1, 0);
  }
  if (train) {
    p->loss = nbuf[g->loss->id];
    /* A trainable parameter the loss does not reach has a zero gradient. */
    for (int i = 0; i < g->params.n; i++) {
      const Param *prm = g->params.v[i];
      if (prm->kind != PK_PARAM || prm->frozen || gbuf[i])
        continue;
      Buffer *b = new_buffer(p, arena_printf(a, "%s.grad", prm->name), BUF_GRAD,
                             shape_numel(prm->shape));
      b->param_buf = pbuf[i];
      b->shape = prm->shape;
      Kernel *k = loop_kernel(p, b->name, "zero gradient", prm->owner->loc);
      Lower L = {p, lb_start(p, k), prm->owner, NULL, 0};
      int e = lb_for(&L.b, "i", b->size);
      lb_store(&L.b, b, V(&L, e), F(&L, 0));
      close(&L, 1);
    }
    lower_update(p, pbuf, gbuf);
    (void)d;
    return p;
  }
  for (int i = 0; i < g->outputs.n; i++) {
    const Output *o = &g->outputs.v[i];
    Buffer *b =
        new_buffer(p, o->name, BUF_OUTPUT, shape_numel(o->node->shape) * batch);
    b->node = o->node;
    b->shape = o->node->shape;
    vec_push(a, p->outputs, b);
    Kernel *k = loop_kernel(p, o->name, "output", o->loc);
    Lower L = {p, lb_start(p, k), o->node, NULL, 0};
    Buffer *src = nbuf[o->node->id];
    copy_kernel(&L, b, src, o->node->shape);
  }
  if (p->packed_ok)
    packed_flag(p, 1, "s->packed now holds the weights packed");
  (void)d;
  return p;
}

Program *lower_passes(Diag *d, Arena *a, const Graph *g, int64_t batch,
                      int train, unsigned passes) {
  Program *p = build(d, a, g, batch, train, passes);
  if (passes & LOWER_FMA)
    contract(p);
  return p;
}
