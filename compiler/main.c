/* The cnnc driver: parses the command line and runs the pipeline, one
 * phase after another:
 *
 *   load (lexer, parser, imports)
 *   elaborate (blocks, loops, names; shapes as nodes are made)
 *   -> check table | dot
 *   lower (loop nests, eval mode) -> plan (memory) -> emit_c | run | jit
 *
 * Exit status: 0 success, 1 errors in the model or its files, 2 a bad
 * command line, 3 an internal compiler error. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autodiff.h"
#include "check.h"
#include "diag.h"
#include "dot.h"
#include "elaborate.h"
#include "emit_c.h"
#include "jit.h"
#include "load.h"
#include "lower.h"
#include "plan.h"
#include "run.h"
#include "threads.h"

#ifndef CNNC_VERSION
#define CNNC_VERSION "0.0.0"
#endif

static const char usage[] =
    "usage: cnnc MODEL.cnn -o MODEL.c [options]\n"
    "       cnnc <command> [options] MODEL.cnn\n"
    "\n"
    "  cnnc MODEL.cnn -o FILE.c  write standalone C for the model: FILE.c and\n"
    "             FILE.h, C99, libm only; inference, and training when the\n"
    "             model has a loss (unless --infer-only)\n"
    "\n"
    "commands:\n"
    "  check      parse the model, build its graph and infer every shape;\n"
    "             print one row per layer (output shape, parameters, MACs,\n"
    "             receptive field) and the totals\n"
    "  dot        print the graph in Graphviz's language (blocks as clusters)\n"
    "  run        run the forward pass (eval mode) on the samples of a file:\n"
    "             --weights W.safetensors --input I.safetensors\n"
    "             --output O.safetensors\n"
    "  train      train the model on an IDX data set of images and class\n"
    "             labels (default: Debian's Fashion-MNIST), with a progress\n"
    "             bar, test accuracy after every epoch, a CSV log and its "
    "plot,\n"
    "             and a checkpoint after every epoch\n"
    "  grad       one training-mode forward and backward pass on the samples\n"
    "             of a file (inputs and labels): writes the loss and the\n"
    "             gradient of every trainable parameter, by name, to --output\n"
    "  run, train and grad compile the model in-process through LLVM (the\n"
    "  JIT) when this cnnc was built with it, else (or with --cc) with the\n"
    "  system C compiler, caching the program in ~/.cache/cnnc\n"
    "\n"
    "options:\n"
    "  -o FILE.c          (compile) where to write the C; the header goes\n"
    "                     beside it with the extension .h\n"
    "  --infer-only       (compile) leave the training code out\n"
    "  --batch N          samples per call of the generated code (default:\n"
    "                     the model's train { batch }, else 1)\n"
    "  --weights FILE     (run, grad) the parameters and buffers, by name\n"
    "  --input FILE       (run, grad) one tensor per model input, [N, ...];\n"
    "                     for grad also the labels (int64) or targets\n"
    "  --output FILE      (run, grad) where the results are written\n"
    "  --jit              (run, grad, train) compile in-process through\n"
    "                     LLVM: the default when this cnnc was built with it\n"
    "  --cc CMD           (run, grad, train) compile with this C compiler\n"
    "                     instead of the JIT, used as given with its flags\n"
    "                     (default: cc -O3 -march=native -fopenmp)\n"
    "  --emit-llvm FILE.ll  (compile, run) also write the LLVM IR the JIT\n"
    "                     runs, optimized for this machine\n"
    "  --data DIR         (train) the IDX files: train-images-idx3-ubyte,\n"
    "                     train-labels-idx1-ubyte, t10k-... (gzip or plain)\n"
    "  --epochs E, --lr X, --seed S\n"
    "                     (train) override the model's train section\n"
    "  --save FILE        (train) the checkpoint, written after every epoch\n"
    "                     (default: MODEL.safetensors); it loads as weights\n"
    "  --resume FILE      (train) continue from a checkpoint\n"
    "  --except NAME      (train) with --weights: keep these parameters\n"
    "                     (a label, e.g. the new head) at their initial "
    "values\n"
    "  --log FILE.csv     (train) the log (default: MODEL.csv); with gnuplot\n"
    "                     installed, its plot goes beside it as FILE.png\n"
    "  --quiet            (train) no progress display\n"
    "  --threads T        (run, grad, train) run the big loop nests (large\n"
    "                     convolutions and dense layers) on T threads\n"
    "                     (default: one per processor): the JIT's own, or\n"
    "                     OpenMP's on the C path (OMP_NUM_THREADS); the\n"
    "                     results are the same on any number of threads\n"
    "  --max-memory SIZE  the most the generated state may take, e.g. 16G\n"
    "                     or 512M (default: 16G); beyond it is an error\n"
    "  --model NAME       the model to use when the file defines several\n"
    "  --params           (check) list every parameter and buffer instead:\n"
    "                     name, dimensions, param or buffer; one per line\n"
    "  --dump-after=PASS  print the IR after PASS in its text form instead of\n"
    "                     the command's output; PASS is elaborate (the "
    "graph),\n"
    "                     lower (the loop nests) or plan (with memory "
    "offsets)\n"
    "  --target T         size the tiles for T's vector registers: avx2 (16\n"
    "                     of 8 floats), avx512 (32 of 16) or native (this\n"
    "                     processor's; default: avx2). The C is portable\n"
    "                     either way; build it with gcc and the -march= of\n"
    "                     a processor that has T (or -march=native): LLVM\n"
    "                     (clang, the JIT) runs avx512's tiles slowly\n"
    "  -fno-tile          build every loop nest plain, one output element at\n"
    "                     a time, instead of tiling convolutions and dense\n"
    "                     layers (each kernel's schedule shows in\n"
    "                     --dump-after=lower); the same results to float\n"
    "                     rounding, slower\n"
    "  -fno-fuse          give every layer a kernel of its own instead of\n"
    "                     fusing a convolution or dense layer with the\n"
    "                     batch norm, residual add and activation after it\n"
    "                     (kernels show as conv+bn+relu in\n"
    "                     --dump-after=lower); the same results, slower\n"
    "  -fno-fma           keep every multiply and add apart instead of\n"
    "                     fusing a product into the sum after it (fma() in\n"
    "                     --dump-after=lower, madd() in the C); the same\n"
    "                     results to float rounding, slower\n"
    "  -Werror            treat warnings as errors\n"
    "  -v, --verbose      say what run compiles and where\n"
    "  -h, --help         show this help\n"
    "  --version          show the version\n"
    "\n"
    "Exit status: 0 ok, 1 errors in the model or its files, 2 bad usage,\n"
    "3 internal error. The language is described in docs/language.md.\n";

static void out_of_memory(void) {
  fputs("cnnc: out of memory\n", stderr);
  exit(1);
}

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "cnnc: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\nTry 'cnnc --help' for more information.\n");
  va_end(ap);
  return 2;
}

typedef struct Options {
  const char *command, *path, *model, *dump, *out;
  const char *weights, *input, *output, *cc, *emit_llvm;
  const char *data, *save, *resume, *except, *log, *epochs, *lr, *seed;
  int quiet;
  long long batch;
  double max_memory; /* bytes the generated state may take */
  int params, werror, verbose, infer_only, jit;
  int no_tile;         /* -fno-tile */
  int no_fuse;         /* -fno-fuse */
  int no_fma;          /* -fno-fma */
  const char *target;  /* --target */
  const char *threads; /* --threads */
} Options;

/* Whether the tiles are sized for AVX-512 (cnnc --target). AVX2's unless
 * asked, for every command: the C written by compile is for whatever
 * processor it is built for (the same model gives the same file on every
 * machine), and LLVM 14 runs AVX-512's wide tiles slowly (clang-14 took
 * 610-670 ms for ResNet-18 on one core with them, against 76-79 with
 * AVX2's, where gcc took 41-53; the JIT was slower with them too), while
 * the C path and the JIT must agree to the bit. */
static int wide_target(const Options *o) {
  const char *t = o->target ? o->target : "avx2";
  if (!strcmp(t, "native")) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
  }
  return !strcmp(t, "avx512");
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Options that take a value: "--name VALUE" or "--name=VALUE". */
static const char *value_of(int argc, char **argv, int *i, const char *name) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n) != 0)
    return NULL;
  if (argv[*i][n] == '=')
    return argv[*i] + n + 1;
  if (argv[*i][n] != 0)
    return NULL;
  if (*i + 1 == argc)
    return "";
  return argv[++*i];
}

static int parse_args(int argc, char **argv, Options *o) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage, stdout);
      exit(0);
    } else if (strcmp(a, "--version") == 0) {
      printf("cnnc %s\n", CNNC_VERSION);
      exit(0);
    } else if ((v = value_of(argc, argv, &i, "--model"))) {
      o->model = v;
    } else if ((v = value_of(argc, argv, &i, "-o"))) {
      o->out = v;
    } else if ((v = value_of(argc, argv, &i, "--weights"))) {
      o->weights = v;
    } else if ((v = value_of(argc, argv, &i, "--input"))) {
      o->input = v;
    } else if ((v = value_of(argc, argv, &i, "--output"))) {
      o->output = v;
    } else if ((v = value_of(argc, argv, &i, "--cc"))) {
      o->cc = v;
    } else if ((v = value_of(argc, argv, &i, "--emit-llvm"))) {
      o->emit_llvm = v;
    } else if (strcmp(a, "--jit") == 0) {
      o->jit = 1;
    } else if ((v = value_of(argc, argv, &i, "--max-memory"))) {
      char *end;
      double g = strtod(v, &end);
      if (!*v || !(g > 0) || (*end && strcmp(end, "G") && strcmp(end, "M")))
        return usage_error(
            "--max-memory needs a size like 16G or 512M, not '%s'", v);
      o->max_memory = g * (*end == 'M' ? 1 << 20 : 1 << 30);
    } else if ((v = value_of(argc, argv, &i, "--data"))) {
      o->data = v;
    } else if ((v = value_of(argc, argv, &i, "--save"))) {
      o->save = v;
    } else if ((v = value_of(argc, argv, &i, "--resume"))) {
      o->resume = v;
    } else if ((v = value_of(argc, argv, &i, "--except"))) {
      o->except = v;
    } else if ((v = value_of(argc, argv, &i, "--log"))) {
      o->log = v;
    } else if ((v = value_of(argc, argv, &i, "--epochs"))) {
      char *end;
      long e = strtol(v, &end, 10);
      if (!*v || *end || e < 1 || e > 100000)
        return usage_error("--epochs needs a number from 1 to 100000, not '%s'",
                           v);
      o->epochs = v;
    } else if ((v = value_of(argc, argv, &i, "--lr"))) {
      char *end;
      double lr = strtod(v, &end);
      if (!*v || *end || !(lr > 0))
        return usage_error("--lr needs a positive number, not '%s'", v);
      o->lr = v;
    } else if ((v = value_of(argc, argv, &i, "--seed"))) {
      char *end;
      long long sd = strtoll(v, &end, 10);
      if (!*v || *end || sd < 0)
        return usage_error("--seed needs a number of at least 0, not '%s'", v);
      o->seed = v;
    } else if ((v = value_of(argc, argv, &i, "--threads"))) {
      char *end;
      long th = strtol(v, &end, 10);
      if (!*v || *end || th < 1 || th > 64)
        return usage_error("--threads needs a number from 1 to 64, not '%s'",
                           v);
      o->threads = v;
    } else if ((v = value_of(argc, argv, &i, "--target"))) {
      if (strcmp(v, "avx2") && strcmp(v, "avx512") && strcmp(v, "native"))
        return usage_error("--target needs avx2, avx512 or native, not '%s'",
                           v);
      o->target = v;
    } else if (strcmp(a, "--quiet") == 0) {
      o->quiet = 1;
    } else if ((v = value_of(argc, argv, &i, "--batch"))) {
      char *end;
      errno = 0;
      o->batch = strtoll(v, &end, 10);
      if (!*v || *end || errno || o->batch < 1 || o->batch > 1000000)
        return usage_error("--batch needs a number from 1 to 1000000, not '%s'",
                           v);
    } else if (strncmp(a, "--dump-after=", 13) == 0) {
      o->dump = a + 13;
      if (strcmp(o->dump, "elaborate") && strcmp(o->dump, "lower") &&
          strcmp(o->dump, "plan"))
        return usage_error("--dump-after: unknown pass '%s' (passes: "
                           "elaborate, lower, plan)",
                           o->dump);
    } else if (strcmp(a, "--infer-only") == 0) {
      o->infer_only = 1;
    } else if (strcmp(a, "--params") == 0) {
      o->params = 1;
    } else if (strcmp(a, "-fno-tile") == 0) {
      o->no_tile = 1;
    } else if (strcmp(a, "-fno-fuse") == 0) {
      o->no_fuse = 1;
    } else if (strcmp(a, "-fno-fma") == 0) {
      o->no_fma = 1;
    } else if (strcmp(a, "-Werror") == 0) {
      o->werror = 1;
    } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
      o->verbose = 1;
    } else if (a[0] == '-' && a[1]) {
      return usage_error("unknown option '%s'", a);
    } else if (!o->command && !o->path && ends_with(a, ".cnn")) {
      o->command = "compile";
      o->path = a;
    } else if (!o->command) {
      o->command = a;
    } else if (!o->path) {
      o->path = a;
    } else {
      return usage_error("unexpected argument '%s'", a);
    }
  }
  if (!o->command) {
    fputs(usage, stderr);
    return 2;
  }
  const char *c = o->command;
  if (strcmp(c, "check") && strcmp(c, "dot") && strcmp(c, "run") &&
      strcmp(c, "grad") && strcmp(c, "train") && strcmp(c, "compile"))
    return usage_error("unknown command '%s' (commands: check, dot, run, "
                       "grad, train; or give a .cnn file to compile)",
                       c);
  if (!o->path)
    return usage_error("%s needs a model file", c);
  if (o->params && strcmp(c, "check"))
    return usage_error("--params goes with check, not %s", c);
  if (!strcmp(c, "compile") && !o->out && !o->dump && !o->emit_llvm)
    return usage_error("say where to write the C code with -o FILE.c");
  if (o->jit && o->cc)
    return usage_error("--jit and --cc choose different compilers; give one");
  if (o->jit && strcmp(c, "run") && strcmp(c, "grad") && strcmp(c, "train"))
    return usage_error("--jit goes with run, grad or train, not %s", c);
  if (o->emit_llvm && strcmp(c, "run") && strcmp(c, "compile"))
    return usage_error("--emit-llvm goes with run or compile, not %s", c);
  if (o->emit_llvm && !*o->emit_llvm)
    return usage_error("--emit-llvm needs a file name");
  if (o->out && (!ends_with(o->out, ".c") || strlen(o->out) < 3))
    return usage_error("-o needs a file name ending in .c, not '%s'", o->out);
  if (!strcmp(c, "train") && (o->input || o->output))
    return usage_error("train reads --data, not --input/--output");
  if ((!strcmp(c, "run") || !strcmp(c, "grad")) && !o->dump &&
      (!o->weights || !o->input || !o->output))
    return usage_error("%s needs --weights, --input and --output files", c);
  return -1;
}

/* Writes FILE.c and FILE.h; 0 on success. */
static int write_c(Diag *d, const Program *p, const Program *t,
                   const char *out) {
  size_t n = strlen(out);
  char *hpath = mem_alloc(n + 1);
  memcpy(hpath, out, n + 1);
  hpath[n - 1] = 'h';
  const char *slash = strrchr(hpath, '/');
  const char *hname = slash ? slash + 1 : hpath;
  FILE *c = fopen(out, "w"), *h = fopen(hpath, "w");
  int rc = 0;
  if (!c || !h) {
    diag_error(d, (Loc){0, 0, 0}, "cannot write %s: %s", !c ? out : hpath,
               strerror(errno));
    rc = 1;
  } else {
    emit_c(c, h, p, t, d, hname);
  }
  if ((c && fclose(c)) || (h && fclose(h))) {
    diag_error(d, (Loc){0, 0, 0}, "cannot write %s", out);
    rc = 1;
  }
  mem_free(hpath);
  return rc;
}

/* cnnc train reads images and class labels: the model must take one
 * image and end in cross_entropy over [K] logits, its one output. */
static int trainable_classifier(Diag *d, const Graph *g) {
  int images = 0;
  for (int i = 0; i < g->inputs.n; i++)
    images += g->inputs.v[i]->dtype == DT_F32;
  const Node *x = g->inputs.n ? g->inputs.v[0] : NULL;
  if (images == 1 && x && x->shape.rank == 3 && g->loss &&
      g->loss->op == OP_CROSS_ENTROPY && g->loss->in.v[0]->shape.rank == 1 &&
      g->outputs.n == 1 && g->outputs.v[0].node == g->loss->in.v[0])
    return 1;
  diag_error(d, g->loc,
             "cnnc train reads images and class labels: model '%s' needs one "
             "input [C, H, W], one output of class scores [K], and 'loss "
             "cross_entropy' of that output",
             g->name);
  return 0;
}

static const char default_data[] = "/usr/share/datasets/fashion-mnist";

/* Runs the training driver, then plots the log with gnuplot if there is
 * one: users would rather look at a curve than read a table. */
static int train_model(Diag *d, Arena *a, const Graph *g, const Program *p,
                       const Program *t, const Options *o, RunOptions *ro,
                       int jit) {
  const char *save =
      o->save ? o->save : arena_printf(a, "%s.safetensors", g->name);
  const char *log = o->log ? o->log : arena_printf(a, "%s.csv", g->name);
  char *argv[16];
  int n = 0;
  argv[n++] = NULL; /* the program's name */
  argv[n++] = arena_printf(a, "data=%s", o->data ? o->data : default_data);
  argv[n++] = arena_printf(a, "save=%s", save);
  argv[n++] = arena_printf(a, "log=%s", log);
  if (o->resume)
    argv[n++] = arena_printf(a, "resume=%s", o->resume);
  if (o->weights)
    argv[n++] = arena_printf(a, "weights=%s", o->weights);
  if (o->except)
    argv[n++] = arena_printf(a, "except=%s", o->except);
  if (o->epochs)
    argv[n++] = arena_printf(a, "epochs=%s", o->epochs);
  if (o->lr)
    argv[n++] = arena_printf(a, "lr=%s", o->lr);
  if (o->seed)
    argv[n++] = arena_printf(a, "seed=%s", o->seed);
  if (o->quiet)
    argv[n++] = "quiet=1";
  argv[n] = NULL;
  ro->train_argv = argv;
  int rc = jit ? jit_train(d, p, t, ro) : run_program(d, p, t, ro);
  if (rc == 0 && system("command -v gnuplot >/dev/null 2>&1") == 0) {
    size_t len = strlen(log);
    const char *png = len > 4 && !strcmp(log + len - 4, ".csv")
                          ? arena_printf(a, "%.*s.png", (int)(len - 4), log)
                          : arena_printf(a, "%s.png", log);
    const char *cmd = arena_printf(
        a,
        "gnuplot -e \"set datafile separator ','; set terminal png size "
        "800,500; "
        "set output '%s'; set title '%s'; set xlabel 'epoch'; set ylabel "
        "'accuracy'; set y2label 'loss'; set y2tics; set ytics nomirror; set "
        "key center right; plot '%s' using 1:3 with linespoints title 'train "
        "accuracy', '' using 1:4 with linespoints title 'test accuracy', '' "
        "using 1:2 axes x1y2 with linespoints title 'loss'\" 2>/dev/null",
        png, g->name, log);
    if (system(cmd) == 0)
      fprintf(stderr, "cnnc: log in %s, plot in %s, weights in %s\n", log, png,
              save);
  }
  return rc;
}

static int compile(Diag *d, Arena *arena, const Options *o, const char *self) {
  Sources *prog = load_program(d, arena, o->path);
  if (!prog || d->errors)
    return 1;
  Graph *g = elaborate(d, arena, prog, o->model);
  if (!g || d->errors)
    return 1;
  const char *c = o->command;
  if (o->dump && !strcmp(o->dump, "elaborate")) {
    graph_print(stdout, g);
    return 0;
  }
  if (!strcmp(c, "dot")) {
    dot_print(stdout, g);
    return 0;
  }
  if (!strcmp(c, "check")) {
    if (o->params) {
      check_print_params(stdout, g);
      return 0;
    }
    check_print_table(stdout, g, o->path);
    /* What the generated code will need: the planned arena, one sample. */
    Program *one = lower(d, arena, g, 1, 0);
    plan(one);
    printf("activation arena per sample: %.1f KB planned, against %.1f KB "
           "for every layer output apart\n",
           (double)one->arena_count * 4 / 1024,
           (double)one->activation_sum * 4 / 1024);
    return 0;
  }
  if (o->threads) { /* the JIT's pool, and OpenMP's in programs run */
    threads_set(atoi(o->threads));
    setenv("OMP_NUM_THREADS", o->threads, 1);
  }
  int64_t batch = o->batch ? o->batch : g->train.batch;
  int grad = !strcmp(c, "grad"), train = !strcmp(c, "train");
  if (train && !trainable_classifier(d, g))
    return 1;
  if ((grad || train) && !g->loss) {
    diag_error(d, g->loc,
               "model '%s' has no loss to differentiate; add one "
               "with 'loss cross_entropy(y)'",
               g->name);
    return 1;
  }
  unsigned passes =
      (o->no_tile ? 0u : LOWER_TILE) | (o->no_fuse ? 0u : LOWER_FUSE) |
      (o->no_fma ? 0u : LOWER_FMA) | (wide_target(o) ? LOWER_AVX512 : 0u);
  Program *p = lower_passes(d, arena, g, batch, 0, passes), *t = NULL;
  if (d->errors)
    return 1;
  /* The training step exists when the model has a loss; autodiff appends
   * the backward nodes after the forward pass is lowered. */
  if (g->loss && (grad || train || (!strcmp(c, "compile") && !o->infer_only))) {
    autodiff(d, g);
    t = lower_passes(d, arena, g, batch, 1, passes);
    if (d->errors)
      return 1;
  }
  const Program *shown = grad ? t : p;
  if (o->dump && !strcmp(o->dump, "lower")) {
    loop_print(stdout, shown);
    return 0;
  }
  plan(p);
  if (t)
    plan(t);
  /* The state struct: parameters, buffers, the larger arena, the packed
   * weights, and with training the gradients and the optimizer's moments. */
  double arena_n =
      (double)(t && t->arena_count > p->arena_count ? t->arena_count
                                                    : p->arena_count);
  double bytes =
      4.0 * ((double)p->f32_count + arena_n + (double)p->packed_count) +
      8.0 * (double)p->i64_count;
  if (t)
    bytes += 4.0 * (double)p->f32_count * (g->train.opt == OPT_ADAM ? 3 : 2);
  double limit = o->max_memory > 0 ? o->max_memory : 16.0 * (1 << 30);
  if (bytes > limit) {
    diag_error(
        d, g->loc,
        "model '%s' needs %.1f GB of memory at batch %lld, more than the "
        "limit of %.1f GB; lower the batch (--batch) or raise the limit "
        "(--max-memory)",
        g->name, bytes / (1 << 30), (long long)batch, limit / (1 << 30));
    return 1;
  }
  if (o->dump) {
    loop_print(stdout, shown);
    return 0;
  }
  /* the forward pass as the JIT runs it */
  if (o->emit_llvm && jit_write_ll(d, p, o->emit_llvm))
    return 1;
  if (!strcmp(c, "compile"))
    return o->out ? write_c(d, p, t, o->out) : 0;
  RunOptions ro = {o->weights, o->input,   o->output, o->cc,
                   self,       o->verbose, NULL};
  /* the JIT unless told --cc, or built without LLVM */
  int jit = o->jit || (!o->cc && jit_available());
  if (train)
    return train_model(d, arena, g, p, t, o, &ro, jit);
  if (jit)
    return grad ? jit_grad(d, t, &ro) : jit_run(d, p, &ro);
  return run_program(d, p, grad ? t : NULL, &ro);
}

int main(int argc, char **argv) {
  Options o = {0};
  int rc = parse_args(argc, argv, &o);
  if (rc >= 0)
    return rc;
  mem_set_oom_handler(out_of_memory);
  Arena *arena = arena_new();
  Diag d;
  diag_init(&d, arena, stderr);
  d.werror = o.werror;
  int status = compile(&d, arena, &o, argv[0]);
  diag_flush(&d);
  if (d.internal)
    status = 3;
  else if (d.errors)
    status = 1;
  fflush(stdout);
  arena_free(arena);
  return status;
}
