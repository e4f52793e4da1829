/* Diagnostics in GCC's format: "file:line:col: error: message", the source
 * line and a caret, then "note:" lines for related places. The Diag also
 * owns the text of every source file, so any phase can quote it. */
#ifndef CNNC_DIAG_H
#define CNNC_DIAG_H

#include <stdio.h>

#include "mem.h"

/* A place in a source file; file 0 means "no place" (command line, ...). */
typedef struct Loc {
  int file;
  int line, col;
} Loc;

typedef struct Source {
  const char *path;
  const char *text;
  size_t len;
} Source;

VEC_TYPE(SourceVec, Source);

typedef struct Diag {
  Arena *arena;
  FILE *out;
  SourceVec srcs; /* srcs.v[0] is the empty "no file" */
  int errors, warnings;
  int werror;     /* warnings count as errors */
  int max_errors; /* stop printing after this many (0: no limit) */
  int internal;   /* an internal compiler error happened */
  int muted;      /* the last error was not printed: drop its notes too */
  /* Called after each printed error or warning to add notes about where
   * it happened (the block calls that led there), with diag_later: they
   * are printed after the message's own notes. */
  void (*context)(void *data, struct Diag *d);
  void *context_data;
  struct Later *later; /* notes waiting for the message to end */
} Diag;

void diag_init(Diag *d, Arena *a, FILE *out);
int diag_add_source(Diag *d, const char *path, const char *text, size_t len);
const char *diag_path(const Diag *d, Loc loc);

void diag_error(Diag *d, Loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void diag_warning(Diag *d, Loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void diag_note(Diag *d, Loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A note printed when the current message ends: before the next error or
 * warning, or at diag_flush. */
void diag_later(Diag *d, Loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void diag_flush(Diag *d);
/* A bug in cnnc, never the user's fault: reported with cnnc's own file. */
void diag_internal_(Diag *d, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define diag_internal(d, ...)                                                  \
  diag_internal_((d), __FILE__, __LINE__, __VA_ARGS__)

/* Formats a shape-like list of integers as "[a, b, c]" in the arena. */
char *diag_dims(Arena *a, const long long *dims, int n);

#endif
