/* The C backend. It prints the loop IR as C99 and decides nothing: every
 * loop, index and buffer offset comes from lowering and planning. The
 * output depends only on the program, so it is byte-identical across
 * runs. model.c needs libm and nothing else: no malloc, no stdio, no
 * global state; the caller owns the one state struct. */
#include "emit_c.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

extern const char emit_c_safetensors_template[];

static void upper(char *dst, const char *src, size_t n) {
  size_t i = 0;
  for (; src[i] && i + 1 < n; i++)
    dst[i] = (char)toupper((unsigned char)src[i]);
  dst[i] = 0;
}

/* The template with PREFIX replaced by the model's name. */
static void print_template(FILE *out, const char *text, const char *prefix) {
  const char *p = text;
  while (*p) {
    const char *hit = strstr(p, "PREFIX");
    if (!hit) {
      fputs(p, out);
      return;
    }
    fwrite(p, 1, (size_t)(hit - p), out);
    fputs(prefix, out);
    p = hit + 6;
  }
}

/* The buffers some kernels read (mark 1) or write (mark 2), and a list of
 * them: a kernel's prologue costs what it uses, not the program's size. */
typedef struct {
  char *mark; /* by buffer id */
  int *ids;
  int n;
} Used;

static Used used_new(const Program *p) {
  Used u = {mem_alloc((size_t)p->bufs.n + 1),
            mem_alloc(sizeof(int) * ((size_t)p->bufs.n + 1)), 0};
  memset(u.mark, 0, (size_t)p->bufs.n + 1);
  return u;
}

static void used_free(Used *u) {
  mem_free(u->mark);
  mem_free(u->ids);
}

static void use(Used *u, const Buffer *b, int how) {
  if (b->kind == BUF_LOCAL)
    return;
  if (!u->mark[b->id])
    u->ids[u->n++] = b->id;
  u->mark[b->id] |= (char)how;
}

static void mark_expr(const Expr *e, Used *u) {
  if (!e)
    return;
  if (e->k == X_LOAD)
    use(u, e->buf, 1);
  mark_expr(e->a, u);
  mark_expr(e->b, u);
  mark_expr(e->c, u);
}

static void mark_stmts(const StmtVec *body, Used *u) {
  for (int i = 0; i < body->n; i++) {
    const Stmt *s = body->v[i];
    if (s->buf)
      use(u, s->buf, s->k == S_PREFETCH ? 1 : 2);
    mark_expr(s->index, u);
    mark_expr(s->value, u);
    mark_stmts(&s->body, u);
  }
}

static int by_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

/* In the program's order, which is the order of the declarations. */
static void used_sort(Used *u) {
  qsort(u->ids, (size_t)u->n, sizeof *u->ids, by_int);
}

static void used_clear(Used *u) {
  for (int i = 0; i < u->n; i++)
    u->mark[u->ids[i]] = 0;
  u->n = 0;
}

static const Buffer *root(const Buffer *b) {
  while (b->alias)
    b = b->alias;
  return b;
}

static void declare(FILE *o, const Buffer *b, int writes) {
  const Buffer *r = root(b);
  const char *type = r->is_int ? "int64_t" : "float";
  const char *cq = writes ? "" : "const ";
  switch (r->kind) {
  case BUF_F32:
    fprintf(o, "  %s%s *%s = s->f32 + %" PRId64 ";", cq, type, b->name,
            r->offset);
    break;
  case BUF_I64:
    fprintf(o, "  %s%s *%s = s->i64 + %" PRId64 ";", cq, type, b->name,
            r->offset);
    break;
  case BUF_ARENA:
    fprintf(o, "  %s%s *%s = s->arena + %" PRId64 ";", cq, type, b->name,
            r->offset);
    break;
  case BUF_PACKED:
    fprintf(o, "  %s%s *%s = s->packed + %" PRId64 ";", cq, type, b->name,
            r->offset);
    break;
  case BUF_GRAD:
  case BUF_M:
  case BUF_V:
    fprintf(o, "  float *%s = s->%s + %" PRId64 ";", b->name,
            r->kind == BUF_GRAD ? "g32"
            : r->kind == BUF_M  ? "m32"
                                : "v32",
            r->param_buf->offset);
    break;
  case BUF_LOCAL: return; /* declared by print_kernel */
  case BUF_INPUT:
  case BUF_OUTPUT:
    if (r == b)
      return; /* a parameter of the function */
    fprintf(o, "  %s%s *%s = %s;", r->kind == BUF_INPUT ? "const " : cq, type,
            b->name, r->name);
    break;
  }
  if (b->param)
    fprintf(o, " /* %s */\n", b->param->name);
  else
    fputc('\n', o);
}

/* M: the model's name in capitals, its macros' prefix. */
static void print_stmts(FILE *o, const Kernel *k, const StmtVec *body,
                        int depth, const char *M) {
  for (int i = 0; i < body->n; i++) {
    const Stmt *s = body->v[i];
    fprintf(o, "%*s", depth * 2, "");
    switch (s->k) {
    case S_FOR:
      if (s->parallel) { /* the kernel's accumulators, one set per thread */
        fprintf(o, "%s_PARALLEL_FOR(", M);
        for (int l = 0; l < k->locals.n; l++)
          fprintf(o, "%s%s%s", l ? ", " : "private(", k->locals.v[l]->name,
                  l == k->locals.n - 1 ? ")" : "");
        fprintf(o, ")\n%*s", depth * 2, "");
      }
      if (s->extent < 0)
        fprintf(o, "for (ptrdiff_t %s = 0; %s < count; %s++) {\n",
                k->vars[s->var], k->vars[s->var], k->vars[s->var]);
      else
        fprintf(o, "for (ptrdiff_t %s = 0; %s < %" PRId64 "; %s++) {\n",
                k->vars[s->var], k->vars[s->var], s->extent, k->vars[s->var]);
      print_stmts(o, k, &s->body, depth + 1, M);
      fprintf(o, "%*s}\n", depth * 2, "");
      break;
    case S_IF:
      fputs("if (", o);
      loop_print_expr(o, k, s->value, 1);
      fputs(") {\n", o);
      print_stmts(o, k, &s->body, depth + 1, M);
      fprintf(o, "%*s}\n", depth * 2, "");
      break;
    case S_STORE:
    case S_ACCUM:
      fprintf(o, "%s[", s->buf->name);
      loop_print_expr(o, k, s->index, 1);
      fprintf(o, "] %s ", s->k == S_STORE ? "=" : "+=");
      loop_print_expr(o, k, s->value, 1);
      fputs(";\n", o);
      break;
    case S_LET:
    case S_SET:
      fprintf(o, "%s%s = ",
              s->k == S_SET           ? ""
              : k->kinds[s->var] == 2 ? "ptrdiff_t "
              : k->kinds[s->var] == 3 ? "double "
                                      : "float ",
              k->vars[s->var]);
      loop_print_expr(o, k, s->value, 1);
      fputs(";\n", o);
      break;
    case S_FAIL:
      fputs("if (", o);
      loop_print_expr(o, k, s->value, 1);
      fputs(")\n", o);
      fprintf(o, "%*sreturn -1;\n", depth * 2 + 2, "");
      break;
    case S_PREFETCH:
      fprintf(o, "%s_PREFETCH(&%s[", M, s->buf->name);
      loop_print_expr(o, k, s->index, 1);
      fputs("]);\n", o);
      break;
    }
  }
}

static int uses_count_expr(const Expr *e) {
  return e && (e->k == X_N || uses_count_expr(e->a) || uses_count_expr(e->b) ||
               uses_count_expr(e->c));
}

/* What a kernel function needs from its caller: count, failure. */
static void scan(const StmtVec *body, int *count, int *fails) {
  for (int i = 0; i < body->n; i++) {
    const Stmt *s = body->v[i];
    *count |= (s->k == S_FOR && s->extent < 0) || uses_count_expr(s->index) ||
              uses_count_expr(s->value);
    *fails |= s->k == S_FAIL;
    scan(&s->body, count, fails);
  }
}

/* Names of the kernel functions of one file, unique. */
static const char *kernel_name(Arena *a, NameSet *names, const char *prefix,
                               const char *kname) {
  size_t len = strlen(kname);
  char *s = arena_alloc(a, len + strlen(prefix) + 2);
  size_t k = (size_t)sprintf(s, "%s_", prefix);
  for (size_t i = 0; i < len; i++)
    s[k++] = isalnum((unsigned char)kname[i]) ? kname[i] : '_';
  s[k] = 0;
  const char *name = s;
  for (int suffix = 2; nameset_has(names, name); suffix++)
    name = arena_printf(a, "%s_%d", s, suffix);
  nameset_add(a, names, name);
  return name;
}

/* The caller's arrays a kernel reads or writes (directly or through an
 * alias), in the program's order: their ids, sorted, in io[0..return). */
static int io_ids(const Program *p, const Used *u, int *io) {
  int n = 0;
  for (int i = 0; i < u->n; i++) {
    const Buffer *r = root(p->bufs.v[u->ids[i]]);
    if (r->kind == BUF_INPUT || r->kind == BUF_OUTPUT)
      io[n++] = r->id;
  }
  qsort(io, (size_t)n, sizeof *io, by_int);
  int m = 0;
  for (int i = 0; i < n; i++)
    if (!m || io[m - 1] != io[i])
      io[m++] = io[i];
  return m;
}

static void io_args(FILE *o, const Program *p, const int *io, int n, int decl) {
  for (int i = 0; i < n; i++) {
    const Buffer *b = p->bufs.v[io[i]];
    if (decl)
      fprintf(o, ", %s%s *%s", b->kind == BUF_INPUT ? "const " : "",
              b->is_int ? "int64_t" : "float", b->name);
    else
      fprintf(o, ", %s", b->name);
  }
}

/* One layer's loop nest as a static function, and its call. Small
 * functions keep the C compiler fast on models of hundreds of layers. */
static void print_kernel(FILE *o, FILE *call, const Program *p, const Kernel *k,
                         const Diag *d, const char *model, const char *fname,
                         Used *used) {
  const char *path = diag_path(d, k->loc);
  const char *slash = strrchr(path, '/');
  fprintf(o, "/* %s: %s", k->name, k->what);
  if (k->loc.file)
    fprintf(o, ", %s:%d", slash ? slash + 1 : path, k->loc.line);
  if (k->schedule)
    fprintf(o, "\n * schedule: %s", k->schedule);
  fprintf(o, " */\n");
  mark_stmts(&k->body, used);
  used_sort(used);
  int count = 0, fails = 0;
  scan(&k->body, &count, &fails);
  int state = 0;
  for (int i = 0; i < used->n; i++) {
    const Buffer *r = root(p->bufs.v[used->ids[i]]);
    state |= r->kind != BUF_INPUT && r->kind != BUF_OUTPUT;
  }
  int *io = mem_alloc(sizeof(int) * ((size_t)used->n + 1));
  int nio = io_ids(p, used, io);
  fprintf(o, "static %s %s(%s%s_state *s, ptrdiff_t count",
          fails ? "int" : "void", fname, state ? "" : "const ", model);
  io_args(o, p, io, nio, 1);
  fprintf(o, ") {\n");
  if (!state)
    fprintf(o, "  (void)s;\n");
  if (!count)
    fprintf(o, "  (void)count;\n");
  for (int i = 0; i < used->n; i++)
    declare(o, p->bufs.v[used->ids[i]], used->mark[used->ids[i]] & 2);
  for (int i = 0; i < k->locals.n; i++)
    fprintf(o, "  float %s[%" PRId64 "]; /* accumulators */\n",
            k->locals.v[i]->name, k->locals.v[i]->size);
  char M[256];
  upper(M, model, sizeof M);
  print_stmts(o, k, &k->body, 1, M);
  if (fails)
    fprintf(o, "  return 0;\n");
  fprintf(o, "}\n\n");
  fprintf(call, "  %s_KERNEL(\"%s\", ", M, k->name);
  if (fails)
    fprintf(call, "if (%s(s, count", fname);
  else
    fprintf(call, "%s(s, count", fname);
  io_args(call, p, io, nio, 0);
  fprintf(call, fails ? ")) return -1);\n" : "));\n");
  mem_free(io);
  used_clear(used);
}

/* Prints the kernels as functions into o and their calls into a buffer
 * that the caller prints as the body of the public function. */
static char *print_kernels(FILE *o, const Program *p, const KernelVec *ks,
                           const Diag *d, const char *model, const char *prefix,
                           NameSet *names) {
  char *calls = NULL;
  size_t len = 0;
  FILE *call = open_memstream(&calls, &len);
  Used used = used_new(p);
  for (int i = 0; i < ks->n; i++)
    print_kernel(o, call, p, ks->v[i], d, model,
                 kernel_name(p->a, names, prefix, ks->v[i]->name), &used);
  used_free(&used);
  fclose(call);
  return calls;
}

static void dims(FILE *o, Shape s) {
  fputc('[', o);
  for (int i = 0; i < s.rank; i++)
    fprintf(o, "%s%" PRId64, i ? ", " : "", s.d[i]);
  fputc(']', o);
}

/* The function's parameters: the inputs, then the outputs. */
static void io_params(FILE *o, const Program *p) {
  for (int i = 0; i < p->inputs.n; i++)
    fprintf(o, ", const %s *%s", p->inputs.v[i]->is_int ? "int64_t" : "float",
            p->inputs.v[i]->name);
  for (int i = 0; i < p->outputs.n; i++)
    fprintf(o, ", float *%s", p->outputs.v[i]->name);
}

static void emit_header(FILE *h, const Program *p, const Program *t,
                        const char *M, const char *m) {
  const Graph *g = p->g;
  int64_t arena = p->arena_count;
  if (t && t->arena_count > arena)
    arena = t->arena_count;
  fprintf(h, "/* %s.h: the %s model, generated by cnnc. Do not edit. */\n", m,
          m);
  fprintf(h, "#ifndef %s_H\n#define %s_H\n\n", M, M);
  fprintf(h, "#include <stddef.h>\n#include <stdint.h>\n\n");
  fprintf(h, "/* Samples one call handles at most. */\n");
  fprintf(h, "#define %s_BATCH %" PRId64 "\n", M, p->batch);
  fprintf(
      h, "/* Values per sample of each input and output (NCHW, float32). */\n");
  for (int i = 0; i < p->inputs.n; i++) {
    char U[256];
    upper(U, p->inputs.v[i]->name, sizeof U);
    fprintf(h, "#define %s_%s_SIZE %" PRId64 " /* input ", M, U,
            shape_numel(p->inputs.v[i]->shape));
    dims(h, p->inputs.v[i]->shape);
    fprintf(h, " */\n");
  }
  for (int i = 0; i < p->outputs.n; i++) {
    char U[256];
    upper(U, p->outputs.v[i]->name, sizeof U);
    fprintf(h, "#define %s_%s_SIZE %" PRId64 " /* output ", M, U,
            shape_numel(p->outputs.v[i]->shape));
    dims(h, p->outputs.v[i]->shape);
    fprintf(h, " */\n");
  }
  fprintf(
      h,
      "\n/* Everything the model needs: parameters, buffers and the\n"
      " * activation arena. Its size is fixed; place it where you like.\n"
      " * At a 64-byte boundary (static storage, posix_memalign) its\n"
      " * tensors start on cache lines, which the loops are faster for. */\n");
  fprintf(h, "typedef struct %s_state {\n", m);
  fprintf(h, "  float f32[%" PRId64 "]; /* parameters and float buffers */\n",
          p->f32_count ? p->f32_count : 16);
  fprintf(h, "  int64_t i64[%" PRId64 "]; /* integer buffers */\n",
          p->i64_count ? p->i64_count : 16);
  fprintf(
      h, "  float arena[%" PRId64 "]; /* activations, planned by lifetime */\n",
      arena ? arena : 16);
  if (p->packed_count)
    fprintf(h,
            "  float packed[%" PRId64 "]; /* weights packed for the forward "
            "pass */\n",
            p->packed_count);
  if (t) {
    int64_t n = p->f32_count ? p->f32_count : 16;
    fprintf(h, "  float g32[%" PRId64 "]; /* gradients, as f32 */\n", n);
    fprintf(h, "  float m32[%" PRId64 "]; /* optimizer state: %s */\n", n,
            g->train.opt == OPT_ADAM ? "first moments" : "momentum");
    if (g->train.opt == OPT_ADAM)
      fprintf(h,
              "  float v32[%" PRId64
              "]; /* optimizer state: second moments */\n",
              n);
    fprintf(h, "  float lr;       /* the learning rate */\n");
    fprintf(
        h, "  float base_lr;  /* the train section's rate, for schedules */\n");
    fprintf(
        h,
        "  float best;     /* plateau: the best validation error so far */\n");
    fprintf(h,
            "  int64_t bad_epochs; /* plateau: epochs since it improved */\n");
    fprintf(h, "  int64_t step;   /* optimizer steps taken */\n");
    fprintf(h, "  uint64_t seed;  /* dropout's random stream */\n");
    fprintf(h, "  uint64_t draws; /* training steps that drew from it */\n");
  }
  fprintf(h, "} %s_state;\n\n", m);
  fprintf(h,
          "/* Initializes every parameter as the model's train section says\n"
          " * (PyTorch's defaults unless told otherwise), from seed. */\n");
  fprintf(h, "void %s_init(%s_state *s, uint64_t seed);\n\n", m, m);
  fprintf(h,
          "/* The forward pass (inference) for count samples, 1 <= count <=\n"
          " * %s_BATCH. Returns 0, or -1 if count is out of range. */\n",
          M);
  fprintf(h, "int %s_forward(%s_state *s, int count", m, m);
  io_params(h, p);
  fprintf(h, ");\n\n");
  fprintf(
      h, "/* Loads weights from a safetensors image in memory: every tensor\n"
         " * must be present with its name, dtype and shape (a missing\n"
         " * num_batches_tracked is allowed). Returns 0, or -1 with a message\n"
         " * in err. */\n");
  fprintf(h,
          "int %s_load(%s_state *s, const void *data, size_t size,\n"
          "%*schar *err, size_t errlen);\n",
          m, m, (int)strlen(m) + 10, "");
  if (p->packed_ok)
    fprintf(
        h,
        "/* The forward pass keeps the convolutions' weights packed for its\n"
        " * loops in s->packed, made by its first call after init, load or\n"
        " * update. Call this after writing weights into s->f32 yourself,\n"
        " * so that the next call packs them again. */\n"
        "void %s_weights_changed(%s_state *s);\n",
        m, m);
  fprintf(h, "/* Bytes of the safetensors image %s_save writes. */\n", m);
  fprintf(h, "size_t %s_save_size(void);\n", m);
  fprintf(h, "/* Writes the weights as a safetensors image; returns the bytes\n"
             " * written, or 0 if size is too small. */\n");
  fprintf(h, "size_t %s_save(const %s_state *s, void *data, size_t size);\n\n",
          m, m);
  if (t) {
    fprintf(
        h, "/* Training. backward runs the forward pass in training mode on\n"
           " * count samples (batch statistics, dropout), the loss, and the\n"
           " * backward pass: the gradients land in s->g32. It returns 0 and\n"
           " * the loss, or -1 if count is out of range or a label is not a\n"
           " * class. update applies the optimizer to the gradients; between\n"
           " * the two, gradients may be combined across replicas. train_step\n"
           " * is both, and returns the loss (NaN if backward failed). */\n");
    fprintf(h, "int %s_backward(%s_state *s, int count", m, m);
    io_params(h, t);
    fprintf(h, ", float *loss);\n");
    fprintf(h, "void %s_update(%s_state *s);\n", m, m);
    fprintf(h, "float %s_train_step(%s_state *s, int count", m, m);
    io_params(h, t);
    fprintf(h, ");\n");
    fprintf(h,
            "/* Sets the learning rate of the next updates, and the rate the\n"
            " * schedule scales from. */\n");
    fprintf(h, "void %s_set_lr(%s_state *s, float lr);\n", m, m);
    fprintf(
        h, "/* Applies the train section's schedule after epoch (counted from\n"
           " * 0) of epochs, given that epoch's validation error (used by\n"
           " * plateau); returns the new learning rate. */\n");
    fprintf(h,
            "float %s_end_epoch(%s_state *s, int epoch, int epochs, float "
            "val_error);\n\n",
            m, m);
  }
  fprintf(h, "#endif\n");
  (void)g;
}

static void emit_tables(FILE *c, const Program *p, const char *m) {
  fprintf(c, "/* The state's tensors, named as in PyTorch's state_dict. */\n");
  fprintf(c,
          "typedef struct %s_tensor {\n  const char *name;\n  int dtype; /* 0: "
          "float32, 1: int64 */\n"
          "  int ndim;\n  int64_t shape[4];\n  size_t offset; /* into f32 or "
          "i64 */\n"
          "  size_t numel;\n} %s_tensor;\n\n",
          m, m);
  int n = 0;
  fprintf(c, "static const %s_tensor %s_tensors[] = {\n", m, m);
  for (int i = 0; i < p->bufs.n; i++) {
    const Buffer *b = p->bufs.v[i];
    if (!b->param)
      continue;
    fprintf(c, "    {\"%s\", %d, %d, {", b->param->name, b->kind == BUF_I64,
            b->shape.rank);
    for (int j = 0; j < 4; j++)
      fprintf(c, "%s%" PRId64, j ? ", " : "",
              j < b->shape.rank ? b->shape.d[j] : 0);
    fprintf(c, "}, %" PRId64 ", %" PRId64 "},\n", b->offset, b->size);
    n++;
  }
  if (!n)
    fprintf(c, "    {\"\", 0, 0, {0, 0, 0, 0}, 0, 0},\n");
  fprintf(c, "};\nenum { %s_NTENSORS = %d };\n\n", m, n);
}

static void emit_init(FILE *c, const Program *p, const Program *t,
                      const char *m) {
  fprintf(c,
          "/* How init() fills each float tensor: uniform in [-bound, bound],\n"
          " * or the constant value. */\n");
  fprintf(
      c,
      "static const struct {\n  size_t offset, count;\n  float bound, value;\n"
      "} %s_fills[] = {\n",
      m);
  int n = 0;
  for (int i = 0; i < p->inits.n; i++) {
    const ParamInit *pi = &p->inits.v[i];
    if (pi->buf->kind != BUF_F32)
      continue;
    fprintf(c, "    {%" PRId64 ", %" PRId64 ", ", pi->buf->offset,
            pi->buf->size);
    loop_print_float(c, pi->fill == FILL_UNIFORM ? pi->bound : 0.0, 1);
    fputs(", ", c);
    loop_print_float(c, pi->fill == FILL_CONST ? pi->value : 0.0, 1);
    fprintf(c, "}, /* %s */\n", pi->buf->param->name);
    n++;
  }
  if (!n)
    fprintf(c, "    {0, 0, 0.0f, 0.0f},\n");
  fprintf(c, "};\n\n");
  fprintf(c,
          "/* splitmix64: a small, well-distributed generator whose state the\n"
          " * caller holds. */\n");
  fprintf(c,
          "static uint64_t %s_random(uint64_t *state) {\n"
          "  uint64_t z = (*state += 0x9e3779b97f4a7c15u);\n"
          "  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;\n"
          "  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;\n"
          "  return z ^ (z >> 31);\n}\n\n",
          m);
  fprintf(c, "void %s_init(%s_state *s, uint64_t seed) {\n", m, m);
  fprintf(c, "  uint64_t state = seed;\n");
  if (t) {
    fprintf(c, "  memset(s->g32, 0, sizeof s->g32);\n  memset(s->m32, 0, "
               "sizeof s->m32);\n");
    if (p->g->train.opt == OPT_ADAM)
      fprintf(c, "  memset(s->v32, 0, sizeof s->v32);\n");
    fprintf(c, "  s->lr = ");
    loop_print_float(c, p->g->train.lr, 1);
    fprintf(c, ";\n  s->base_lr = s->lr;\n  s->best = INFINITY;\n  "
               "s->bad_epochs = 0;\n"
               "  s->step = 0;\n  s->seed = seed;\n  s->draws = 0;\n");
  }
  fprintf(c, "  memset(s->i64, 0, sizeof s->i64);\n");
  fprintf(
      c,
      "  for (size_t t = 0; t < sizeof %s_fills / sizeof %s_fills[0]; t++) {\n",
      m, m);
  fprintf(c, "    float *dst = s->f32 + %s_fills[t].offset;\n", m);
  fprintf(c, "    for (size_t i = 0; i < %s_fills[t].count; i++) {\n", m);
  fprintf(c, "      /* 24 random bits: a float in [0, 1) */\n");
  fprintf(c,
          "      float u = (float)(%s_random(&state) >> 40) * (1.0f / "
          "16777216.0f);\n",
          m);
  fprintf(c,
          "      dst[i] = %s_fills[t].bound != 0.0f\n"
          "                   ? (2.0f * u - 1.0f) * %s_fills[t].bound\n"
          "                   : %s_fills[t].value;\n",
          m, m, m);
  fprintf(c, "    }\n  }\n}\n\n");
}

/* An input the pass does not read (an mse target, for the forward pass)
 * is still a parameter of the function: say it is unused on purpose. */
static void unused_io(FILE *c, const Program *p) {
  Used used = used_new(p);
  for (int i = 0; i < p->kernels.n; i++)
    mark_stmts(&p->kernels.v[i]->body, &used);
  int *io = mem_alloc(sizeof(int) * ((size_t)used.n + 1));
  int nio = io_ids(p, &used, io);
  for (int i = 0, j = 0; i < p->bufs.n; i++) {
    const Buffer *b = p->bufs.v[i];
    if ((b->kind != BUF_INPUT && b->kind != BUF_OUTPUT) || b->alias)
      continue;
    while (j < nio && io[j] < i)
      j++;
    if (j == nio || io[j] != i)
      fprintf(c, "  (void)%s;\n", b->name);
  }
  mem_free(io);
  used_free(&used);
}

static void emit_train(FILE *c, const Program *t, const Diag *d, const char *m,
                       const char *M, NameSet *names) {
  char *calls = print_kernels(c, t, &t->kernels, d, m, "train", names);
  char *updates = print_kernels(c, t, &t->update, d, m, "update", names);
  fprintf(c, "int %s_backward(%s_state *s, int count", m, m);
  io_params(c, t);
  fprintf(c,
          ", float *loss) {\n  if (count < 1 || count > %s_BATCH)\n    return "
          "-1;\n",
          M);
  fprintf(c, "  s->draws++;\n");
  unused_io(c, t);
  fputs(calls, c);
  fprintf(c, "  *loss = s->arena[%" PRId64 "];\n  return 0;\n}\n\n",
          t->loss->offset);
  fprintf(c,
          "void %s_update(%s_state *s) {\n  ptrdiff_t count = 0;\n"
          "  s->step++;\n",
          m, m);
  fputs(updates, c);
  fprintf(c, "  (void)count;\n}\n\n");
  free(calls);
  free(updates);
  fprintf(c, "float %s_train_step(%s_state *s, int count", m, m);
  io_params(c, t);
  fprintf(c, ") {\n  float loss;\n  if (%s_backward(s, count", m);
  for (int i = 0; i < t->inputs.n; i++)
    fprintf(c, ", %s", t->inputs.v[i]->name);
  fprintf(
      c,
      ", &loss) != 0)\n    return NAN;\n  %s_update(s);\n  return loss;\n}\n\n",
      m);
  fprintf(c,
          "void %s_set_lr(%s_state *s, float lr) {\n  s->lr = lr;\n  "
          "s->base_lr = lr;\n}\n\n",
          m, m);
  const TrainCfg *tc = &t->g->train;
  fprintf(c,
          "float %s_end_epoch(%s_state *s, int epoch, int epochs, float "
          "val_error) {\n",
          m, m);
  switch (tc->sched) {
  case SCHED_STEP:
    fprintf(c,
            "  /* step(every=%" PRId64 ", gamma=%g), as StepLR */\n"
            "  (void)epochs;\n  (void)val_error;\n"
            "  s->lr = s->base_lr * powf(%.9gf, (float)((epoch + 1) / %" PRId64
            "));\n",
            tc->every, tc->gamma, tc->gamma, tc->every);
    break;
  case SCHED_COSINE:
    fprintf(
        c,
        "  /* cosine annealing to 0 over the epochs, as CosineAnnealingLR */\n"
        "  (void)val_error;\n"
        "  s->lr = s->base_lr * 0.5f * (1.0f + cosf(3.14159265f * "
        "(float)(epoch + 1) /\n"
        "                                              (float)(epochs > 0 ? "
        "epochs : 1)));\n");
    break;
  case SCHED_PLATEAU:
    fprintf(c,
            "  /* plateau(factor=%g, patience=%" PRId64
            "), as ReduceLROnPlateau: the\n"
            "   * error must improve on the best by a relative 1e-4 */\n"
            "  (void)epoch;\n  (void)epochs;\n"
            "  if (val_error < s->best * (1.0f - 1e-4f)) {\n"
            "    s->best = val_error;\n    s->bad_epochs = 0;\n"
            "  } else if (++s->bad_epochs > %" PRId64 ") {\n"
            "    s->lr *= %.9gf;\n    s->bad_epochs = 0;\n  }\n",
            tc->factor, tc->patience, tc->patience, tc->factor);
    break;
  case SCHED_CONSTANT:
    fprintf(c, "  (void)epoch;\n  (void)epochs;\n  (void)val_error;\n");
    break;
  }
  fprintf(c, "  return s->lr;\n}\n");
}

/* Dropout's random numbers: a hash of the state's seed, the training step,
 * the layer and the element, so a step can draw the same mask twice. */
static void emit_uniform(FILE *c, const char *m) {
  fprintf(c,
          "static float uniform(const %s_state *s, uint64_t layer, uint64_t "
          "key) {\n"
          "  uint64_t z = s->seed ^ (s->draws * 0x9e3779b97f4a7c15u) ^\n"
          "               (layer << 48) ^ key;\n"
          "  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;\n"
          "  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;\n"
          "  z ^= z >> 31;\n"
          "  return (float)(z >> 40) * (1.0f / 16777216.0f);\n}\n\n",
          m);
}

/* Whether e, the statements of body or the kernels of v use the float
 * operation k (X_RAND, X_MAX, X_MIN, X_FMA): the helper functions model.c
 * defines for them are only those it calls. */
static int uses_expr(const Expr *e, XKind k) {
  return e && ((e->k == k && !e->isint) || uses_expr(e->a, k) ||
               uses_expr(e->b, k) || uses_expr(e->c, k));
}

static int uses_body(const StmtVec *body, XKind k) {
  for (int i = 0; i < body->n; i++) {
    const Stmt *s = body->v[i];
    if (uses_expr(s->index, k) || uses_expr(s->value, k) ||
        uses_body(&s->body, k))
      return 1;
  }
  return 0;
}

static int uses(const KernelVec *v, XKind k) {
  for (int i = 0; i < v->n; i++)
    if (uses_body(&v->v[i]->body, k))
      return 1;
  return 0;
}

static int prefetches(const StmtVec *body) {
  for (int i = 0; i < body->n; i++)
    if (body->v[i]->k == S_PREFETCH || prefetches(&body->v[i]->body))
      return 1;
  return 0;
}

static int kernels_prefetch(const KernelVec *v) {
  for (int i = 0; i < v->n; i++)
    if (prefetches(&v->v[i]->body))
      return 1;
  return 0;
}

/* Whether any kernel model.c prints prefetches, as program_uses asks of
 * an operation: the training program's too. */
static int program_prefetches(const Program *p, const Program *t) {
  return kernels_prefetch(&p->kernels) || kernels_prefetch(&p->update) ||
         (t && (kernels_prefetch(&t->kernels) || kernels_prefetch(&t->update)));
}

static int program_uses(const Program *p, const Program *t, XKind k) {
  return uses(&p->kernels, k) || uses(&p->update, k) ||
         (t && (uses(&t->kernels, k) || uses(&t->update, k)));
}

void emit_c(FILE *c, FILE *h, const Program *p, const Program *t, const Diag *d,
            const char *header_name) {
  const char *m = p->g->name;
  char M[256];
  upper(M, m, sizeof M);
  emit_header(h, p, t, M, m);

  fprintf(c,
          "/* %s.c: the %s model, generated by cnnc from %s. Do not edit.\n"
          " * C99; needs libm only. */\n",
          m, m, diag_path(d, p->g->loc));
  fprintf(c, "#include \"%s\"\n\n", header_name);
  fprintf(c, "#include <math.h>\n#include <stddef.h>\n#include "
             "<stdint.h>\n#include <string.h>\n\n");
  fprintf(
      c,
      "/* Compiled with OpenMP (-fopenmp), the loops marked so run on its\n"
      " * threads (OMP_NUM_THREADS); without it, in order. */\n"
      "#ifdef _OPENMP\n"
      "#define %s_PRAGMA(x) _Pragma(#x)\n"
      "#define %s_PARALLEL_FOR(clauses) %s_PRAGMA(omp parallel for "
      "clauses)\n"
      "#else\n"
      "#define %s_PARALLEL_FOR(clauses)\n"
      "#endif\n\n"
      "/* Kernels are called as %s_KERNEL(\"layer\", call): defined before\n"
      " * this file is compiled, it can time the layers (bench/harness.c\n"
      " * does); by default it is the call alone. */\n"
      "#ifndef %s_KERNEL\n"
      "#define %s_KERNEL(layer, call) call\n"
      "#endif\n\n",
      M, M, M, M, M, M, M);
  if (program_prefetches(p, t))
    fprintf(c,
            "/* Where gcc or clang compiles it, a hint that the packed "
            "weights at p\n"
            " * will be read soon, fetched into the L2 cache while the "
            "tiles work\n"
            " * (lower_conv.c); elsewhere nothing. */\n"
            "#ifdef __GNUC__\n"
            "#define %s_PREFETCH(p) __builtin_prefetch((p), 0, 2)\n"
            "#else\n"
            "#define %s_PREFETCH(p) ((void)(p))\n"
            "#endif\n\n",
            M, M);
  /* the helpers the kernels call, only those (clang warns of an unused
   * static function, inline or not) */
  int max = program_uses(p, t, X_MAX), min = program_uses(p, t, X_MIN);
  if (max || min)
    fputs("/* fmaxf and fminf as glibc computes them on x86-64 (x > y ? x : "
          "y,\n"
          " * and x when y is NaN), written out: compilers inline and "
          "vectorize\n"
          " * these, where gcc calls fmaxf for every element of a max pool. "
          "*/\n",
          c);
  if (max)
    fputs("static inline float max_of(float x, float y) {\n"
          "  return x > y ? x : y != y ? x : y;\n"
          "}\n\n",
          c);
  if (min)
    fputs("static inline float min_of(float x, float y) {\n"
          "  return x < y ? x : y != y ? x : y;\n"
          "}\n\n",
          c);
  if (program_uses(p, t, X_FMA))
    fputs("/* a * b + c rounded once, as the loop nests' fused multiply-adds\n"
          " * are (cnnc's contraction; -fno-fma leaves none): the instruction\n"
          " * where the target has one, else a multiply and an add, rounded\n"
          " * twice, where fmaf would be a library call for each. */\n"
          "static inline float madd(float a, float b, float c) {\n"
          "#if defined(FP_FAST_FMAF) || defined(__FMA__)\n"
          "  return fmaf(a, b, c);\n"
          "#else\n"
          "  return a * b + c;\n"
          "#endif\n"
          "}\n\n",
          c);
  emit_tables(c, p, m);
  print_template(c, emit_c_safetensors_template, m);
  fprintf(c, "\n");
  emit_init(c, p, t, m);
  if (p->packed_ok)
    fprintf(c,
            "void %s_weights_changed(%s_state *s) {\n"
            "  s->i64[%" PRId64 "] = 0; /* weights_packed */\n}\n\n",
            m, m, p->packed_ok->offset);
  fprintf(c,
          "int %s_load(%s_state *s, const void *data, size_t size,\n"
          "%*schar *err, size_t errlen) {\n",
          m, m, (int)strlen(m) + 10, "");
  if (p->packed_ok)
    fprintf(c, "  %s_weights_changed(s);\n", m);
  fprintf(c,
          "  return %s_st_load((const unsigned char *)data, size, %s_tensors,\n"
          "%*s%s_NTENSORS, s->f32, s->i64, err, errlen);\n}\n\n",
          m, m, (int)strlen(m) + 18, "", m);
  fprintf(c,
          "size_t %s_save_size(void) {\n"
          "  return %s_st_size(%s_tensors, %s_NTENSORS);\n}\n\n",
          m, m, m, m);
  fprintf(c,
          "size_t %s_save(const %s_state *s, void *data, size_t size) {\n"
          "  return %s_st_save((unsigned char *)data, size, %s_tensors,\n"
          "%*s%s_NTENSORS, s->f32, s->i64);\n}\n\n",
          m, m, m, m, (int)strlen(m) + 18, "", m);
  NameSet names = {0};
  char *calls = print_kernels(c, p, &p->kernels, d, m, "forward", &names);
  fprintf(c, "int %s_forward(%s_state *s, int count", m, m);
  io_params(c, p);
  fprintf(c, ") {\n  if (count < 1 || count > %s_BATCH)\n    return -1;\n", M);
  unused_io(c, p);
  fputs(calls, c);
  free(calls);
  fprintf(c, "  return 0;\n}\n");
  if (t) {
    fprintf(c, "\n");
    if (uses(&t->kernels, X_RAND))
      emit_uniform(c, m);
    emit_train(c, t, d, m, M, &names);
  }
}
