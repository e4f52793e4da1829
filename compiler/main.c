/* The cnnc driver: parses the command line and runs the pipeline.
 *
 *   load (lexer, parser, imports) -> elaborate (with shape inference)
 *   -> check table | dot
 *
 * Exit status: 0 success, 1 errors in the model or its files, 2 a bad
 * command line, 3 an internal compiler error. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "diag.h"
#include "dot.h"
#include "elaborate.h"
#include "load.h"

#ifndef CNNC_VERSION
#define CNNC_VERSION "0.0.0"
#endif

static const char usage[] =
    "usage: cnnc <command> [options] MODEL.cnn\n"
    "\n"
    "commands:\n"
    "  check      parse the model, build its graph and infer every shape;\n"
    "             print one row per layer (output shape, parameters, MACs,\n"
    "             receptive field) and the totals\n"
    "  dot        print the graph in Graphviz's language (blocks as clusters)\n"
    "\n"
    "options:\n"
    "  --model NAME       the model to use when the file defines several\n"
    "  --params           (check) list every parameter and buffer instead:\n"
    "                     name, dimensions, param or buffer; one per line\n"
    "  --dump-after=PASS  print the IR after PASS (elaborate: the graph) in\n"
    "                     its text form instead of the command's output\n"
    "  -Werror            treat warnings as errors\n"
    "  -h, --help         show this help\n"
    "  --version          show the version\n"
    "\n"
    "Exit status: 0 ok, 1 errors in the model, 2 bad usage, 3 internal error.\n"
    "The language is described in docs/language.md.\n";

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

int main(int argc, char **argv) {
  const char *command = NULL, *path = NULL, *model = NULL, *dump = NULL;
  int params = 0, werror = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    } else if (strcmp(a, "--version") == 0) {
      printf("cnnc %s\n", CNNC_VERSION);
      return 0;
    } else if (strcmp(a, "--model") == 0) {
      if (++i == argc)
        return usage_error("%s needs a model name", a);
      model = argv[i];
    } else if (strncmp(a, "--dump-after=", 13) == 0) {
      dump = a + 13;
      if (strcmp(dump, "elaborate") != 0)
        return usage_error("--dump-after: unknown pass '%s' (passes: "
                           "elaborate)",
                           dump);
    } else if (strcmp(a, "--params") == 0) {
      params = 1;
    } else if (strcmp(a, "-Werror") == 0) {
      werror = 1;
    } else if (a[0] == '-' && a[1]) {
      return usage_error("unknown option '%s'", a);
    } else if (!command) {
      command = a;
    } else if (!path) {
      path = a;
    } else {
      return usage_error("unexpected argument '%s'", a);
    }
  }
  if (!command) {
    fputs(usage, stderr);
    return 2;
  }
  if (strcmp(command, "check") != 0 && strcmp(command, "dot") != 0)
    return usage_error("unknown command '%s' (commands: check, dot)", command);
  if (!path)
    return usage_error("%s needs a model file", command);
  if (params && strcmp(command, "check") != 0)
    return usage_error("--params goes with check, not %s", command);

  mem_set_oom_handler(out_of_memory);
  Arena *arena = arena_new();
  Diag d;
  diag_init(&d, arena, stderr);
  d.werror = werror;
  int status = 1;
  Program *p = load_program(&d, arena, path);
  if (p && d.errors == 0) {
    Graph *g = elaborate(&d, arena, p, model);
    if (g && d.errors == 0) {
      if (dump)
        graph_print(stdout, g);
      else if (strcmp(command, "dot") == 0)
        dot_print(stdout, g);
      else if (params)
        check_print_params(stdout, g);
      else
        check_print_table(stdout, g, path);
      status = 0;
    }
  }
  diag_flush(&d);
  if (d.internal)
    status = 3;
  else if (d.errors)
    status = 1;
  fflush(stdout);
  arena_free(arena);
  return status;
}
