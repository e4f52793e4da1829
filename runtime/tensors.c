/* Tensors in memory: the dtype table, named tensor sets with their string
 * metadata, and reading a whole file. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cnnc_runtime.h"

void *rt_state_alloc(size_t size) {
  void *p = NULL;
  if (posix_memalign(&p, 64, size ? size : 1))
    return NULL;
  memset(p, 0, size);
  return p;
}

static const struct {
  const char *name;
  size_t size;
} dtypes[] = {
    [RT_F32] = {"F32", 4},   [RT_F64] = {"F64", 8},   [RT_I64] = {"I64", 8},
    [RT_I32] = {"I32", 4},   [RT_I16] = {"I16", 2},   [RT_I8] = {"I8", 1},
    [RT_U8] = {"U8", 1},     [RT_BOOL] = {"BOOL", 1}, [RT_F16] = {"F16", 2},
    [RT_BF16] = {"BF16", 2},
};

enum { NDTYPES = sizeof dtypes / sizeof dtypes[0] };

static int valid_dtype(rt_dtype t) { return (unsigned)t < NDTYPES; }

size_t rt_dtype_size(rt_dtype t) { return valid_dtype(t) ? dtypes[t].size : 0; }

const char *rt_dtype_name(rt_dtype t) {
  return valid_dtype(t) ? dtypes[t].name : "?";
}

int rt_dtype_parse(const char *name, rt_dtype *out) {
  for (int i = 0; i < NDTYPES; i++)
    if (strcmp(dtypes[i].name, name) == 0) {
      *out = (rt_dtype)i;
      return 0;
    }
  return -1;
}

int64_t rt_tensor_numel(const rt_tensor *x) {
  int64_t n = 1;
  for (int i = 0; i < x->ndim; i++)
    n *= x->shape[i];
  return n;
}

const char *rt_printable(const char *name, char *buf, size_t n) {
  size_t k = 0;
  for (; n && name[k] && k < n - 1; k++)
    buf[k] = (unsigned char)name[k] < 0x20 || name[k] == 0x7f ? '?' : name[k];
  if (n)
    buf[k] = '\0';
  return buf;
}

const rt_tensor *rt_tensors_find(const rt_tensors *t, const char *name) {
  for (int i = 0; i < t->n; i++)
    if (strcmp(t->v[i].name, name) == 0)
      return &t->v[i];
  return NULL;
}

int rt_tensors_add(rt_tensors *t, const char *name, rt_dtype dtype, int ndim,
                   const int64_t *shape, const void *data) {
  if (!valid_dtype(dtype) || ndim < 0 || ndim > RT_MAX_DIMS ||
      strcmp(name, "__metadata__") == 0 || rt_tensors_find(t, name))
    return -1;
  size_t nbytes = dtypes[dtype].size;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return -1;
    if (shape[i] && nbytes > SIZE_MAX / (uint64_t)shape[i])
      return -1;
    nbytes *= (size_t)shape[i];
  }
  if (t->n == t->cap) {
    int cap = t->cap ? 2 * t->cap : 16;
    rt_tensor *v = realloc(t->v, (size_t)cap * sizeof *v);
    if (!v)
      return -1;
    t->v = v;
    t->cap = cap;
  }
  rt_tensor *x = &t->v[t->n];
  memset(x, 0, sizeof *x);
  x->name = strdup(name);
  x->data = data ? malloc(nbytes ? nbytes : 1) : calloc(1, nbytes ? nbytes : 1);
  if (!x->name || !x->data) {
    free(x->name);
    free(x->data);
    return -1;
  }
  if (data)
    memcpy(x->data, data, nbytes);
  x->dtype = dtype;
  x->ndim = ndim;
  for (int i = 0; i < ndim; i++)
    x->shape[i] = shape[i];
  x->nbytes = nbytes;
  t->n++;
  return 0;
}

int rt_tensors_set_meta(rt_tensors *t, const char *key, const char *value) {
  char *v = strdup(value);
  if (!v)
    return -1;
  for (int i = 0; i < t->nmeta; i++)
    if (strcmp(t->meta[i].key, key) == 0) {
      free(t->meta[i].value);
      t->meta[i].value = v;
      return 0;
    }
  char *k = strdup(key);
  rt_meta *m = k ? realloc(t->meta, (size_t)(t->nmeta + 1) * sizeof *m) : NULL;
  if (!m) {
    free(k);
    free(v);
    return -1;
  }
  t->meta = m;
  t->meta[t->nmeta++] = (rt_meta){k, v};
  return 0;
}

const char *rt_tensors_get_meta(const rt_tensors *t, const char *key) {
  for (int i = 0; i < t->nmeta; i++)
    if (strcmp(t->meta[i].key, key) == 0)
      return t->meta[i].value;
  return NULL;
}

void rt_tensors_free(rt_tensors *t) {
  for (int i = 0; i < t->n; i++) {
    free(t->v[i].name);
    free(t->v[i].data);
  }
  for (int i = 0; i < t->nmeta; i++) {
    free(t->meta[i].key);
    free(t->meta[i].value);
  }
  free(t->v);
  free(t->meta);
  memset(t, 0, sizeof *t);
}

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen,
                                                      const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return -1;
}

int rt_read_file(const char *path, unsigned char **buf, size_t *len, char *err,
                 size_t errlen) {
  *buf = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f)
    return fail(err, errlen, "%s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    fclose(f);
    return fail(err, errlen, "%s: not a regular file", path);
  }
  /* The size is only a first guess: the file may grow while we read. */
  size_t cap = (size_t)st.st_size + 1, n = 0;
  unsigned char *p = (uintmax_t)st.st_size < SIZE_MAX ? malloc(cap) : NULL;
  while (p) {
    n += fread(p + n, 1, cap - n, f);
    if (n < cap)
      break;
    unsigned char *q = cap < SIZE_MAX / 2 ? realloc(p, 2 * cap) : NULL;
    if (!q) {
      free(p);
      p = NULL;
      break;
    }
    p = q;
    cap *= 2;
  }
  int bad = ferror(f);
  fclose(f);
  if (!p)
    return fail(err, errlen, "%s: out of memory", path);
  if (bad) {
    free(p);
    return fail(err, errlen, "%s: read error", path);
  }
  p[n] = 0;
  *buf = p;
  *len = n;
  return 0;
}
