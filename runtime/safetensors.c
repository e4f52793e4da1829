/* Safetensors reading and writing.
 *
 * The reader trusts nothing in the file. It checks the header in two
 * passes: the first is a plain JSON syntax check (UTF-8, escapes, a depth
 * limit) that keeps no state, so a hostile header costs no memory; the
 * second walks the now well-formed JSON and extracts the tensor entries,
 * checking each against the format. Only once every entry is known to lie
 * inside the file is any tensor memory allocated, so no allocation is
 * larger than the file itself.
 *
 * The rules are those of the reference implementation (huggingface/
 * safetensors): the tensors tile the data section exactly, with no gap,
 * overlap or trailing byte. In addition unknown keys inside an entry are
 * refused, since they could mean a format extension we would misread. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnnc_runtime.h"
#include "json.h"

enum { SHOWN = 64 };

typedef struct Ctx {
  const char *what; /* the file, or whatever the caller named the buffer */
  char *err;
  size_t errlen;
} Ctx;

__attribute__((format(printf, 2, 3))) static int bad(Ctx *c, const char *fmt,
                                                     ...) {
  if (c->err && c->errlen) {
    int n = snprintf(c->err, c->errlen, "%s: ", c->what);
    if (n >= 0 && (size_t)n < c->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
      va_end(ap);
    }
  }
  return -1;
}

/* A name from a hostile file, fit to print: short, no control bytes. */
static const char *shown(const char *s, char buf[SHOWN]) {
  size_t i = strlen(rt_printable(s, buf, SHOWN - 3));
  if (s[i])
    memcpy(buf + i, "...", 4);
  return buf;
}

static int host_is_le(void) {
  const uint16_t one = 1;
  return *(const unsigned char *)&one;
}

/* Safetensors data is little-endian; reverse each element on other hosts. */
static void swap_to_host(void *data, size_t nbytes, size_t elem) {
  if (host_is_le() || elem == 1)
    return;
  unsigned char *p = data;
  for (size_t i = 0; i + elem <= nbytes; i += elem)
    for (size_t a = i, b = i + elem - 1; a < b; a++, b--) {
      unsigned char t = p[a];
      p[a] = p[b];
      p[b] = t;
    }
}

/* --- the header -------------------------------------------------------- */

typedef struct Span {
  uint64_t begin, end;
  int tensor;
} Span;

typedef struct Header {
  Ctx *c;
  rt_json j;
  char *key; /* scratch for decoded strings */
  uint64_t datalen;
  rt_tensors *out;
  Span *spans;
} Header;

/* The next string, decoded into h->key; only called on checked JSON. */
static const char *next_string(Header *h, size_t *len) {
  rt_json_skip_ws(&h->j);
  size_t n;
  rt_json_string(&h->j, h->key, &n);
  if (len)
    *len = n;
  return h->key;
}

/* Moves past ':' or ',' (both already checked). */
static void step(Header *h) {
  rt_json_skip_ws(&h->j);
  h->j.i++;
  rt_json_skip_ws(&h->j);
}

/* After a value inside an object or array: 1 if another one follows. */
static int more(Header *h) {
  rt_json_skip_ws(&h->j);
  int c = h->j.p[h->j.i++];
  return c == ',';
}

/* Opens an object or array; returns 0 when it is empty. */
static int enter(Header *h) {
  h->j.i++;
  rt_json_skip_ws(&h->j);
  if (rt_json_peek(&h->j) == '}' || rt_json_peek(&h->j) == ']') {
    h->j.i++;
    return 0;
  }
  return 1;
}

static int read_metadata(Header *h) {
  rt_tensors *t = h->out;
  if (rt_json_peek(&h->j) != '{')
    return bad(h->c, "__metadata__ is not an object");
  if (!enter(h))
    return 0;
  do {
    char b[SHOWN];
    size_t n;
    next_string(h, &n);
    if (memchr(h->key, 0, n))
      return bad(h->c, "__metadata__ key \"%s\" contains NUL",
                 shown(h->key, b));
    char *k = strdup(h->key);
    if (!k)
      return bad(h->c, "out of memory");
    rt_meta *m = realloc(t->meta, (size_t)(t->nmeta + 1) * sizeof *m);
    if (!m) {
      free(k);
      return bad(h->c, "out of memory");
    }
    t->meta = m;
    t->meta[t->nmeta++] = (rt_meta){k, NULL};
    step(h);
    if (rt_json_peek(&h->j) != '"')
      return bad(h->c, "__metadata__ value of \"%s\" is not a string",
                 shown(k, b));
    next_string(h, &n);
    if (memchr(h->key, 0, n))
      return bad(h->c, "__metadata__ value of \"%s\" contains NUL",
                 shown(k, b));
    if (!(t->meta[t->nmeta - 1].value = strdup(h->key)))
      return bad(h->c, "out of memory");
  } while (more(h));
  return 0;
}

/* A non-negative integer that fits int64_t, for shapes and offsets. */
static int read_count(Header *h, const char *name, const char *field,
                      int64_t *v) {
  char b[SHOWN];
  rt_json_num num;
  rt_json_skip_ws(&h->j);
  int c = rt_json_peek(&h->j);
  if (c != '-' && (c < '0' || c > '9'))
    return bad(h->c, "tensor \"%s\": %s holds a non-number", shown(name, b),
               field);
  rt_json_number(&h->j, &num);
  if (!num.integer)
    return bad(h->c, "tensor \"%s\": %s holds a non-integer", shown(name, b),
               field);
  if (num.neg && (num.v || num.big))
    return bad(h->c, "tensor \"%s\": %s holds a negative number",
               shown(name, b), field);
  if (num.big || num.v > INT64_MAX)
    return bad(h->c, "tensor \"%s\": %s holds a number that overflows 64 bits",
               shown(name, b), field);
  *v = (int64_t)num.v;
  return 0;
}

static int read_shape(Header *h, rt_tensor *x) {
  char b[SHOWN];
  if (rt_json_peek(&h->j) != '[')
    return bad(h->c, "tensor \"%s\": shape is not an array", shown(x->name, b));
  if (!enter(h))
    return 0;
  do {
    if (x->ndim == RT_MAX_DIMS)
      return bad(h->c, "tensor \"%s\": shape has more than %d dimensions",
                 shown(x->name, b), RT_MAX_DIMS);
    if (read_count(h, x->name, "shape", &x->shape[x->ndim++]) < 0)
      return -1;
  } while (more(h));
  return 0;
}

static int read_offsets(Header *h, const char *name, Span *s) {
  char b[SHOWN];
  int64_t v[2];
  int n = 0;
  if (rt_json_peek(&h->j) == '[' && enter(h)) {
    do {
      if (n == 2)
        return bad(h->c,
                   "tensor \"%s\": data_offsets has more than two "
                   "entries",
                   shown(name, b));
      if (read_count(h, name, "data_offsets", &v[n++]) < 0)
        return -1;
    } while (more(h));
  }
  if (n != 2)
    return bad(h->c, "tensor \"%s\": data_offsets is not a [begin, end] pair",
               shown(name, b));
  s->begin = (uint64_t)v[0];
  s->end = (uint64_t)v[1];
  return 0;
}

/* Checks that dtype, shape and data_offsets agree and fit the data. */
static int check_entry(Header *h, rt_tensor *x, const Span *s) {
  char b[SHOWN];
  uint64_t count = 1, size = rt_dtype_size(x->dtype);
  for (int i = 0; i < x->ndim; i++) {
    uint64_t d = (uint64_t)x->shape[i];
    if (d && count > INT64_MAX / d)
      return bad(h->c,
                 "tensor \"%s\": the shape's element count overflows "
                 "64 bits",
                 shown(x->name, b));
    count *= d;
  }
  if (count > INT64_MAX / size || count * size > SIZE_MAX)
    return bad(h->c, "tensor \"%s\": the shape's byte size overflows 64 bits",
               shown(x->name, b));
  x->nbytes = (size_t)(count * size);
  if (s->begin > s->end)
    return bad(h->c,
               "tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64
               "] are reversed",
               shown(x->name, b), s->begin, s->end);
  if (s->end > h->datalen)
    return bad(h->c,
               "tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64
               "] are out of range: the data section has %" PRIu64 " bytes",
               shown(x->name, b), s->begin, s->end, h->datalen);
  if (s->end - s->begin != count * size) {
    char dims[RT_MAX_DIMS * 22 + 2] = "[";
    for (int i = 0; i < x->ndim; i++)
      snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%" PRId64,
               i ? ", " : "", x->shape[i]);
    strcat(dims, "]");
    return bad(h->c,
               "tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64
               "] hold %" PRIu64 " bytes, but %s %s needs %" PRIu64,
               shown(x->name, b), s->begin, s->end, s->end - s->begin,
               rt_dtype_name(x->dtype), dims, count * size);
  }
  return 0;
}

static int read_entry(Header *h, rt_tensor *x, Span *s) {
  char b[SHOWN];
  int seen[3] = {0, 0, 0};
  static const char *const keys[3] = {"dtype", "shape", "data_offsets"};
  if (rt_json_peek(&h->j) != '{')
    return bad(h->c, "tensor \"%s\": entry is not an object",
               shown(x->name, b));
  if (enter(h)) {
    do {
      size_t n;
      const char *key = next_string(h, &n);
      int k = 0;
      while (k < 3 && !(strlen(keys[k]) == n && strcmp(key, keys[k]) == 0))
        k++;
      if (k == 3)
        return bad(h->c, "tensor \"%s\": unknown key \"%s\"", shown(x->name, b),
                   shown(key, (char[SHOWN]){0}));
      if (seen[k]++)
        return bad(h->c, "tensor \"%s\": duplicate key \"%s\"",
                   shown(x->name, b), keys[k]);
      step(h);
      if (k == 0) {
        if (rt_json_peek(&h->j) != '"')
          return bad(h->c, "tensor \"%s\": dtype is not a string",
                     shown(x->name, b));
        const char *d = next_string(h, &n);
        if (strlen(d) != n)
          return bad(h->c, "tensor \"%s\": dtype contains NUL",
                     shown(x->name, b));
        if (rt_dtype_parse(d, &x->dtype) < 0)
          return bad(h->c, "tensor \"%s\": unsupported dtype \"%s\"",
                     shown(x->name, b), shown(d, (char[SHOWN]){0}));
      } else if (k == 1 && read_shape(h, x) < 0) {
        return -1;
      } else if (k == 2 && read_offsets(h, x->name, s) < 0) {
        return -1;
      }
    } while (more(h));
  }
  for (int k = 0; k < 3; k++)
    if (!seen[k])
      return bad(h->c, "tensor \"%s\": missing key \"%s\"", shown(x->name, b),
                 keys[k]);
  return check_entry(h, x, s);
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The first name that appears twice, or NULL; sorting keeps a hostile
 * header with millions of names from costing quadratic time. */
static const char *find_duplicate(const char **names, int n) {
  qsort(names, (size_t)n, sizeof *names, cmp_names);
  for (int i = 1; i < n; i++)
    if (strcmp(names[i - 1], names[i]) == 0)
      return names[i];
  return NULL;
}

static int check_unique(Ctx *c, const rt_tensors *t) {
  int n = t->n > t->nmeta ? t->n : t->nmeta;
  const char **names = malloc((size_t)(n ? n : 1) * sizeof *names);
  if (!names)
    return bad(c, "out of memory");
  char b[SHOWN];
  const char *dup;
  for (int i = 0; i < t->n; i++)
    names[i] = t->v[i].name;
  if ((dup = find_duplicate(names, t->n))) {
    bad(c, "duplicate tensor name \"%s\"", shown(dup, b));
    free(names);
    return -1;
  }
  for (int i = 0; i < t->nmeta; i++)
    names[i] = t->meta[i].key;
  if ((dup = find_duplicate(names, t->nmeta))) {
    bad(c, "duplicate __metadata__ key \"%s\"", shown(dup, b));
    free(names);
    return -1;
  }
  free(names);
  return 0;
}

static int cmp_spans(const void *a, const void *b) {
  const Span *x = a, *y = b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  return (x->end > y->end) - (x->end < y->end);
}

/* Sorts the spans by offset and checks that they tile the data section. */
static int check_tiling(Header *h) {
  rt_tensors *t = h->out;
  char b1[SHOWN], b2[SHOWN];
  if (t->n > 1)
    qsort(h->spans, (size_t)t->n, sizeof *h->spans, cmp_spans);
  uint64_t pos = 0;
  for (int i = 0; i < t->n; i++) {
    const Span *s = &h->spans[i];
    if (s->begin < pos)
      return bad(h->c, "tensor \"%s\": data_offsets overlap tensor \"%s\"",
                 shown(t->v[s->tensor].name, b1),
                 shown(t->v[h->spans[i - 1].tensor].name, b2));
    if (s->begin > pos)
      return bad(h->c,
                 "data bytes %" PRIu64 "..%" PRIu64 " belong to no tensor", pos,
                 s->begin);
    pos = s->end;
  }
  if (pos != h->datalen)
    return bad(h->c,
               "data bytes %" PRIu64 "..%" PRIu64
               " at the end belong to no tensor",
               pos, h->datalen);
  return 0;
}

static int grow_tensors(Header *h) {
  rt_tensors *t = h->out;
  if (t->n < t->cap)
    return 0;
  int cap = t->cap ? 2 * t->cap : 16;
  rt_tensor *v = realloc(t->v, (size_t)cap * sizeof *v);
  Span *s = v ? realloc(h->spans, (size_t)cap * sizeof *s) : NULL;
  if (v)
    t->v = v;
  if (!s)
    return bad(h->c, "out of memory");
  h->spans = s;
  t->cap = cap;
  return 0;
}

/* Fills h->out (names, dtypes, shapes, no data yet) and h->spans. */
static int read_header(Header *h) {
  rt_json *j = &h->j;
  size_t bad_byte = rt_utf8_prefix(j->p, j->n);
  if (bad_byte < j->n)
    return bad(h->c, "header is not valid UTF-8 (header byte %zu)", bad_byte);
  if (rt_json_check(j) < 0 && j->too_deep)
    return bad(h->c, "header nests deeper than %d levels (header byte %zu)",
               RT_JSON_MAX_DEPTH, j->i);
  if (j->msg)
    return bad(h->c, "header is not valid JSON: %s (header byte %zu)", j->msg,
               j->i);
  j->i = 0;
  rt_json_skip_ws(j);
  if (rt_json_peek(j) != '{')
    return bad(h->c, "header is not a JSON object");
  int have_meta = 0;
  if (enter(h)) {
    do {
      size_t n;
      const char *key = next_string(h, &n);
      if (strcmp(key, "__metadata__") == 0 && n == 12) {
        if (have_meta++)
          return bad(h->c, "duplicate __metadata__");
        step(h);
        if (read_metadata(h) < 0)
          return -1;
        continue;
      }
      if (memchr(key, 0, n))
        return bad(h->c, "a tensor name contains NUL");
      if (grow_tensors(h) < 0)
        return -1;
      rt_tensor *x = &h->out->v[h->out->n];
      memset(x, 0, sizeof *x);
      if (!(x->name = strdup(key)))
        return bad(h->c, "out of memory");
      h->spans[h->out->n].tensor = h->out->n;
      h->out->n++;
      step(h);
      if (read_entry(h, x, &h->spans[h->out->n - 1]) < 0)
        return -1;
    } while (more(h));
  }
  if (check_unique(h->c, h->out) < 0 || check_tiling(h) < 0)
    return -1;
  return 0;
}

/* --- reading ----------------------------------------------------------- */

/* Where the bytes come from: a file or a buffer, of known size. */
typedef struct Src {
  FILE *f;
  const unsigned char *mem;
  uint64_t size;
} Src;

static int src_read(Src *s, uint64_t at, void *dst, size_t n) {
  if (s->mem) {
    memcpy(dst, s->mem + at, n);
    return 0;
  }
  if (n == 0)
    return 0;
  if (at > INT64_MAX || fseeko(s->f, (off_t)at, SEEK_SET) != 0)
    return -1;
  return fread(dst, 1, n, s->f) == n ? 0 : -1;
}

static int read_src(Ctx *c, Src *s, rt_tensors *out) {
  unsigned char len8[8];
  if (s->size < 8)
    return bad(c,
               "file is %" PRIu64 " bytes, too short for a safetensors "
               "header length (8 bytes)",
               s->size);
  if (src_read(s, 0, len8, 8) < 0)
    return bad(c, "read error");
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--)
    n = n << 8 | len8[i];
  if (n > RT_SAFETENSORS_MAX_HEADER)
    return bad(c, "header length %" PRIu64 " is absurd (limit %u bytes)", n,
               RT_SAFETENSORS_MAX_HEADER);
  if (n > s->size - 8)
    return bad(c,
               "header length %" PRIu64 " runs past the end of the file "
               "(%" PRIu64 " bytes)",
               n, s->size);
  Header h = {c, {0}, NULL, s->size - 8 - n, out, NULL};
  unsigned char *text = malloc(n ? n : 1);
  h.key = malloc(n + 1);
  int rc = -1;
  if (!text || !h.key)
    bad(c, "out of memory");
  else if (src_read(s, 8, text, n) < 0)
    bad(c, "read error in the header");
  else {
    h.j = (rt_json){text, n, 0, NULL, 0};
    rc = read_header(&h);
  }
  /* Each tensor is allocated only now that the tiling check has bounded
   * the total by the file's size. */
  for (int i = 0; rc == 0 && i < out->n; i++) {
    const Span *sp = &h.spans[i];
    rt_tensor *x = &out->v[sp->tensor];
    if (!(x->data = malloc(x->nbytes ? x->nbytes : 1)))
      rc = bad(c, "out of memory");
    else if (src_read(s, 8 + n + sp->begin, x->data, x->nbytes) < 0)
      rc = bad(c,
               "read error in the data of tensor \"%s\" (did the file "
               "shrink?)",
               shown(x->name, (char[SHOWN]){0}));
    else
      swap_to_host(x->data, x->nbytes, rt_dtype_size(x->dtype));
  }
  free(text);
  free(h.key);
  free(h.spans);
  return rc;
}

int rt_safetensors_parse(const unsigned char *buf, size_t len, const char *what,
                         rt_tensors *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  Ctx c = {what ? what : "safetensors buffer", err, errlen};
  Src s = {NULL, buf, len};
  if (read_src(&c, &s, out) < 0) {
    rt_tensors_free(out);
    return -1;
  }
  return 0;
}

int rt_safetensors_read(const char *path, rt_tensors *out, char *err,
                        size_t errlen) {
  memset(out, 0, sizeof *out);
  Ctx c = {path, err, errlen};
  FILE *f = fopen(path, "rb");
  if (!f)
    return bad(&c, "%s", strerror(errno));
  struct stat st;
  int rc;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    rc = bad(&c, "not a regular file");
  } else {
    Src s = {f, NULL, (uint64_t)st.st_size};
    rc = read_src(&c, &s, out);
  }
  fclose(f);
  if (rc < 0)
    rt_tensors_free(out);
  return rc;
}

/* --- writing ----------------------------------------------------------- */

/* The reference serializer's dtype order. Laying data out by descending
 * rank starts every tensor at a multiple of its element size, and keeps
 * our files byte-identical to the reference's for the same tensors. */
static int rank(rt_dtype t) {
  switch (t) {
  case RT_BOOL: return 0;
  case RT_U8: return 1;
  case RT_I8: return 2;
  case RT_I16: return 3;
  case RT_F16: return 4;
  case RT_BF16: return 5;
  case RT_I32: return 6;
  case RT_F32: return 7;
  case RT_F64: return 8;
  case RT_I64: return 9;
  }
  return -1;
}

static int cmp_layout(const void *a, const void *b) {
  const rt_tensor *x = *(const rt_tensor *const *)a;
  const rt_tensor *y = *(const rt_tensor *const *)b;
  if (rank(x->dtype) != rank(y->dtype))
    return rank(y->dtype) - rank(x->dtype);
  return strcmp(x->name, y->name);
}

static int cmp_meta(const void *a, const void *b) {
  return strcmp((*(const rt_meta *const *)a)->key,
                (*(const rt_meta *const *)b)->key);
}

static int utf8_ok(const char *s) {
  size_t n = strlen(s);
  return rt_utf8_prefix((const unsigned char *)s, n) == n;
}

/* What the reader would refuse, refused before anything is written. */
static int check_tensor(Ctx *c, const rt_tensor *x) {
  char b[SHOWN];
  if (!x->name || !utf8_ok(x->name) || strcmp(x->name, "__metadata__") == 0)
    return bad(c, "tensor name \"%s\" is not valid UTF-8 or is reserved",
               x->name ? shown(x->name, b) : "(null)");
  if (rank(x->dtype) < 0 || x->ndim < 0 || x->ndim > RT_MAX_DIMS)
    return bad(c, "tensor \"%s\": invalid dtype or rank", shown(x->name, b));
  uint64_t count = 1, size = rt_dtype_size(x->dtype);
  for (int i = 0; i < x->ndim; i++) {
    if (x->shape[i] < 0)
      return bad(c, "tensor \"%s\": negative dimension", shown(x->name, b));
    uint64_t d = (uint64_t)x->shape[i];
    if (d && count > INT64_MAX / size / d)
      return bad(c, "tensor \"%s\": size overflows", shown(x->name, b));
    count *= d;
  }
  if (x->nbytes != count * size || (x->nbytes && !x->data))
    return bad(c, "tensor \"%s\": nbytes or data disagree with the shape",
               shown(x->name, b));
  return 0;
}

static int check_writable(Ctx *c, const rt_tensors *t) {
  for (int i = 0; i < t->n; i++)
    if (check_tensor(c, &t->v[i]) < 0)
      return -1;
  for (int i = 0; i < t->nmeta; i++)
    if (!t->meta[i].key || !t->meta[i].value || !utf8_ok(t->meta[i].key) ||
        !utf8_ok(t->meta[i].value))
      return bad(c, "a __metadata__ entry is missing or not valid UTF-8");
  return check_unique(c, t);
}

typedef struct Buf {
  char *p;
  size_t n, cap;
  int oom;
} Buf;

static void put(Buf *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->cap - b->n < n) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n < n)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

static void puts_(Buf *b, const char *s) { put(b, s, strlen(s)); }

__attribute__((format(printf, 2, 3))) static void putf(Buf *b, const char *fmt,
                                                       ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  put(b, tmp, n < 0 ? 0 : (size_t)n);
}

/* Escapes as serde_json does, so headers match the reference byte for
 * byte: short escapes where JSON has them, \u00xx for other controls. */
static void put_string(Buf *b, const char *s) {
  put(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    const char *e = c == '"'    ? "\\\""
                    : c == '\\' ? "\\\\"
                    : c == '\b' ? "\\b"
                    : c == '\f' ? "\\f"
                    : c == '\n' ? "\\n"
                    : c == '\r' ? "\\r"
                    : c == '\t' ? "\\t"
                                : NULL;
    if (e)
      puts_(b, e);
    else if (c < 0x20)
      putf(b, "\\u%04x", c);
    else
      put(b, s, 1);
  }
  put(b, "\"", 1);
}

static void put_header(Buf *b, const rt_tensors *t, const rt_tensor **order,
                       const rt_meta **meta) {
  puts_(b, "{");
  if (t->nmeta) {
    puts_(b, "\"__metadata__\":{");
    for (int i = 0; i < t->nmeta; i++) {
      puts_(b, i ? "," : "");
      put_string(b, meta[i]->key);
      puts_(b, ":");
      put_string(b, meta[i]->value);
    }
    puts_(b, "}");
  }
  uint64_t at = 0;
  for (int i = 0; i < t->n; i++) {
    const rt_tensor *x = order[i];
    puts_(b, i || t->nmeta ? "," : "");
    put_string(b, x->name);
    putf(b, ":{\"dtype\":\"%s\",\"shape\":[", rt_dtype_name(x->dtype));
    for (int d = 0; d < x->ndim; d++)
      putf(b, "%s%" PRId64, d ? "," : "", x->shape[d]);
    putf(b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", at,
         at + x->nbytes);
    at += x->nbytes;
  }
  puts_(b, "}");
  while (b->n % 8)
    puts_(b, " ");
}

static int write_le(FILE *f, const rt_tensor *x) {
  size_t elem = rt_dtype_size(x->dtype);
  if (host_is_le() || elem == 1)
    return fwrite(x->data, 1, x->nbytes, f) == x->nbytes ? 0 : -1;
  unsigned char chunk[4096]; /* a multiple of every element size */
  for (size_t at = 0; at < x->nbytes; at += sizeof chunk) {
    size_t n = x->nbytes - at < sizeof chunk ? x->nbytes - at : sizeof chunk;
    memcpy(chunk, (const unsigned char *)x->data + at, n);
    swap_to_host(chunk, n, elem);
    if (fwrite(chunk, 1, n, f) != n)
      return -1;
  }
  return 0;
}

static int write_file(Ctx *c, const char *path, const Buf *hdr,
                      const rt_tensor **order, int n) {
  size_t len = strlen(path);
  char *tmp = malloc(len + 5);
  if (!tmp)
    return bad(c, "out of memory");
  memcpy(tmp, path, len);
  memcpy(tmp + len, ".tmp", 5);
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    bad(c, "cannot create %s: %s", tmp, strerror(errno));
    free(tmp);
    return -1;
  }
  unsigned char len8[8];
  for (int i = 0; i < 8; i++)
    len8[i] = (unsigned char)((uint64_t)hdr->n >> 8 * i);
  int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hdr->p, 1, hdr->n, f) == hdr->n;
  for (int i = 0; ok && i < n; i++)
    ok = write_le(f, order[i]) == 0;
  /* Durable before the rename, so a crash leaves the old file or the new
   * one, never an empty one. */
  ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
  ok = fclose(f) == 0 && ok;
  ok = ok && rename(tmp, path) == 0;
  int e = errno;
  if (!ok) {
    remove(tmp);
    bad(c, "write failed: %s", strerror(e));
  }
  free(tmp);
  return ok ? 0 : -1;
}

int rt_safetensors_write(const char *path, const rt_tensors *t, char *err,
                         size_t errlen) {
  Ctx c = {path, err, errlen};
  if (check_writable(&c, t) < 0)
    return -1;
  const rt_tensor **order = malloc((size_t)(t->n + 1) * sizeof *order);
  const rt_meta **meta = malloc((size_t)(t->nmeta + 1) * sizeof *meta);
  Buf hdr = {0};
  int rc = -1;
  if (order && meta) {
    for (int i = 0; i < t->n; i++)
      order[i] = &t->v[i];
    for (int i = 0; i < t->nmeta; i++)
      meta[i] = &t->meta[i];
    if (t->n > 1)
      qsort(order, (size_t)t->n, sizeof *order, cmp_layout);
    if (t->nmeta > 1)
      qsort(meta, (size_t)t->nmeta, sizeof *meta, cmp_meta);
    put_header(&hdr, t, order, meta);
  }
  if (!order || !meta || hdr.oom)
    bad(&c, "out of memory");
  else if (hdr.n > RT_SAFETENSORS_MAX_HEADER)
    bad(&c, "header of %zu bytes exceeds the %u-byte limit", hdr.n,
        RT_SAFETENSORS_MAX_HEADER);
  else
    rc = write_file(&c, path, &hdr, order, t->n);
  free(order);
  free(meta);
  free(hdr.p);
  return rc;
}
