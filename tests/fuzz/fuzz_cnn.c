/* libFuzzer harness for the .cnn front end: the input is a source file,
 * run through what `cnnc check` runs — load (lexer, parser), elaborate
 * (blocks, loops, shapes), the check table and dot — then what
 * `cnnc MODEL -o FILE.c` runs before printing: lowering of the forward
 * pass and, with a loss, autodiff and lowering of the training step, and
 * memory planning, at the model's batch.
 *
 * Findings: any crash or sanitizer report, an internal compiler error
 * (a bug in cnnc is never the input's fault), a run over libFuzzer's
 * -timeout (a hang) or over its memory limits (an absurd model that cnnc
 * should have refused).
 *
 * The input is written to a file and loaded the way the command line
 * loads it (NUL bytes included), in the current directory, which
 * tests/fuzz/run.sh makes a scratch directory; imports resolve there.
 * Inputs whose imports could name a file outside it (or /dev/stdin) are
 * skipped. */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autodiff.h"
#include "check.h"
#include "dot.h"
#include "elaborate.h"
#include "load.h"
#include "lower.h"
#include "plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 1 if an import string could leave the scratch directory: an absolute
 * path, "..", or an escape (which could spell either). */
static int escapes(const char *s) {
  for (const char *p = strstr(s, "import"); p; p = strstr(p + 1, "import")) {
    const char *q = p + 6;
    while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\f' || *q == '\v')
      q++;
    if (*q != '"')
      continue;
    if (q[1] == '/')
      return 1;
    for (q++; *q && *q != '"' && *q != '\n'; q++)
      if (*q == '\\' || (q[0] == '.' && q[1] == '.'))
        return 1;
  }
  return 0;
}

static FILE *null_out(void) {
  static FILE *f;
  if (!f && !(f = fopen("/dev/null", "w")))
    abort();
  return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char path[64];
  if (!path[0])
    snprintf(path, sizeof path, "fuzz-%d.cnn", (int)getpid());
  /* The filter reads a C string; a NUL in the input ends what it sees,
   * so an import after a NUL is treated as escaping. */
  char *src = malloc(size + 1);
  if (!src)
    return 0;
  memcpy(src, data, size);
  src[size] = 0;
  int esc = escapes(src) ||
            (memchr(data, 0, size) && memmem(data, size, "import", 6));
  free(src);
  if (esc)
    return -1; /* not added to the corpus */
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
    abort();
  Arena *a = arena_new();
  Diag d;
  diag_init(&d, a, null_out());
  d.max_errors = 0;
  Sources *p = load_program(&d, a, path);
  Graph *g = NULL;
  if (p && d.errors == 0)
    g = elaborate(&d, a, p, NULL);
  if (g && d.errors == 0) {
    Totals t = check_totals(g);
    (void)t;
    check_print_table(null_out(), g, path);
    check_print_params(null_out(), g);
    dot_print(null_out(), g);
    /* At the model's batch, as `cnnc MODEL -o FILE.c` lowers it: the
     * forward pass, then with a loss the backward pass autodiff adds. */
    Program *prog = lower(&d, a, g, g->train.batch, 0), *train = NULL;
    if (prog && d.errors == 0 && g->loss) {
      autodiff(&d, g);
      if (d.errors == 0)
        train = lower(&d, a, g, g->train.batch, 1);
    }
    if (prog && d.errors == 0) {
      plan(prog);
      if (train)
        plan(train);
    }
  }
  diag_flush(&d);
  if (d.internal) {
    fprintf(stderr, "fuzz_cnn: internal compiler error on this input\n");
    abort();
  }
  arena_free(a);
  return 0;
}
