/* The allocation choke point and a bump arena. Out of memory is reported
 * in one place; callers never check for NULL. */
#include "mem.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void default_oom(void) { abort(); }

/* The handler is configuration set once by the host before any work, not
 * state that changes while compiling. */
static void (*oom_handler)(void) = default_oom;

void mem_set_oom_handler(void (*handler)(void)) {
  oom_handler = handler ? handler : default_oom;
}

void *mem_alloc(size_t n) {
  void *p = calloc(1, n ? n : 1);
  if (!p)
    oom_handler();
  return p;
}

void *mem_alloc_lines(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n ? n : 1))
    oom_handler();
  memset(p, 0, n);
  return p;
}

void *mem_realloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q)
    oom_handler();
  return q;
}

void mem_free(void *p) { free(p); }

typedef struct Chunk {
  struct Chunk *next;
  size_t size, used;
  max_align_t data[];
} Chunk;

struct Arena {
  Chunk *head;
  size_t total;
};

Arena *arena_new(void) { return mem_alloc(sizeof(Arena)); }

void arena_free(Arena *a) {
  if (!a)
    return;
  for (Chunk *c = a->head, *next; c; c = next) {
    next = c->next;
    mem_free(c);
  }
  mem_free(a);
}

void *arena_alloc(Arena *a, size_t n) {
  const size_t align = sizeof(max_align_t);
  n = (n + align - 1) / align * align;
  if (!a->head || a->head->size - a->head->used < n) {
    size_t size = n > 64 * 1024 ? n : 64 * 1024;
    Chunk *c = mem_alloc(sizeof(Chunk) + size);
    c->size = size;
    c->next = a->head;
    a->head = c;
    a->total += size;
  }
  void *p = (char *)a->head->data + a->head->used;
  a->head->used += n;
  memset(p, 0, n);
  return p;
}

char *arena_strndup(Arena *a, const char *s, size_t n) {
  char *p = arena_alloc(a, n + 1);
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

char *arena_strdup(Arena *a, const char *s) {
  return arena_strndup(a, s, strlen(s));
}

char *arena_vprintf(Arena *a, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  char *p = arena_alloc(a, (size_t)(n < 0 ? 0 : n) + 1);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  return p;
}

char *arena_printf(Arena *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *p = arena_vprintf(a, fmt, ap);
  va_end(ap);
  return p;
}

size_t arena_bytes(const Arena *a) { return a->total; }

void vec_grow_(Arena *a, void **v, int *cap, size_t elem) {
  int ncap = *cap ? *cap * 2 : 8;
  void *nv = arena_alloc(a, (size_t)ncap * elem);
  if (*v)
    memcpy(nv, *v, (size_t)*cap * elem);
  *v = nv;
  *cap = ncap;
}

static size_t name_hash(const char *s) {
  uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 0x100000001b3u;
  return (size_t)h;
}

int nameset_has(const NameSet *s, const char *name) {
  if (!s->cap)
    return 0;
  for (size_t i = name_hash(name) & (s->cap - 1); s->slot[i];
       i = (i + 1) & (s->cap - 1))
    if (strcmp(s->slot[i], name) == 0)
      return 1;
  return 0;
}

static void slot_put(const char **slot, size_t cap, const char *name) {
  size_t i = name_hash(name) & (cap - 1);
  while (slot[i])
    i = (i + 1) & (cap - 1);
  slot[i] = name;
}

void nameset_add(Arena *a, NameSet *s, const char *name) {
  if (2 * (s->n + 1) > s->cap) { /* at most half full: short probes */
    size_t cap = s->cap ? 2 * s->cap : 64;
    const char **slot = arena_alloc(a, sizeof *slot * cap);
    for (size_t i = 0; i < s->cap; i++)
      if (s->slot[i])
        slot_put(slot, cap, s->slot[i]);
    s->slot = slot;
    s->cap = cap;
  }
  slot_put(s->slot, s->cap, name);
  s->n++;
}
