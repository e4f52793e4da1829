/* cnnc run. The generated model.c, model.h and a driver main() are hashed;
 * the program built from them lives in $XDG_CACHE_HOME/cnnc/HASH (or
 * ~/.cache/cnnc/HASH), so a second run of the same model does not compile
 * again. The driver is generated too, because it names the model's inputs
 * and outputs; it links the runtime's safetensors code, found next to the
 * cnnc executable (../runtime in the source tree, ../share/cnnc/runtime
 * when installed) or in $CNNC_RUNTIME. */
#include "run.h"

#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "emit_c.h"

/* Whether a runtime file goes into the driver: everything but the IDX
 * reader, which needs zlib and serves training. */
static int driver_source(const char *path, int train) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  return train || (strcmp(base, "idx.c") != 0 && strcmp(base, "train.c") != 0);
}

static void driver(FILE *o, const Program *p) {
  const char *m = p->g->name;
  char M[256];
  size_t k = 0;
  for (; m[k] && k < sizeof M - 1; k++)
    M[k] = (char)(m[k] >= 'a' && m[k] <= 'z' ? m[k] - 32 : m[k]);
  M[k] = 0;
  fprintf(o, "/* Driver of cnnc run for %s: weights, inputs -> outputs. */\n",
          m);
  fprintf(o,
          "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\n");
  fprintf(o, "#include \"cnnc_runtime.h\"\n#include \"%s.h\"\n\n", m);
  fprintf(
      o, "static int fail(const char *file, const char *msg) {\n"
         "  if (file)\n    fprintf(stderr, \"cnnc: %%s: %%s\\n\", file, msg);\n"
         "  else\n    fprintf(stderr, \"cnnc: %%s\\n\", msg);\n  return "
         "1;\n}\n\n");
  /* checks one input tensor: float32, [N, per-sample dims] */
  fprintf(
      o,
      "static int check(const char *file, const rt_tensor *t, const char "
      "*name,\n"
      "                 int ndim, const int64_t *dims, const char *want,\n"
      "                 int64_t *count) {\n"
      "  char msg[512];\n"
      "  int ok = t && t->dtype == RT_F32 && t->ndim == ndim + 1;\n"
      "  for (int i = 0; ok && i < ndim; i++)\n"
      "    ok = t->shape[i + 1] == dims[i];\n"
      "  if (!t)\n"
      "    snprintf(msg, sizeof msg, \"no tensor '%%s' (the model's input, "
      "%%s)\", name, want);\n"
      "  else if (!ok)\n"
      "    snprintf(msg, sizeof msg, \"tensor '%%s' must be F32 %%s\", name, "
      "want);\n"
      "  else if (t->shape[0] < 1)\n"
      "    snprintf(msg, sizeof msg, \"tensor '%%s' has no samples\", name);\n"
      "  else if (*count >= 0 && t->shape[0] != *count)\n"
      "    snprintf(msg, sizeof msg, \"tensor '%%s' has %%lld samples, another "
      "input %%lld\",\n"
      "             name, (long long)t->shape[0], (long long)*count);\n"
      "  else {\n    *count = t->shape[0];\n    return 0;\n  }\n"
      "  return fail(file, msg);\n}\n\n");
  fprintf(o,
          "int main(int argc, char **argv) {\n"
          "  char err[512];\n"
          "  if (argc != 4)\n    return fail(NULL, \"usage: run WEIGHTS INPUTS "
          "OUTPUTS\");\n"
          "  %s_state *s = rt_state_alloc(sizeof *s);\n"
          "  if (!s)\n    return fail(NULL, \"out of memory\");\n"
          "  unsigned char *buf;\n  size_t len;\n"
          "  if (rt_read_file(argv[1], &buf, &len, err, sizeof err))\n    "
          "return fail(NULL, err);\n"
          "  if (%s_load(s, buf, len, err, sizeof err))\n    return "
          "fail(argv[1], err);\n"
          "  free(buf);\n"
          "  rt_tensors in = {0}, out = {0};\n"
          "  if (rt_safetensors_read(argv[2], &in, err, sizeof err))\n    "
          "return fail(NULL, err);\n"
          "  int64_t count = -1;\n",
          m, m);
  for (int i = 0; i < p->inputs.n; i++) {
    const Buffer *b = p->inputs.v[i];
    const Shape sh = b->shape;
    fprintf(o, "  static const int64_t dims_%s[] = {", b->name);
    for (int j = 0; j < sh.rank; j++)
      fprintf(o, "%s%" PRId64, j ? ", " : "", sh.d[j]);
    fprintf(o, "};\n  const rt_tensor *in_%s = rt_tensors_find(&in, \"%s\");\n",
            b->name, b->node->name);
    fprintf(o, "  if (check(argv[2], in_%s, \"%s\", %d, dims_%s, \"[N", b->name,
            b->node->name, sh.rank, b->name);
    for (int j = 0; j < sh.rank; j++)
      fprintf(o, ", %" PRId64, sh.d[j]);
    fprintf(o, "]\", &count))\n    return 1;\n");
  }
  fprintf(o,
          "  if (in.n != %d) {\n"
          "    for (int i = 0; i < in.n; i++) {\n",
          p->inputs.n);
  fprintf(o, "      int known = 0;\n");
  for (int i = 0; i < p->inputs.n; i++)
    fprintf(o, "      known |= strcmp(in.v[i].name, \"%s\") == 0;\n",
            p->inputs.v[i]->node->name);
  fprintf(o, "      if (!known) {\n"
             "        char shown[256];\n"
             "        snprintf(err, sizeof err, \"tensor '%%s' is not an input "
             "of the model\",\n"
             "                 rt_printable(in.v[i].name, shown, sizeof "
             "shown));\n"
             "        return fail(argv[2], err);\n      }\n    }\n  }\n");
  for (int i = 0; i < p->outputs.n; i++) {
    const Buffer *b = p->outputs.v[i];
    char U[256];
    size_t j = 0;
    for (; b->name[j] && j < sizeof U - 1; j++)
      U[j] = (char)(b->name[j] >= 'a' && b->name[j] <= 'z' ? b->name[j] - 32
                                                           : b->name[j]);
    U[j] = 0;
    fprintf(o,
            "  float *out_%s = calloc((size_t)count * %s_%s_SIZE, "
            "sizeof(float));\n",
            b->name, M, U);
    fprintf(o, "  if (!out_%s)\n    return fail(NULL, \"out of memory\");\n",
            b->name);
  }
  fprintf(o, "  for (int64_t at = 0; at < count; at += %s_BATCH) {\n", M);
  fprintf(o,
          "    int n = (int)(count - at < %s_BATCH ? count - at : %s_BATCH);\n",
          M, M);
  fprintf(o, "    %s_forward(s, n", m);
  for (int i = 0; i < p->inputs.n; i++) {
    char U[256];
    const char *nm = p->inputs.v[i]->name;
    size_t j = 0;
    for (; nm[j] && j < sizeof U - 1; j++)
      U[j] = (char)(nm[j] >= 'a' && nm[j] <= 'z' ? nm[j] - 32 : nm[j]);
    U[j] = 0;
    fprintf(o, ",\n        (const float *)in_%s->data + at * %s_%s_SIZE", nm, M,
            U);
  }
  for (int i = 0; i < p->outputs.n; i++) {
    char U[256];
    const char *nm = p->outputs.v[i]->name;
    size_t j = 0;
    for (; nm[j] && j < sizeof U - 1; j++)
      U[j] = (char)(nm[j] >= 'a' && nm[j] <= 'z' ? nm[j] - 32 : nm[j]);
    U[j] = 0;
    fprintf(o, ",\n        out_%s + at * %s_%s_SIZE", nm, M, U);
  }
  fprintf(o, ");\n  }\n");
  for (int i = 0; i < p->outputs.n; i++) {
    const Buffer *b = p->outputs.v[i];
    fprintf(o, "  {\n    const int64_t shape[] = {count");
    for (int j = 0; j < b->shape.rank; j++)
      fprintf(o, ", %" PRId64, b->shape.d[j]);
    fprintf(
        o,
        "};\n    if (rt_tensors_add(&out, \"%s\", RT_F32, %d, shape, out_%s))\n"
        "      return fail(NULL, \"out of memory\");\n  }\n",
        b->node ? p->g->outputs.v[i].name : b->name, b->shape.rank + 1,
        b->name);
  }
  fprintf(o, "  if (rt_safetensors_write(argv[3], &out, err, sizeof err))\n"
             "    return fail(NULL, err);\n"
             "  return 0;\n}\n");
}

static uint64_t fnv(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3u;
  }
  return h;
}

static int write_file(const char *path, const char *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f)
    return -1;
  int ok = fwrite(data, 1, n, f) == n;
  return (fclose(f) == 0 && ok) ? 0 : -1;
}

static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  char *buf = NULL;
  size_t cap = 0;
  *n = 0;
  for (;;) {
    if (*n == cap) {
      cap = cap ? cap * 2 : 65536;
      buf = mem_realloc(buf, cap);
    }
    size_t got = fread(buf + *n, 1, cap - *n, f);
    *n += got;
    if (!got)
      break;
  }
  fclose(f);
  return buf;
}

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* The runtime directory: $CNNC_RUNTIME, or beside the executable. */
static int find_runtime(char *dir, size_t n, const char *self) {
  const char *env = getenv("CNNC_RUNTIME");
  if (env) {
    snprintf(dir, n, "%s", env);
    return 0;
  }
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) {
    if (!self || !realpath(self, exe))
      return -1;
  } else {
    exe[len] = 0;
  }
  char *slash = strrchr(exe, '/');
  if (!slash)
    return -1;
  *slash = 0;
  static const char *const tries[] = {"/../runtime", "/../share/cnnc/runtime"};
  for (size_t i = 0; i < 2; i++) {
    char probe[2 * PATH_MAX];
    if ((size_t)snprintf(dir, n, "%s%s", exe, tries[i]) >= n)
      return -1;
    snprintf(probe, sizeof probe, "%s/cnnc_runtime.h", dir);
    if (exists(probe))
      return 0;
  }
  return -1;
}

static int mkdirs(char *path) {
  for (char *p = path + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(path, 0755) && errno != EEXIST)
        return -1;
      *p = '/';
    }
  return mkdir(path, 0755) && errno != EEXIST ? -1 : 0;
}

static int spawn(char *const argv[]) {
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    execvp(argv[0], argv);
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      return -1;
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* The driver of cnnc grad: one training-mode forward and backward pass on
 * all the samples of the input file, then the loss and the gradients. */
static void grad_driver(FILE *o, const Program *t) {
  const char *m = t->g->name;
  char M[256];
  size_t k = 0;
  for (; m[k] && k < sizeof M - 1; k++)
    M[k] = (char)(m[k] >= 'a' && m[k] <= 'z' ? m[k] - 32 : m[k]);
  M[k] = 0;
  fprintf(
      o,
      "/* Driver of cnnc grad for %s: weights, inputs -> loss, gradients. */\n",
      m);
  fprintf(o,
          "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\n");
  fprintf(o, "#include \"cnnc_runtime.h\"\n#include \"%s.h\"\n\n", m);
  fprintf(
      o, "static int fail(const char *file, const char *msg) {\n"
         "  if (file)\n    fprintf(stderr, \"cnnc: %%s: %%s\\n\", file, msg);\n"
         "  else\n    fprintf(stderr, \"cnnc: %%s\\n\", msg);\n  return "
         "1;\n}\n\n");
  fprintf(
      o,
      "/* An input as the model wants it: float32 [N, dims], or the labels\n"
      " * as int64 (int32 is widened). Returns its data, or NULL. */\n"
      "static const void *take(const char *file, rt_tensors *in, const char "
      "*name,\n"
      "                        int want_int, int ndim, const int64_t *dims,\n"
      "                        int64_t *count) {\n"
      "  char msg[512];\n"
      "  rt_tensor *t = NULL;\n"
      "  for (int i = 0; i < in->n; i++)\n"
      "    if (!strcmp(in->v[i].name, name))\n      t = &in->v[i];\n"
      "  if (!t) {\n"
      "    snprintf(msg, sizeof msg, \"no tensor '%%s' (an input of the "
      "model)\", name);\n"
      "    fail(file, msg);\n    return NULL;\n  }\n"
      "  int ok = t->ndim == ndim + 1 && t->shape[0] >= 1 &&\n"
      "           (want_int ? t->dtype == RT_I64 || t->dtype == RT_I32 : "
      "t->dtype == RT_F32);\n"
      "  for (int i = 0; ok && i < ndim; i++)\n    ok = t->shape[i + 1] == "
      "dims[i];\n"
      "  if (!ok || (*count >= 0 && t->shape[0] != *count)) {\n"
      "    snprintf(msg, sizeof msg, \"tensor '%%s' must be %%s [N%%s] with "
      "the same N as the \"\n"
      "             \"other inputs\", name, want_int ? \"I64\" : \"F32\", ndim "
      "? \", ...\" : \"\");\n"
      "    fail(file, msg);\n    return NULL;\n  }\n"
      "  *count = t->shape[0];\n"
      "  if (want_int && t->dtype == RT_I32) {\n"
      "    int64_t n = rt_tensor_numel(t);\n"
      "    int64_t *wide = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));\n"
      "    if (!wide)\n      return NULL;\n"
      "    for (int64_t i = 0; i < n; i++)\n      wide[i] = ((const int32_t "
      "*)t->data)[i];\n"
      "    return wide;\n  }\n"
      "  return t->data;\n}\n\n");
  fprintf(o,
          "int main(int argc, char **argv) {\n"
          "  char err[512];\n"
          "  if (argc != 4)\n    return fail(NULL, \"usage: grad WEIGHTS "
          "INPUTS OUTPUTS\");\n"
          "  %s_state *s = rt_state_alloc(sizeof *s);\n"
          "  if (!s)\n    return fail(NULL, \"out of memory\");\n"
          "  %s_init(s, 0);\n"
          "  unsigned char *buf;\n  size_t len;\n"
          "  if (rt_read_file(argv[1], &buf, &len, err, sizeof err))\n    "
          "return fail(NULL, err);\n"
          "  if (%s_load(s, buf, len, err, sizeof err))\n    return "
          "fail(argv[1], err);\n"
          "  free(buf);\n"
          "  rt_tensors in = {0}, out = {0};\n"
          "  if (rt_safetensors_read(argv[2], &in, err, sizeof err))\n    "
          "return fail(NULL, err);\n"
          "  int64_t count = -1;\n",
          m, m, m);
  for (int i = 0; i < t->inputs.n; i++) {
    const Buffer *b = t->inputs.v[i];
    fprintf(o, "  static const int64_t dims_%s[] = {0", b->name);
    for (int j = 0; j < b->shape.rank; j++)
      fprintf(o, ", %" PRId64, b->shape.d[j]);
    fprintf(o,
            "};\n  const void *in_%s = take(argv[2], &in, \"%s\", %d, %d, "
            "dims_%s + 1, &count);\n"
            "  if (!in_%s)\n    return 1;\n",
            b->name, b->node->name, b->is_int, b->shape.rank, b->name, b->name);
  }
  fprintf(o,
          "  if (in.n != %d)\n"
          "    return fail(argv[2], \"the file holds tensors that are not "
          "inputs of the model\");\n",
          t->inputs.n);
  fprintf(o,
          "  if (count > %s_BATCH) {\n"
          "    snprintf(err, sizeof err, \"%%lld samples, but the model's "
          "batch is %%d \"\n"
          "             \"(use --batch)\", (long long)count, %s_BATCH);\n"
          "    return fail(argv[2], err);\n  }\n",
          M, M);
  fprintf(o, "  float loss;\n  if (%s_backward(s, (int)count", m);
  for (int i = 0; i < t->inputs.n; i++)
    fprintf(o, ", in_%s", t->inputs.v[i]->name);
  fprintf(
      o,
      ", &loss) != 0)\n"
      "    return fail(argv[2], \"a label is not a class of the model\");\n");
  fprintf(o, "  if (rt_tensors_add(&out, \"loss\", RT_F32, 0, NULL, &loss))\n"
             "    return fail(NULL, \"out of memory\");\n");
  for (int i = 0; i < t->bufs.n; i++) {
    const Buffer *b = t->bufs.v[i];
    if (b->kind != BUF_GRAD)
      continue;
    const Param *prm = b->param_buf->param;
    fprintf(o, "  {\n    static const int64_t shape[] = {0");
    for (int j = 0; j < prm->shape.rank; j++)
      fprintf(o, ", %" PRId64, prm->shape.d[j]);
    fprintf(o,
            "};\n    if (rt_tensors_add(&out, \"%s\", RT_F32, %d, shape + 1, "
            "s->g32 + %" PRId64 "))\n"
            "      return fail(NULL, \"out of memory\");\n  }\n",
            prm->name, prm->shape.rank, b->param_buf->offset);
  }
  fprintf(o, "  if (rt_safetensors_write(argv[3], &out, err, sizeof err))\n"
             "    return fail(NULL, err);\n  return 0;\n}\n");
}

/* The driver of cnnc train: the generated model behind runtime/train.c's
 * rt_model, through adapters that take the state as void *. */
static void train_driver(FILE *o, const Program *p, const Program *t) {
  const char *m = p->g->name;
  const Graph *g = p->g;
  char M[256];
  size_t k = 0;
  for (; m[k] && k < sizeof M - 1; k++)
    M[k] = (char)(m[k] >= 'a' && m[k] <= 'z' ? m[k] - 32 : m[k]);
  M[k] = 0;
  const Buffer *x = p->inputs.v[0];
  fprintf(o,
          "/* Driver of cnnc train for %s. */\n#include \"cnnc_runtime.h\"\n"
          "#include \"%s.h\"\n\n",
          m, m);
  fprintf(o,
          "static void w_init(void *s, uint64_t seed) { %s_init(s, seed); }\n",
          m);
  fprintf(
      o,
      "static int w_forward(void *s, int count, const float *x, float *y) {\n"
      "  return %s_forward(s, count, x, y);\n}\n",
      m);
  fprintf(o,
          "static float w_step(void *s, int count, const float *x, const "
          "int64_t *y) {\n"
          "  return %s_train_step(s, count, x, y);\n}\n",
          m);
  fprintf(o, "static void w_set_lr(void *s, float lr) { %s_set_lr(s, lr); }\n",
          m);
  fprintf(o,
          "static float w_end(void *s, int e, int n, float err) {\n"
          "  return %s_end_epoch(s, e, n, err);\n}\n",
          m);
  fprintf(o, "static float *w_f32(void *s) { return ((%s_state *)s)->f32; }\n",
          m);
  fprintf(o,
          "static int64_t *w_i64(void *s) { return ((%s_state *)s)->i64; }\n",
          m);
  fprintf(o, "static float *w_m32(void *s) { return ((%s_state *)s)->m32; }\n",
          m);
  if (g->train.opt == OPT_ADAM)
    fprintf(o,
            "static float *w_v32(void *s) { return ((%s_state *)s)->v32; }\n",
            m);
  else
    fprintf(o,
            "static float *w_v32(void *s) {\n  (void)s;\n  return NULL;\n}\n");
  fprintf(o, "static float *w_lr(void *s) { return &((%s_state *)s)->lr; }\n",
          m);
  fprintf(o,
          "static int64_t *w_step_of(void *s) { return &((%s_state *)s)->step; "
          "}\n\n",
          m);
  fprintf(o, "static const rt_param params[] = {\n");
  int n = 0;
  for (int i = 0; i < p->bufs.n; i++) {
    const Buffer *b = p->bufs.v[i];
    if (!b->param)
      continue;
    fprintf(o, "    {\"%s\", %d, %d, {", b->param->name, b->is_int,
            b->shape.rank);
    for (int j = 0; j < 4; j++)
      fprintf(o, "%s%" PRId64, j ? ", " : "",
              j < b->shape.rank ? b->shape.d[j] : 0);
    fprintf(o, "}, %" PRId64 ", %" PRId64 ", %d},\n", b->offset, b->size,
            b->param->kind == PK_PARAM && !b->param->frozen);
    n++;
  }
  fprintf(o, "};\n\nint main(int argc, char **argv) {\n");
  fprintf(o,
          "  static const rt_model m = {\n"
          "      \"%s\", %s_BATCH, %" PRId64 ", %" PRId64 ", %" PRId64
          ", %" PRId64 ",\n"
          "      sizeof(%s_state), %" PRId64 ", %.9gf, %" PRId64
          "u, params, %d,\n"
          "      w_init, w_forward, w_step, w_set_lr, w_end, w_f32, w_i64,\n"
          "      w_m32, w_v32, w_lr, w_step_of, %" PRId64 "};\n",
          m, M, x->shape.d[0], x->shape.d[1], x->shape.d[2],
          p->outputs.v[0]->shape.d[0], m, g->train.epochs, g->train.lr,
          g->train.seed, n, p->f32_count);
  fprintf(o, "  return rt_train_main(&m, argc, argv);\n}\n");
  (void)t;
}

int run_program(Diag *d, const Program *p, const Program *train,
                const RunOptions *o) {
  const char *m = p->g->name;
  char *csrc = NULL, *hsrc = NULL, *dsrc = NULL;
  size_t clen = 0, hlen = 0, dlen = 0;
  FILE *c = open_memstream(&csrc, &clen), *h = open_memstream(&hsrc, &hlen);
  FILE *dr = open_memstream(&dsrc, &dlen);
  char hname[300];
  snprintf(hname, sizeof hname, "%s.h", m);
  emit_c(c, h, p, train, d, hname);
  if (o->train_argv)
    train_driver(dr, p, train);
  else if (train)
    grad_driver(dr, train);
  else
    driver(dr, p);
  fclose(c);
  fclose(h);
  fclose(dr);
  const char *cc = o->cc ? o->cc : "cc";
  char rt[PATH_MAX];
  int status = 1;
  if (find_runtime(rt, sizeof rt, o->self)) {
    diag_error(d, (Loc){0, 0, 0},
               "cannot find the runtime sources (cnnc_runtime.h); set "
               "CNNC_RUNTIME to the runtime directory");
    goto done;
  }
  uint64_t hash = 0xcbf29ce484222325u;
  hash = fnv(hash, csrc, clen);
  hash = fnv(hash, hsrc, hlen);
  hash = fnv(hash, dsrc, dlen);
  hash = fnv(hash, cc, strlen(cc) + 1);
  glob_t rs;
  char pattern[PATH_MAX + 16];
  snprintf(pattern, sizeof pattern, "%s/*.[ch]", rt);
  if (glob(pattern, 0, NULL, &rs) != 0) {
    diag_error(d, (Loc){0, 0, 0}, "no runtime sources in %s", rt);
    goto done;
  }
  char cfiles[8 * PATH_MAX] = "";
  for (size_t i = 0; i < rs.gl_pathc; i++) {
    if (!driver_source(rs.gl_pathv[i], o->train_argv != NULL))
      continue;
    size_t n;
    char *text = slurp(rs.gl_pathv[i], &n);
    if (!text) {
      diag_error(d, (Loc){0, 0, 0}, "cannot read the runtime source %s",
                 rs.gl_pathv[i]);
      globfree(&rs);
      goto done;
    }
    hash = fnv(hash, text, n);
    mem_free(text);
    size_t len = strlen(rs.gl_pathv[i]);
    if (len > 2 && rs.gl_pathv[i][len - 1] == 'c' &&
        strlen(cfiles) + len + 4 < sizeof cfiles) {
      strcat(cfiles, " '");
      strcat(cfiles, rs.gl_pathv[i]);
      strcat(cfiles, "'");
    }
  }
  globfree(&rs);
  char dir[PATH_MAX];
  const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  if (xdg && *xdg)
    snprintf(dir, sizeof dir, "%s/cnnc/%016" PRIx64, xdg, hash);
  else
    snprintf(dir, sizeof dir, "%s/.cache/cnnc/%016" PRIx64,
             home ? home : "/tmp", hash);
  char prog[PATH_MAX + 16];
  snprintf(prog, sizeof prog, "%s/run", dir);
  if (!exists(prog)) {
    char path[PATH_MAX + 320];
    if (mkdirs(dir)) {
      diag_error(d, (Loc){0, 0, 0}, "cannot create %s: %s", dir,
                 strerror(errno));
      goto done;
    }
    snprintf(path, sizeof path, "%s/%s.c", dir, m);
    int bad = write_file(path, csrc, clen);
    snprintf(path, sizeof path, "%s/%s.h", dir, m);
    bad |= write_file(path, hsrc, hlen);
    snprintf(path, sizeof path, "%s/driver.c", dir);
    bad |= write_file(path, dsrc, dlen);
    if (bad) {
      diag_error(d, (Loc){0, 0, 0}, "cannot write into %s: %s", dir,
                 strerror(errno));
      goto done;
    }
    /* cc may carry flags ("gcc -O1"): the shell splits it. By default the
     * program is built for this machine; ISO C mode keeps the compiler
     * from fusing multiply-adds, so results do not depend on the CPU. */
    char cmd[8 * PATH_MAX];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && %s -std=c99 %s -D_XOPEN_SOURCE=700 -I'%s' -o run.tmp "
             "%s.c driver.c "
             "%s -lm%s && mv run.tmp run",
             dir, cc, o->cc ? "" : "-O3 -march=native -fopenmp", rt, m, cfiles,
             o->train_argv ? " -lz" : "");
    if (o->verbose)
      fprintf(stderr, "cnnc: compiling: %s\n", cmd);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    int rc = spawn(argv);
    if (rc != 0) {
      diag_error(d, (Loc){0, 0, 0},
                 "the C compiler '%s' failed (status %d) on %s/%s.c", cc, rc,
                 dir, m);
      goto done;
    }
  } else if (o->verbose) {
    fprintf(stderr, "cnnc: using the compiled model in %s\n", dir);
  }
  {
    char *argv3[] = {prog, (char *)o->weights, (char *)o->input,
                     (char *)o->output, NULL};
    char **argv = argv3;
    if (o->train_argv) {
      argv = o->train_argv;
      argv[0] = prog;
    }
    int rc = spawn(argv);
    if (rc < 0 || rc == 127) {
      diag_error(d, (Loc){0, 0, 0}, "cannot run %s", prog);
      goto done;
    }
    if (rc >= 128) {
      diag_internal(d, "the compiled model %s stopped with signal %d", prog,
                    rc - 128);
      goto done;
    }
    status = rc == 0 ? 0 : 1;
  }
done:
  free(csrc);
  free(hsrc);
  free(dsrc);
  return status;
}
