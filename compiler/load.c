/* Reads source files and resolves imports. An import names a file relative
 * to the importing file; each file is parsed once however often it is
 * imported, and an import that leads back to a file still being loaded is
 * a cycle. */
#include "load.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ops.h"

enum { MAX_SOURCE_BYTES = 16 << 20 };

typedef struct Loaded {
  const char *real; /* canonical path, for identity */
  int done;         /* 0 while its imports are being loaded: a cycle */
  Loc from;         /* the import that loaded it */
  AstFile *file;
} Loaded;
VEC_TYPE(LoadedVec, Loaded);

typedef struct Loader {
  Diag *d;
  Arena *a;
  Sources *p;
  LoadedVec files;
} Loader;

/* Reads a whole file into the arena; on failure returns NULL with errno. */
static char *read_file(Arena *a, const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 4096, n = 0;
  char *buf = mem_alloc(cap);
  for (;;) {
    if (n == cap) {
      if (cap >= MAX_SOURCE_BYTES) {
        fclose(f);
        mem_free(buf);
        errno = EFBIG;
        return NULL;
      }
      cap *= 2;
      buf = mem_realloc(buf, cap);
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0)
      break;
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    mem_free(buf);
    errno = EIO;
    return NULL;
  }
  char *text = arena_strndup(a, buf, n);
  mem_free(buf);
  *len = n;
  return text;
}

static void collect(Loader *L, AstFile *f, const char *dir);

static void add_named(Loader *L, AstList *list, Ast *item, const char *what) {
  for (int i = 0; i < L->p->blocks.n; i++)
    if (strcmp(L->p->blocks.v[i]->name, item->name) == 0) {
      diag_error(L->d, item->loc, "redefinition of '%s'", item->name);
      diag_note(L->d, L->p->blocks.v[i]->loc, "'%s' first defined here",
                item->name);
      return;
    }
  for (int i = 0; i < L->p->models.n; i++)
    if (strcmp(L->p->models.v[i]->name, item->name) == 0) {
      diag_error(L->d, item->loc, "redefinition of '%s'", item->name);
      diag_note(L->d, L->p->models.v[i]->loc, "'%s' first defined here",
                item->name);
      return;
    }
  if (op_lookup(item->name) != OP_NONE) {
    diag_error(L->d, item->loc, "%s '%s' has the name of a built-in operator",
               what, item->name);
    return;
  }
  vec_push(L->a, *list, item);
}

/* "a/b/../c" -> "a/c" and "./x" -> "x", for the paths users read. */
static char *normalize(Arena *a, const char *path) {
  char *out = arena_alloc(a, strlen(path) + 2);
  const char *seg[256];
  size_t len[256];
  int n = 0, up = 0, abs = path[0] == '/';
  const char *p = path;
  while (*p) {
    while (*p == '/')
      p++;
    const char *s = p;
    while (*p && *p != '/')
      p++;
    size_t l = (size_t)(p - s);
    if (l == 0 || (l == 1 && s[0] == '.'))
      continue;
    if (l == 2 && s[0] == '.' && s[1] == '.' && n > up) {
      n--;
      continue;
    }
    if (n == 256)
      return arena_strdup(a, path);
    if (l == 2 && s[0] == '.' && s[1] == '.')
      up++;
    seg[n] = s;
    len[n++] = l;
  }
  char *o = out;
  if (abs)
    *o++ = '/';
  for (int i = 0; i < n; i++) {
    if (i)
      *o++ = '/';
    memcpy(o, seg[i], len[i]);
    o += len[i];
  }
  *o = 0;
  return out;
}

static char *dir_of(Arena *a, const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    return arena_strdup(a, "");
  return arena_strndup(a, path, (size_t)(slash - path) + 1);
}

/* Loads one file (path as the user should see it) imported from `at`. */
static AstFile *load_one(Loader *L, const char *path, Loc at) {
  char realbuf[PATH_MAX];
  const char *real = realpath(path, realbuf) ? realbuf : path;
  for (int i = 0; i < L->files.n; i++) {
    Loaded *f = &L->files.v[i];
    if (strcmp(f->real, real) != 0)
      continue;
    if (f->done)
      return NULL;
    /* A cycle through the files still loading, from file i back to it:
     * reported at the import in file i that started it. */
    const Loaded *next = NULL;
    for (int j = i + 1; j < L->files.n && !next; j++)
      if (!L->files.v[j].done)
        next = &L->files.v[j];
    if (!next) {
      diag_error(L->d, at, "import cycle: '%s' imports itself", path);
      return NULL;
    }
    diag_error(L->d, next->from, "import cycle: '%s' leads back to '%s'",
               next->file ? next->file->path : "?", f->file->path);
    for (int j = (int)(next - L->files.v) + 1; j < L->files.n; j++)
      if (!L->files.v[j].done)
        diag_note(L->d, L->files.v[j].from, "which imports '%s'",
                  L->files.v[j].file ? L->files.v[j].file->path : "?");
    diag_note(L->d, at, "which imports '%s'", f->file->path);
    return NULL;
  }
  /* An import must be a regular file: opening a FIFO or a terminal
   * (/dev/stdin) would wait for input that may never come. */
  struct stat st;
  if (at.file && stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
    diag_error(L->d, at, "cannot import '%s': not a regular file", path);
    return NULL;
  }
  size_t len = 0;
  char *text = read_file(L->a, path, &len);
  if (!text) {
    if (at.file)
      diag_error(L->d, at, "cannot import '%s': %s", path, strerror(errno));
    else
      diag_error(L->d, at, "cannot read '%s': %s", path, strerror(errno));
    return NULL;
  }
  Loaded entry = {arena_strdup(L->a, real), 0, at, NULL};
  vec_push(L->a, L->files, entry);
  int slot = L->files.n - 1;
  int id = diag_add_source(L->d, arena_strdup(L->a, path), text, len);
  AstFile *f = parse_file(L->d, L->a, id);
  L->files.v[slot].file = f;
  collect(L, f, dir_of(L->a, path));
  L->files.v[slot].done = 1;
  return f;
}

static void collect(Loader *L, AstFile *f, const char *dir) {
  for (int i = 0; i < f->items.n; i++) {
    Ast *it = f->items.v[i];
    switch (it->kind) {
    case A_IMPORT: {
      Ast *s = it->a;
      if (s->list.n != 1 || s->list.v[0]->kind != A_STRPART) {
        diag_error(L->d, s->loc, "an import path cannot interpolate values");
        break;
      }
      const char *rel = s->list.v[0]->name;
      const char *path = normalize(
          L->a, rel[0] == '/' ? rel : arena_printf(L->a, "%s%s", dir, rel));
      load_one(L, path, s->loc);
      break;
    }
    case A_BLOCK: add_named(L, &L->p->blocks, it, "block"); break;
    case A_MODEL: add_named(L, &L->p->models, it, "model"); break;
    default:
      diag_internal(L->d, "unexpected top-level item %d", (int)it->kind);
      break;
    }
  }
}

Sources *load_program(Diag *d, Arena *a, const char *path) {
  Loader L = {d, a, arena_alloc(a, sizeof(Sources)), {0}};
  L.p->main = load_one(&L, path, (Loc){0, 0, 0});
  return L.p->main ? L.p : NULL;
}

Sources *load_program_text(Diag *d, Arena *a, const char *name,
                           const char *text) {
  Loader L = {d, a, arena_alloc(a, sizeof(Sources)), {0}};
  Loaded entry = {arena_strdup(a, name), 0, {0, 0, 0}, NULL};
  vec_push(a, L.files, entry);
  int id = diag_add_source(d, arena_strdup(a, name), arena_strdup(a, text),
                           strlen(text));
  L.p->main = parse_file(d, a, id);
  L.files.v[0].file = L.p->main;
  collect(&L, L.p->main, "");
  L.files.v[0].done = 1;
  return L.p;
}

const Ast *program_block(const Sources *p, const char *name) {
  for (int i = 0; i < p->blocks.n; i++)
    if (strcmp(p->blocks.v[i]->name, name) == 0)
      return p->blocks.v[i];
  return NULL;
}

const Ast *program_model(const Sources *p, const char *name) {
  for (int i = 0; i < p->models.n; i++)
    if (strcmp(p->models.v[i]->name, name) == 0)
      return p->models.v[i];
  return NULL;
}
