/* Memory: one allocation choke point and arenas freed at a boundary.
 * Everything the front end builds (AST, graph, strings) lives in an arena
 * owned by whoever runs the pipeline; nothing is freed piecemeal. */
#ifndef CNNC_MEM_H
#define CNNC_MEM_H

#include <stdarg.h>
#include <stddef.h>

typedef struct Arena Arena;

/* Called when the system is out of memory; must not return. The driver
 * installs one that reports and exits; the default aborts. */
void mem_set_oom_handler(void (*handler)(void));
void *mem_alloc(size_t n);
void *mem_realloc(void *p, size_t n);
/* Zeroed, at a 64-byte boundary (a cache line): the JIT's state areas,
 * whose tensors the planner places on lines (plan.c). */
void *mem_alloc_lines(size_t n);
void mem_free(void *p);

Arena *arena_new(void);
void arena_free(Arena *a);
void *arena_alloc(Arena *a, size_t n); /* zeroed, aligned for any type */
char *arena_strdup(Arena *a, const char *s);
char *arena_strndup(Arena *a, const char *s, size_t n);
char *arena_printf(Arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
char *arena_vprintf(Arena *a, const char *fmt, va_list ap);
size_t arena_bytes(const Arena *a);

/* Growable arrays whose storage lives in an arena. Declare the type once
 * with VEC_TYPE and push with vec_push. */
#define VEC_TYPE(Name, T)                                                      \
  typedef struct {                                                             \
    T *v;                                                                      \
    int n, cap;                                                                \
  } Name
void vec_grow_(Arena *a, void **v, int *cap, size_t elem);
#define vec_push(A, vec, x)                                                    \
  do {                                                                         \
    if ((vec).n == (vec).cap)                                                  \
      vec_grow_((A), (void **)&(vec).v, &(vec).cap, sizeof *(vec).v);          \
    (vec).v[(vec).n++] = (x);                                                  \
  } while (0)

/* A set of strings in an arena, hashed: unique names for models of
 * 100,000 layers in linear time. Zero-initialised, it is empty. */
typedef struct {
  const char **slot;
  size_t cap, n;
} NameSet;
int nameset_has(const NameSet *s, const char *name);
void nameset_add(Arena *a, NameSet *s, const char *name); /* kept, not copied */

#endif
