/* Diagnostic printing. Errors beyond max_errors are counted but not shown,
 * and their notes are dropped with them. */
#include "diag.h"

#include <stdarg.h>
#include <string.h>

void diag_init(Diag *d, Arena *a, FILE *out) {
  memset(d, 0, sizeof *d);
  d->arena = a;
  d->out = out;
  d->max_errors = 20;
  Source none = {"", "", 0};
  vec_push(a, d->srcs, none);
}

int diag_add_source(Diag *d, const char *path, const char *text, size_t len) {
  Source s = {path, text, len};
  vec_push(d->arena, d->srcs, s);
  return d->srcs.n - 1;
}

const char *diag_path(const Diag *d, Loc loc) {
  if (loc.file <= 0 || loc.file >= d->srcs.n)
    return "";
  return d->srcs.v[loc.file].path;
}

/* Prints the source line of loc and a caret under its column. Tabs in the
 * line are repeated in the caret line so the caret lands under the text. */
static void show_line(Diag *d, Loc loc) {
  if (loc.file <= 0 || loc.file >= d->srcs.n || loc.line <= 0)
    return;
  const Source *s = &d->srcs.v[loc.file];
  const char *p = s->text, *end = s->text + s->len;
  for (int line = 1; line < loc.line && p < end; p++)
    if (*p == '\n')
      line++;
  const char *eol = p;
  while (eol < end && *eol != '\n')
    eol++;
  int len = (int)(eol - p);
  if (len > 0 && p[len - 1] == '\r')
    len--;
  fprintf(d->out, " %4d | %.*s\n", loc.line, len, p);
  fprintf(d->out, "      | ");
  for (int i = 0; i < loc.col - 1 && i < len; i++)
    fputc(p[i] == '\t' ? '\t' : ' ', d->out);
  fprintf(d->out, "^\n");
}

static void emit(Diag *d, Loc loc, const char *kind, const char *suffix,
                 const char *fmt, va_list ap) {
  if (loc.file > 0 && loc.file < d->srcs.n)
    fprintf(d->out, "%s:%d:%d: ", d->srcs.v[loc.file].path, loc.line, loc.col);
  else
    fprintf(d->out, "cnnc: ");
  fprintf(d->out, "%s: ", kind);
  vfprintf(d->out, fmt, ap);
  fprintf(d->out, "%s\n", suffix);
  show_line(d, loc);
}

typedef struct Later {
  Loc loc;
  const char *text;
  struct Later *next;
} Later;

void diag_later(Diag *d, Loc loc, const char *fmt, ...) {
  if (d->muted)
    return;
  va_list ap;
  va_start(ap, fmt);
  Later *l = arena_alloc(d->arena, sizeof *l);
  l->loc = loc;
  l->text = arena_vprintf(d->arena, fmt, ap);
  va_end(ap);
  Later **tail = &d->later;
  while (*tail)
    tail = &(*tail)->next;
  *tail = l;
}

void diag_flush(Diag *d) {
  Later *l = d->later;
  d->later = NULL;
  for (; l; l = l->next)
    diag_note(d, l->loc, "%s", l->text);
  fflush(d->out);
}

static void add_context(Diag *d) {
  if (d->context && !d->muted) {
    void (*context)(void *, Diag *) = d->context;
    d->context = NULL; /* its notes must not add context of their own */
    context(d->context_data, d);
    d->context = context;
  }
}

static int over_limit(Diag *d) {
  return d->max_errors > 0 && d->errors > d->max_errors;
}

static void count_error(Diag *d) {
  d->errors++;
  d->muted = over_limit(d);
  if (d->max_errors > 0 && d->errors == d->max_errors + 1)
    fprintf(d->out, "cnnc: too many errors; stopping after %d\n",
            d->max_errors);
}

void diag_error(Diag *d, Loc loc, const char *fmt, ...) {
  diag_flush(d);
  count_error(d);
  if (d->muted)
    return;
  va_list ap;
  va_start(ap, fmt);
  emit(d, loc, "error", "", fmt, ap);
  va_end(ap);
  add_context(d);
}

void diag_warning(Diag *d, Loc loc, const char *fmt, ...) {
  diag_flush(d);
  va_list ap;
  va_start(ap, fmt);
  if (d->werror) {
    count_error(d);
    if (!d->muted)
      emit(d, loc, "error", " [-Werror]", fmt, ap);
  } else {
    d->warnings++;
    d->muted = 0;
    emit(d, loc, "warning", "", fmt, ap);
  }
  va_end(ap);
  add_context(d);
}

void diag_note(Diag *d, Loc loc, const char *fmt, ...) {
  if (d->muted)
    return;
  va_list ap;
  va_start(ap, fmt);
  emit(d, loc, "note", "", fmt, ap);
  va_end(ap);
}

void diag_internal_(Diag *d, const char *file, int line, const char *fmt, ...) {
  d->errors++;
  d->internal = 1;
  va_list ap;
  va_start(ap, fmt);
  fprintf(d->out, "cnnc: internal error at %s:%d: ", file, line);
  vfprintf(d->out, fmt, ap);
  fprintf(d->out, "\n");
  va_end(ap);
}

char *diag_dims(Arena *a, const long long *dims, int n) {
  char buf[256];
  size_t k = 0;
  buf[k++] = '[';
  for (int i = 0; i < n && k < sizeof buf - 32; i++)
    k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%lld", i ? ", " : "",
                          dims[i]);
  buf[k++] = ']';
  buf[k] = 0;
  return arena_strdup(a, buf);
}
