/* IDX files, the format of MNIST and Fashion-MNIST: 00 00 TYPE NDIM, NDIM
 * big-endian 32-bit dimensions, then the elements, big-endian, row-major.
 * Data sets ship gzip-compressed; zlib reads both forms through one
 * interface, and the gzip magic only decides how problems are worded.
 *
 * A hostile header can claim terabytes. A plain file is checked against
 * its size before anything is allocated; a compressed one has no size to
 * check, so its buffer grows only as fast as data actually arrives. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "cnnc_runtime.h"

static const struct {
  int type;
  rt_dtype dtype;
} types[] = {
    {RT_IDX_U8, RT_U8},   {RT_IDX_I8, RT_I8},   {RT_IDX_I16, RT_I16},
    {RT_IDX_I32, RT_I32}, {RT_IDX_F32, RT_F32}, {RT_IDX_F64, RT_F64},
};

typedef struct In {
  const char *path;
  char *err;
  size_t errlen;
  gzFile gz;
  int compressed;
  uint64_t size; /* of the file on disk */
} In;

__attribute__((format(printf, 2, 3))) static int bad(In *in, const char *fmt,
                                                     ...) {
  if (in->err && in->errlen) {
    int n = snprintf(in->err, in->errlen, "%s: ", in->path);
    if (n >= 0 && (size_t)n < in->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(in->err + n, in->errlen - (size_t)n, fmt, ap);
      va_end(ap);
    }
  }
  return -1;
}

/* Reads up to n bytes; fewer only at the end of the data. A damaged gzip
 * stream (bad header, bad block, CRC or length mismatch, cut short) is an
 * error here, not a short read. */
static int get(In *in, void *buf, size_t n, size_t *got) {
  *got = 0;
  while (*got < n) {
    size_t want = n - *got < (1u << 30) ? n - *got : (1u << 30);
    int r = gzread(in->gz, (unsigned char *)buf + *got, (unsigned)want);
    int code;
    const char *msg = gzerror(in->gz, &code);
    if (r < 0 || (code != Z_OK && code != Z_STREAM_END)) {
      if (code == Z_ERRNO)
        return bad(in, "read error: %s", strerror(errno));
      size_t plen = strlen(in->path); /* zlib prefixes "path: " */
      if (strncmp(msg, in->path, plen) == 0 &&
          strncmp(msg + plen, ": ", 2) == 0)
        msg += plen + 2;
      return bad(in, "corrupt gzip data: %s", msg);
    }
    if (r == 0)
      break;
    *got += (size_t)r;
  }
  return 0;
}

static int truncated(In *in, const char *part) {
  return bad(in, "truncated: the %sfile ends inside the %s",
             in->compressed ? "decompressed " : "", part);
}

static int read_head(In *in, rt_idx *out) {
  unsigned char m[4 + 4 * RT_MAX_DIMS];
  size_t got;
  if (get(in, m, 4, &got) < 0)
    return -1;
  if (got < 4)
    return truncated(in, "4-byte magic number");
  if (m[0] || m[1])
    return bad(in,
               "not an IDX file: magic %02x %02x %02x %02x, expected 00 00 "
               "TYPE NDIM",
               m[0], m[1], m[2], m[3]);
  int t = 0, nt = (int)(sizeof types / sizeof types[0]);
  while (t < nt && types[t].type != m[2])
    t++;
  if (t == nt)
    return bad(in, "unknown IDX element type 0x%02x", m[2]);
  if (m[3] == 0 || m[3] > RT_MAX_DIMS)
    return bad(in, "%d dimensions: cnnc reads IDX files with 1 to %d", m[3],
               RT_MAX_DIMS);
  out->type = m[2];
  out->dtype = types[t].dtype;
  out->ndim = m[3];
  size_t elem = rt_dtype_size(out->dtype);
  size_t dlen = 4 * (size_t)out->ndim;
  if (get(in, m + 4, dlen, &got) < 0)
    return -1;
  if (got < dlen)
    return truncated(in, "dimensions");
  uint64_t count = 1;
  for (int i = 0; i < out->ndim; i++) {
    const unsigned char *d = m + 4 + 4 * i;
    uint64_t v = (uint64_t)d[0] << 24 | (uint64_t)d[1] << 16 |
                 (uint64_t)d[2] << 8 | d[3];
    if (v && count > INT64_MAX / elem / v)
      return bad(in, "the dimensions' product overflows 64 bits");
    count *= v;
    out->dims[i] = (int64_t)v;
  }
  if (count * elem > SIZE_MAX)
    return bad(in, "the data would not fit in memory");
  out->count = (int64_t)count;
  out->nbytes = (size_t)(count * elem);
  uint64_t want = 4 + dlen + out->nbytes;
  if (!in->compressed && in->size < want)
    return bad(in,
               "truncated: the dimensions need %" PRIu64
               " bytes but the file has %" PRIu64,
               want, in->size);
  if (!in->compressed && in->size > want)
    return bad(in,
               "the file has %" PRIu64 " bytes, more than the %" PRIu64
               " its dimensions describe",
               in->size, want);
  return 0;
}

static int read_data(In *in, rt_idx *out) {
  size_t cap = out->nbytes, have = 0;
  if (in->compressed && cap > (1u << 20))
    cap = 1u << 20;
  if (!(out->data = malloc(cap ? cap : 1)))
    return bad(in, "out of memory");
  for (;;) {
    size_t got;
    if (get(in, (unsigned char *)out->data + have, cap - have, &got) < 0)
      return -1;
    have += got;
    if (have < cap || cap == out->nbytes)
      break;
    cap = cap > out->nbytes / 2 ? out->nbytes : 2 * cap;
    void *p = realloc(out->data, cap);
    if (!p)
      return bad(in, "out of memory");
    out->data = p;
  }
  if (have < out->nbytes)
    return bad(in,
               "truncated: the dimensions need %zu bytes of data but the %s "
               "has %zu",
               out->nbytes, in->compressed ? "decompressed file" : "file",
               have);
  unsigned char extra;
  size_t got;
  if (get(in, &extra, 1, &got) < 0)
    return -1;
  if (got)
    return bad(in, "data continues past the %zu bytes its dimensions describe",
               out->nbytes);
  return 0;
}

/* IDX is big-endian; reverse each element on little-endian hosts. */
static void to_host(void *data, size_t nbytes, size_t elem) {
  const uint16_t one = 1;
  if (elem == 1 || !*(const unsigned char *)&one)
    return;
  unsigned char *p = data;
  for (size_t i = 0; i + elem <= nbytes; i += elem)
    for (size_t a = i, b = i + elem - 1; a < b; a++, b--) {
      unsigned char t = p[a];
      p[a] = p[b];
      p[b] = t;
    }
}

int rt_idx_read(const char *path, rt_idx *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  In in = {path, err, errlen, NULL, 0, 0};
  FILE *f = fopen(path, "rb");
  if (!f)
    return bad(&in, "%s", strerror(errno));
  struct stat st;
  unsigned char magic[2] = {0, 0};
  int regular = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode);
  size_t n = regular ? fread(magic, 1, 2, f) : 0;
  fclose(f);
  if (!regular)
    return bad(&in, "not a regular file");
  in.size = (uint64_t)st.st_size;
  in.compressed = n == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
  if (!(in.gz = gzopen(path, "rb")))
    return bad(&in, "%s", errno ? strerror(errno) : "out of memory");
  gzbuffer(in.gz, 1u << 17);
  int rc = read_head(&in, out);
  if (rc == 0)
    rc = read_data(&in, out);
  gzclose(in.gz);
  if (rc < 0) {
    rt_idx_free(out);
    return -1;
  }
  to_host(out->data, out->nbytes, rt_dtype_size(out->dtype));
  return 0;
}

void rt_idx_free(rt_idx *x) {
  free(x->data);
  memset(x, 0, sizeof *x);
}
