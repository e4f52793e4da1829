/* The host runtime: tensor sets, safetensors files (round trips, files
 * built byte by byte, the reference serializer's exact bytes, a catalogue
 * of hostile files, every truncation and single-byte corruption) and IDX
 * files (the real Fashion-MNIST, plain and gzip, hostile ones). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cnnc_runtime.h"

#define FASHION "/usr/share/datasets/fashion-mnist/"

/* The group state: a scratch directory removed at the end. */
typedef struct Scratch {
  char dir[64];
  char path[256];
} Scratch;

static int make_scratch(void **state) {
  Scratch *s = calloc(1, sizeof *s);
  strcpy(s->dir, "/tmp/cnnc_runtime_XXXXXX");
  if (!mkdtemp(s->dir))
    return -1;
  *state = s;
  return 0;
}

static int remove_scratch(void **state) {
  Scratch *s = *state;
  DIR *d = opendir(s->dir);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", s->dir, e->d_name);
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
      remove(p);
  }
  if (d)
    closedir(d);
  rmdir(s->dir);
  free(s);
  return 0;
}

static const char *scratch(void **state, const char *name) {
  Scratch *s = *state;
  snprintf(s->path, sizeof s->path, "%s/%s", s->dir, name);
  return s->path;
}

static void write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(p, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Asserts a failure whose message names `what` and mentions `want`. */
static void assert_error(int rc, const char *err, const char *what,
                         const char *want) {
  if (rc != -1 || !strstr(err, want) || strncmp(err, what, strlen(what)))
    fprintf(stderr, "wanted an error naming %s with \"%s\", got %d: %s\n", what,
            want, rc, err);
  assert_int_equal(rc, -1);
  assert_non_null(strstr(err, want));
  assert_int_equal(strncmp(err, what, strlen(what)), 0);
}

/* --- tensor sets -------------------------------------------------------- */

static void dtypes(void **state) {
  (void)state;
  const char *names[] = {"F32", "F64", "I64",  "I32", "I16",
                         "I8",  "U8",  "BOOL", "F16", "BF16"};
  const size_t sizes[] = {4, 8, 8, 4, 2, 1, 1, 1, 2, 2};
  for (int i = 0; i < 10; i++) {
    rt_dtype t;
    assert_int_equal(rt_dtype_parse(names[i], &t), 0);
    assert_int_equal(t, i);
    assert_string_equal(rt_dtype_name(t), names[i]);
    assert_int_equal(rt_dtype_size(t), sizes[i]);
  }
  rt_dtype t;
  assert_int_equal(rt_dtype_parse("U16", &t), -1);
  assert_int_equal(rt_dtype_parse("f32", &t), -1);
  assert_int_equal(rt_dtype_size((rt_dtype)99), 0);
  assert_string_equal(rt_dtype_name((rt_dtype)99), "?");
}

static void tensor_sets(void **state) {
  (void)state;
  rt_tensors t = {0};
  const int64_t shape[2] = {2, 3}, neg[1] = {-1}, nine[9] = {0};
  const float v[6] = {1, 2, 3, 4, 5, 6};
  assert_int_equal(rt_tensors_add(&t, "w", RT_F32, 2, shape, v), 0);
  assert_int_equal(rt_tensors_add(&t, "z", RT_I64, 1, shape, NULL), 0);
  assert_int_equal(rt_tensors_add(&t, "s", RT_U8, 0, NULL, NULL), 0);
  assert_int_equal(rt_tensors_add(&t, "w", RT_F32, 2, shape, v), -1);
  assert_int_equal(rt_tensors_add(&t, "__metadata__", RT_F32, 0, NULL, v), -1);
  assert_int_equal(rt_tensors_add(&t, "n", RT_F32, 1, neg, NULL), -1);
  assert_int_equal(rt_tensors_add(&t, "n", RT_F32, 9, nine, NULL), -1);
  assert_int_equal(rt_tensors_add(&t, "n", (rt_dtype)42, 0, NULL, NULL), -1);
  assert_int_equal(t.n, 3);
  const rt_tensor *w = rt_tensors_find(&t, "w");
  assert_non_null(w);
  assert_int_equal(w->nbytes, 24);
  assert_int_equal(rt_tensor_numel(w), 6);
  assert_memory_equal(w->data, v, sizeof v);
  const rt_tensor *z = rt_tensors_find(&t, "z");
  assert_int_equal(z->shape[0], 2);
  assert_int_equal(((const int64_t *)z->data)[1], 0);
  const rt_tensor *s = rt_tensors_find(&t, "s");
  assert_int_equal(rt_tensor_numel(s), 1);
  assert_int_equal(s->nbytes, 1);
  assert_null(rt_tensors_find(&t, "missing"));
  assert_int_equal(rt_tensors_set_meta(&t, "format", "pt"), 0);
  assert_int_equal(rt_tensors_set_meta(&t, "format", "np"), 0);
  assert_int_equal(t.nmeta, 1);
  assert_string_equal(rt_tensors_get_meta(&t, "format"), "np");
  assert_null(rt_tensors_get_meta(&t, "other"));
  rt_tensors_free(&t);
  assert_int_equal(t.n, 0);
  assert_null(t.v);
  assert_null(t.meta);
}

static void read_whole_file(void **state) {
  const char *p = scratch(state, "text");
  write_bytes(p, "abc", 3);
  unsigned char *buf;
  size_t len;
  char err[256];
  assert_int_equal(rt_read_file(p, &buf, &len, err, sizeof err), 0);
  assert_int_equal(len, 3);
  assert_string_equal((char *)buf, "abc");
  free(buf);
  p = scratch(state, "absent");
  assert_error(rt_read_file(p, &buf, &len, err, sizeof err), err, p,
               "No such file");
  assert_null(buf);
}

/* --- safetensors: good files --------------------------------------------- */

/* One tensor of every dtype, scalars and empty tensors among them. */
static void fill_all_dtypes(rt_tensors *t) {
  unsigned char bytes[64];
  for (int i = 0; i < 64; i++)
    bytes[i] = (unsigned char)(i * 37 + 11);
  const int64_t s23[2] = {2, 3}, s3[1] = {3}, s0[2] = {4, 0};
  const float f[6] = {0.5f, -1.25f, 3e38f, -0.0f, 1e-40f, 7};
  assert_int_equal(rt_tensors_add(t, "conv1.weight", RT_F32, 2, s23, f), 0);
  assert_int_equal(
      rt_tensors_add(t, "bn1.num_batches_tracked", RT_I64, 0, NULL, bytes), 0);
  assert_int_equal(rt_tensors_add(t, "f64", RT_F64, 1, s3, bytes), 0);
  assert_int_equal(rt_tensors_add(t, "i32", RT_I32, 2, s23, bytes), 0);
  assert_int_equal(rt_tensors_add(t, "i16", RT_I16, 1, s3, bytes), 0);
  assert_int_equal(rt_tensors_add(t, "i8", RT_I8, 1, s3, bytes), 0);
  assert_int_equal(rt_tensors_add(t, "labels", RT_U8, 1, s3, bytes), 0);
  assert_int_equal(rt_tensors_add(t, "mask", RT_BOOL, 1, s3, "\1\0\1"), 0);
  assert_int_equal(rt_tensors_add(t, "half", RT_F16, 2, s23, bytes), 0);
  assert_int_equal(rt_tensors_add(t, "brain", RT_BF16, 1, s3, bytes), 0);
  assert_int_equal(rt_tensors_add(t, "empty", RT_F32, 2, s0, NULL), 0);
  assert_int_equal(
      rt_tensors_add(t, "na\"me\\ \n\x01 caf\xc3\xa9", RT_F32, 0, NULL, f), 0);
  assert_int_equal(rt_tensors_set_meta(t, "format", "pt"), 0);
  assert_int_equal(rt_tensors_set_meta(t, "note", "tab\there \"q\""), 0);
}

static void assert_same_tensors(const rt_tensors *a, const rt_tensors *b) {
  assert_int_equal(a->n, b->n);
  for (int i = 0; i < a->n; i++) {
    const rt_tensor *x = &a->v[i], *y = rt_tensors_find(b, x->name);
    assert_non_null(y);
    assert_int_equal(x->dtype, y->dtype);
    assert_int_equal(x->ndim, y->ndim);
    for (int d = 0; d < x->ndim; d++)
      assert_int_equal(x->shape[d], y->shape[d]);
    assert_int_equal(x->nbytes, y->nbytes);
    assert_memory_equal(x->data, y->data, x->nbytes);
  }
  assert_int_equal(a->nmeta, b->nmeta);
  for (int i = 0; i < a->nmeta; i++)
    assert_string_equal(rt_tensors_get_meta(b, a->meta[i].key),
                        a->meta[i].value);
}

static void safetensors_round_trip(void **state) {
  rt_tensors t = {0}, back = {0};
  fill_all_dtypes(&t);
  const char *p = scratch(state, "all.safetensors");
  char err[256] = "";
  assert_int_equal(rt_safetensors_write(p, &t, err, sizeof err), 0);
  assert_int_equal(rt_safetensors_read(p, &back, err, sizeof err), 0);
  assert_same_tensors(&t, &back);
  rt_tensors_free(&back);

  /* The layout: header padded to 8 bytes, data sorted by descending
   * alignment, so every tensor starts aligned to its element size. */
  unsigned char *buf;
  size_t len;
  assert_int_equal(rt_read_file(p, &buf, &len, err, sizeof err), 0);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--)
    n = n << 8 | buf[i];
  assert_int_equal(n % 8, 0);
  assert_true(buf[8 + n - 1] == '}' || buf[8 + n - 1] == ' ');
  const char *h = (const char *)buf + 8;
  assert_int_equal(strncmp(h, "{\"__metadata__\":{\"format\":\"pt\",", 31), 0);
  const char *i64 = strstr(h, "\"bn1.num_batches_tracked\":{\"dtype\":\"I64\","
                              "\"shape\":[],\"data_offsets\":[0,8]}");
  const char *mask = strstr(h, "\"mask\"");
  const char *f64 = strstr(h, "\"f64\":{\"dtype\":\"F64\",\"shape\":[3],"
                              "\"data_offsets\":[8,32]}");
  assert_non_null(i64);
  assert_non_null(f64);
  assert_true(i64 < f64 && f64 < mask);
  assert_non_null(strstr(h, "\"na\\\"me\\\\ \\n\\u0001 caf\xc3\xa9\""));
  assert_non_null(strstr(h, "\"tab\\there \\\"q\\\"\""));
  assert_int_equal(
      rt_safetensors_parse(buf, len, "mem", &back, err, sizeof err), 0);
  assert_same_tensors(&t, &back);
  free(buf);

  /* Writing over an existing file replaces it and leaves no temporary. */
  rt_tensors_free(&back);
  assert_int_equal(rt_tensors_add(&back, "only", RT_U8, 0, NULL, "x"), 0);
  assert_int_equal(rt_safetensors_write(p, &back, err, sizeof err), 0);
  rt_tensors_free(&back);
  assert_int_equal(rt_safetensors_read(p, &back, err, sizeof err), 0);
  assert_int_equal(back.n, 1);
  assert_false(file_exists(scratch(state, "all.safetensors.tmp")));
  rt_tensors_free(&back);
  rt_tensors_free(&t);
}

/* A file put together by hand from the format description: keys in any
 * order, whitespace, escapes, metadata in the middle, data not in header
 * order. */
static void safetensors_by_hand(void **state) {
  static const char header[] =
      "{ \"b\\u00e9ta\" : {\"shape\": [ 2 ], \"data_offsets\": [8, 16],\n"
      "    \"dtype\": \"F32\"},\n"
      "  \"__metadata__\": {\"note\": \"hand\\/made \\\"x\\\" "
      "\\ud83d\\ude00\"},"
      "\n  \"a\": {\"dtype\": \"I64\", \"shape\": [], \"data_offsets\": [0,8]}"
      "}\n  ";
  const size_t n = sizeof header - 1;
  unsigned char file[8 + sizeof header + 16];
  for (int i = 0; i < 8; i++)
    file[i] = (unsigned char)((uint64_t)n >> (8 * i));
  memcpy(file + 8, header, n);
  static const unsigned char data[16] = {
      0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* I64 -2 */
      0x00, 0x00, 0xc0, 0x3f,                         /* F32 1.5 */
      0x00, 0x00, 0x80, 0xbe,                         /* F32 -0.25 */
  };
  memcpy(file + 8 + n, data, 16);
  const char *p = scratch(state, "hand.safetensors");
  write_bytes(p, file, 8 + n + 16);

  rt_tensors t;
  char err[256] = "";
  assert_int_equal(rt_safetensors_read(p, &t, err, sizeof err), 0);
  assert_int_equal(t.n, 2);
  assert_string_equal(t.v[0].name, "b\xc3\xa9ta"); /* header order */
  assert_string_equal(t.v[1].name, "a");
  const rt_tensor *beta = &t.v[0], *a = &t.v[1];
  assert_int_equal(beta->dtype, RT_F32);
  assert_int_equal(beta->ndim, 1);
  assert_int_equal(beta->shape[0], 2);
  assert_true(((const float *)beta->data)[0] == 1.5f);
  assert_true(((const float *)beta->data)[1] == -0.25f);
  assert_int_equal(a->dtype, RT_I64);
  assert_int_equal(a->ndim, 0);
  assert_int_equal(*(const int64_t *)a->data, -2);
  assert_string_equal(rt_tensors_get_meta(&t, "note"),
                      "hand/made \"x\" \xf0\x9f\x98\x80");
  rt_tensors_free(&t);
}

/* Our writer's bytes equal the reference serializer's for the examples
 * in its test suite. */
static void safetensors_reference_bytes(void **state) {
  const float v[6] = {0, 1, 2, 3, 4, 5};
  const unsigned char floats[24] = {0, 0, 0,  0,  0, 0, 128, 63, 0, 0, 0,   64,
                                    0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64};
  struct {
    const char *name, *header;
    int ndim;
    int64_t shape[4];
  } cases[] = {
      {"attn.0",
       "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],"
       "\"data_offsets\":[0,24]}}",
       3,
       {1, 2, 3}},
      {"attn0",
       "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],"
       "\"data_offsets\":[0,24]}}       ",
       4,
       {1, 1, 2, 3}},
  };
  const char *p = scratch(state, "ref.safetensors");
  char err[256] = "";
  for (int c = 0; c < 2; c++) {
    rt_tensors t = {0};
    assert_int_equal(rt_tensors_add(&t, cases[c].name, RT_F32, cases[c].ndim,
                                    cases[c].shape, v),
                     0);
    assert_int_equal(rt_safetensors_write(p, &t, err, sizeof err), 0);
    rt_tensors_free(&t);
    unsigned char *buf, want[128];
    size_t len, n = strlen(cases[c].header);
    memset(want, 0, 8);
    want[0] = (unsigned char)n;
    memcpy(want + 8, cases[c].header, n);
    memcpy(want + 8 + n, floats, 24);
    assert_int_equal(rt_read_file(p, &buf, &len, err, sizeof err), 0);
    assert_int_equal(len, 8 + n + 24);
    assert_memory_equal(buf, want, len);
    free(buf);
  }

  rt_tensors t = {0};
  const unsigned char empty[] = "\x08\0\0\0\0\0\0\0{}      ";
  assert_int_equal(rt_safetensors_write(p, &t, err, sizeof err), 0);
  unsigned char *buf;
  size_t len;
  assert_int_equal(rt_read_file(p, &buf, &len, err, sizeof err), 0);
  assert_int_equal(len, 16);
  assert_memory_equal(buf, empty, 16);
  free(buf);
  const char meta[] = "(\0\0\0\0\0\0\0{\"__metadata__\":{\"framework\":\"pt\"}}"
                      "     ";
  assert_int_equal(rt_tensors_set_meta(&t, "framework", "pt"), 0);
  assert_int_equal(rt_safetensors_write(p, &t, err, sizeof err), 0);
  assert_int_equal(rt_read_file(p, &buf, &len, err, sizeof err), 0);
  assert_int_equal(len, sizeof meta - 1);
  assert_memory_equal(buf, meta, len);
  free(buf);
  rt_tensors_free(&t);
  assert_int_equal(rt_safetensors_read(p, &t, err, sizeof err), 0);
  assert_int_equal(t.n, 0);
  assert_string_equal(rt_tensors_get_meta(&t, "framework"), "pt");
  rt_tensors_free(&t);
}

/* --- safetensors: hostile files ------------------------------------------ */

/* header text (hlen bytes, or up to its NUL when hlen is 0) followed by
 * `data` bytes of data section. */
typedef struct Hostile {
  const char *header;
  size_t hlen, data;
  const char *want;
} Hostile;

static const Hostile hostile[] = {
    {"{\"a\":", 0, 0, "not valid JSON"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],}}", 0, 4,
     "not valid JSON"},
    {"{} x", 0, 0, "trailing characters"},
    {"{}\0\0\0\0\0\0", 8, 0, "not valid JSON"},
    {"{\"a\\x\":1}", 0, 0, "invalid escape"},
    {"{\"\\ud800\":1}", 0, 0, "surrogate"},
    {"{\"\\udc00\\ud800\":1}", 0, 0, "surrogate"},
    {"{\"\\u12\":1}", 0, 0, "hex digit"},
    {"{\"a\tb\":1}", 0, 0, "control character"},
    {"{\"a\":01}", 0, 0, "not valid JSON"},
    {"{\"a\":-}", 0, 0, "invalid number"},
    {"{\"a\":tru}", 0, 0, "not valid JSON"},
    {"{\"a\xff\":1}", 0, 0, "not valid UTF-8"},
    {"{\"a\xc0\xaf\":1}", 0, 0, "not valid UTF-8"},
    {"{\"a\xed\xa0\x80\":1}", 0, 0, "not valid UTF-8"},
    {"{\"a\xf4\x90\x80\x80\":1}", 0, 0, "not valid UTF-8"},
    {"{\"a\xe2\x82\":1}", 0, 0, "not valid UTF-8"},
    {"", 0, 0, "not valid JSON"},
    {"[1, 2]", 0, 0, "not a JSON object"},
    {"\"str\"", 0, 0, "not a JSON object"},
    {"{\"a\":5}", 0, 0, "entry is not an object"},
    {"{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[],\"data_offsets\":[0,1]}}", 0,
     1, "unsupported dtype \"F8_E4M3\""},
    {"{\"a\":{\"dtype\":\"U16\",\"shape\":[],\"data_offsets\":[0,2]}}", 0, 2,
     "unsupported dtype"},
    {"{\"a\":{\"dtype\":\"F32\\u0000\",\"shape\":[],\"data_offsets\":[0,4]}}",
     0, 4, "dtype contains NUL"},
    {"{\"a\":{\"dtype\":4,\"shape\":[],\"data_offsets\":[0,4]}}", 0, 4,
     "dtype is not a string"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, 0,
     "negative"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 0, 4,
     "non-integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4]}}", 0, 4,
     "non-integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 0,
     4, "non-number"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[[1]],\"data_offsets\":[0,4]}}", 0, 4,
     "non-number"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 0, 8,
     "shape is not an array"},
    {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
     "\"data_offsets\":[0,0]}}",
     0, 0, "overflows 64 bits"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
     "\"data_offsets\":[0,0]}}",
     0, 0, "overflows 64 bits"},
    {"{\"a\":{\"dtype\":\"U8\",\"shape\":[99999999999999999999],"
     "\"data_offsets\":[0,0]}}",
     0, 0, "overflows 64 bits"},
    {"{\"a\":{\"dtype\":\"U8\",\"shape\":[9223372036854775808],"
     "\"data_offsets\":[0,0]}}",
     0, 0, "overflows 64 bits"},
    {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
     "\"data_offsets\":[0,1]}}",
     0, 1, "more than 8 dimensions"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 4,
     "out of range"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
     "\"data_offsets\":[18446744073709551615,8]}}",
     0, 8, "overflows 64 bits"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 0, 8,
     "reversed"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8,
     "hold 8 bytes, but F32 [3] needs 12"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     0, 12, "overlap"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     0, 8, "overlap"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]}}",
     0, 12, "data bytes 4..8 belong to no tensor"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 0, 8,
     "at the end belong to no tensor"},
    {"{}", 0, 3, "at the end belong to no tensor"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4,8]}}", 0, 8,
     "more than two"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4]}}", 0, 4,
     "[begin, end] pair"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":{}}}", 0, 4,
     "[begin, end] pair"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]}}",
     0, 8, "duplicate tensor name \"a\""},
    {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[],"
     "\"data_offsets\":[0,4]}}",
     0, 4, "duplicate key \"dtype\""},
    {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 0, 4,
     "missing key \"shape\""},
    {"{\"a\":{\"shape\":[],\"data_offsets\":[0,4]}}", 0, 4,
     "missing key \"dtype\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[]}}", 0, 4,
     "missing key \"data_offsets\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"offsets\":[0,4]}}", 0, 4,
     "unknown key \"offsets\""},
    {"{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
     0, 4, "contains NUL"},
    {"{\"__metadata__\":[]}", 0, 0, "__metadata__ is not an object"},
    {"{\"__metadata__\":{\"k\":1}}", 0, 0, "is not a string"},
    {"{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, 0,
     "duplicate __metadata__ key \"k\""},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, 0,
     "duplicate __metadata__"},
    {"{\"__metadata__\":{\"k\":\"a\\u0000\"}}", 0, 0, "contains NUL"},
    /* Names printed in messages lose their control bytes. */
    {"{\"\\u001b[31m\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,"
     "2]}}",
     0, 2, "tensor \"?[31m\""},
};

static unsigned char *with_header(const char *header, size_t hlen, size_t data,
                                  size_t *len) {
  *len = 8 + hlen + data;
  unsigned char *b = calloc(1, *len);
  for (int i = 0; i < 8; i++)
    b[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
  memcpy(b + 8, header, hlen);
  return b;
}

/* Each case fails the same way from memory and from a file, and leaves
 * the output empty. */
static void expect_rejected(void **state, const unsigned char *b, size_t len,
                            const char *want) {
  const char *p = scratch(state, "hostile.safetensors");
  write_bytes(p, b, len);
  rt_tensors t;
  char err[512] = "";
  assert_error(rt_safetensors_read(p, &t, err, sizeof err), err, p, want);
  assert_int_equal(t.n, 0);
  assert_null(t.v);
  assert_null(t.meta);
  err[0] = 0;
  assert_error(rt_safetensors_parse(b, len, "buf", &t, err, sizeof err), err,
               "buf: ", want);
  assert_int_equal(t.n, 0);
}

static void safetensors_hostile(void **state) {
  for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
    const Hostile *h = &hostile[i];
    size_t len, hlen = h->hlen ? h->hlen : strlen(h->header);
    unsigned char *b = with_header(h->header, hlen, h->data, &len);
    expect_rejected(state, b, len, h->want);
    free(b);
  }
}

static void safetensors_hostile_lengths(void **state) {
  unsigned char b[32] = {0};
  expect_rejected(state, b, 0, "too short");
  expect_rejected(state, b, 7, "too short");
  b[0] = 9; /* one more than the bytes after it */
  memcpy(b + 8, "{}      ", 8);
  expect_rejected(state, b, 16, "runs past the end of the file");
  memset(b, 0xff, 8);
  expect_rejected(state, b, 16, "absurd");
  const uint64_t over = RT_SAFETENSORS_MAX_HEADER + 1u;
  for (int i = 0; i < 8; i++)
    b[i] = (unsigned char)(over >> (8 * i));
  expect_rejected(state, b, 16, "absurd");

  char err[256];
  rt_tensors t;
  const char *p = scratch(state, "absent.safetensors");
  assert_error(rt_safetensors_read(p, &t, err, sizeof err), err, p,
               "No such file");
  Scratch *s = *state;
  assert_error(rt_safetensors_read(s->dir, &t, err, sizeof err), err, s->dir,
               "not a regular file");
  /* No err buffer: still a clean failure. */
  assert_int_equal(rt_safetensors_parse(b, 3, NULL, &t, NULL, 0), -1);
  assert_int_equal(rt_safetensors_parse(b, 3, NULL, &t, err, 8), -1);
  assert_int_equal(strlen(err), 7);
}

/* Deep nesting is refused by a depth limit, never by running out of
 * stack. */
static void safetensors_deep_nesting(void **state) {
  size_t depth = 200000, n = 0;
  char *h = malloc(2 * depth + 16);
  n += (size_t)sprintf(h, "{\"a\":");
  for (size_t i = 0; i < depth; i++)
    h[n++] = '[';
  for (size_t i = 0; i < depth; i++)
    h[n++] = ']';
  h[n++] = '}';
  size_t len;
  unsigned char *b = with_header(h, n, 0, &len);
  expect_rejected(state, b, len, "nests deeper than 16 levels");
  free(b);
  b = with_header(h + 5, depth, 0, &len); /* unclosed */
  expect_rejected(state, b, len, "nests deeper");
  free(b);
  free(h);
}

/* Every prefix of a good file and every single-byte change in its header
 * either parses or fails cleanly; the sanitizers watch for the rest. */
static void safetensors_truncations_and_flips(void **state) {
  rt_tensors t = {0};
  fill_all_dtypes(&t);
  const char *p = scratch(state, "flip.safetensors");
  char err[256];
  assert_int_equal(rt_safetensors_write(p, &t, err, sizeof err), 0);
  rt_tensors_free(&t);
  unsigned char *buf;
  size_t len;
  assert_int_equal(rt_read_file(p, &buf, &len, err, sizeof err), 0);
  for (size_t cut = 0; cut < len; cut++) {
    assert_int_equal(rt_safetensors_parse(buf, cut, "cut", &t, err, sizeof err),
                     -1);
    assert_int_equal(t.n, 0);
  }
  size_t hdr = 8 + buf[0] + 256u * buf[1];
  int accepted = 0;
  for (size_t i = 0; i < hdr; i++)
    for (int bit = 0; bit < 8; bit++) {
      buf[i] ^= (unsigned char)(1u << bit);
      int rc = rt_safetensors_parse(buf, len, "flip", &t, err, sizeof err);
      assert_true(rc == 0 || (rc == -1 && t.n == 0 && strlen(err) > 6));
      accepted += rc == 0;
      rt_tensors_free(&t);
      buf[i] ^= (unsigned char)(1u << bit);
    }
  /* Only flips inside names, metadata values or padding can survive. */
  assert_true(accepted > 0 && accepted < (int)hdr * 4);
  free(buf);
}

static void safetensors_write_refuses(void **state) {
  const char *p = scratch(state, "keep.safetensors");
  char err[256] = "";
  rt_tensors t = {0};
  assert_int_equal(rt_tensors_add(&t, "w", RT_F32, 0, NULL, NULL), 0);
  assert_int_equal(rt_safetensors_write(p, &t, err, sizeof err), 0);

  t.v[0].nbytes = 8; /* disagrees with the shape */
  assert_error(rt_safetensors_write(p, &t, err, sizeof err), err, p,
               "disagree");
  t.v[0].nbytes = 4;
  t.v[0].name[0] = '\xff';
  assert_error(rt_safetensors_write(p, &t, err, sizeof err), err, p, "UTF-8");
  t.v[0].name[0] = 'w';
  assert_int_equal(rt_tensors_set_meta(&t, "k", "\xc3"), 0);
  assert_error(rt_safetensors_write(p, &t, err, sizeof err), err, p,
               "__metadata__");
  rt_tensors_free(&t);

  rt_tensors back;
  assert_int_equal(rt_safetensors_read(p, &back, err, sizeof err), 0);
  assert_int_equal(back.n, 1); /* the refused writes changed nothing */
  const char *q = scratch(state, "no/such/dir.safetensors");
  assert_error(rt_safetensors_write(q, &back, err, sizeof err), err, q,
               "No such file");
  rt_tensors_free(&back);
}

/* --- IDX ---------------------------------------------------------------- */

static void fashion_mnist(void **state) {
  (void)state;
  if (!file_exists(FASHION "t10k-labels-idx1-ubyte.gz"))
    skip();
  rt_idx x;
  char err[256] = "";
  assert_int_equal(
      rt_idx_read(FASHION "t10k-labels-idx1-ubyte.gz", &x, err, sizeof err), 0);
  assert_int_equal(x.type, RT_IDX_U8);
  assert_int_equal(x.dtype, RT_U8);
  assert_int_equal(x.ndim, 1);
  assert_int_equal(x.dims[0], 10000);
  const unsigned char first[] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
  assert_memory_equal(x.data, first, sizeof first);
  long counts[10] = {0};
  for (int64_t i = 0; i < x.count; i++) {
    unsigned char l = ((const unsigned char *)x.data)[i];
    assert_true(l < 10);
    counts[l]++;
  }
  for (int c = 0; c < 10; c++)
    assert_int_equal(counts[c], 1000);
  rt_idx_free(&x);

  assert_int_equal(
      rt_idx_read(FASHION "t10k-images-idx3-ubyte.gz", &x, err, sizeof err), 0);
  assert_int_equal(x.ndim, 3);
  assert_int_equal(x.dims[0], 10000);
  assert_int_equal(x.dims[1], 28);
  assert_int_equal(x.dims[2], 28);
  assert_int_equal(x.nbytes, 7840000);
  uint64_t sum = 0;
  for (size_t i = 0; i < x.nbytes; i++)
    sum += ((const unsigned char *)x.data)[i];
  assert_int_equal(sum, 573469082);
  rt_idx_free(&x);
  assert_null(x.data);
}

/* 00 00 type ndim, dims, then payload, all big-endian as written. */
static size_t idx_bytes(unsigned char *b, int type, int ndim,
                        const uint32_t *dims, const void *payload,
                        size_t plen) {
  size_t n = 0;
  b[n++] = 0;
  b[n++] = 0;
  b[n++] = (unsigned char)type;
  b[n++] = (unsigned char)ndim;
  for (int i = 0; i < ndim; i++)
    for (int k = 3; k >= 0; k--)
      b[n++] = (unsigned char)(dims[i] >> (8 * k));
  memcpy(b + n, payload, plen);
  return n + plen;
}

static void idx_plain(void **state) {
  const char *p = scratch(state, "small.idx");
  unsigned char b[256];
  char err[256] = "";
  rt_idx x;
  const uint32_t d23[2] = {2, 3}, d2[1] = {2}, d0[2] = {5, 0};

  const unsigned char i32[24] = {0,    0, 0, 1, 0xff, 0xff, 0xff, 0xfe,
                                 0,    1, 0, 0, 0x7f, 0xff, 0xff, 0xff,
                                 0x80, 0, 0, 0, 0,    0,    0,    0};
  write_bytes(p, b, idx_bytes(b, RT_IDX_I32, 2, d23, i32, 24));
  assert_int_equal(rt_idx_read(p, &x, err, sizeof err), 0);
  assert_int_equal(x.dtype, RT_I32);
  assert_int_equal(x.count, 6);
  const int32_t want32[6] = {1, -2, 65536, INT32_MAX, INT32_MIN, 0};
  assert_memory_equal(x.data, want32, sizeof want32);
  rt_idx_free(&x);

  const unsigned char f32[8] = {0x3f, 0xc0, 0, 0, 0xbe, 0x80, 0, 0};
  write_bytes(p, b, idx_bytes(b, RT_IDX_F32, 1, d2, f32, 8));
  assert_int_equal(rt_idx_read(p, &x, err, sizeof err), 0);
  assert_true(((float *)x.data)[0] == 1.5f && ((float *)x.data)[1] == -0.25f);
  rt_idx_free(&x);

  const unsigned char f64[16] = {0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18,
                                 0xbf, 0xf0, 0,    0,    0,    0,    0,    0};
  write_bytes(p, b, idx_bytes(b, RT_IDX_F64, 1, d2, f64, 16));
  assert_int_equal(rt_idx_read(p, &x, err, sizeof err), 0);
  assert_true(((double *)x.data)[0] == 3.141592653589793);
  assert_true(((double *)x.data)[1] == -1.0);
  rt_idx_free(&x);

  const unsigned char i16[4] = {0x12, 0x34, 0xff, 0xff};
  write_bytes(p, b, idx_bytes(b, RT_IDX_I16, 1, d2, i16, 4));
  assert_int_equal(rt_idx_read(p, &x, err, sizeof err), 0);
  assert_int_equal(((int16_t *)x.data)[0], 0x1234);
  assert_int_equal(((int16_t *)x.data)[1], -1);
  rt_idx_free(&x);

  write_bytes(p, b, idx_bytes(b, RT_IDX_I8, 1, d2, "\x80\x7f", 2));
  assert_int_equal(rt_idx_read(p, &x, err, sizeof err), 0);
  assert_int_equal(x.dtype, RT_I8);
  assert_int_equal(((int8_t *)x.data)[0], -128);
  rt_idx_free(&x);

  write_bytes(p, b, idx_bytes(b, RT_IDX_U8, 2, d0, "", 0));
  assert_int_equal(rt_idx_read(p, &x, err, sizeof err), 0);
  assert_int_equal(x.count, 0);
  assert_non_null(x.data);
  rt_idx_free(&x);
}

static void write_gzip(const char *path, const void *p, size_t n) {
  gzFile gz = gzopen(path, "wb");
  assert_non_null(gz);
  assert_int_equal(gzwrite(gz, p, (unsigned)n), (int)n);
  assert_int_equal(gzclose(gz), Z_OK);
}

/* Larger than the reader's first buffer, so the buffer has to grow. */
static void idx_gzip(void **state) {
  const uint32_t dims[3] = {3, 1000, 700};
  size_t plen = 3 * 1000 * 700;
  unsigned char *b = malloc(16 + plen);
  unsigned char *payload = malloc(plen);
  for (size_t i = 0; i < plen; i++)
    payload[i] = (unsigned char)(i * 7 + i / 1000);
  size_t n = idx_bytes(b, RT_IDX_U8, 3, dims, payload, plen);
  const char *p = scratch(state, "big.idx.gz");
  write_gzip(p, b, n);
  rt_idx x;
  char err[256] = "";
  assert_int_equal(rt_idx_read(p, &x, err, sizeof err), 0);
  assert_int_equal(x.dims[2], 700);
  assert_int_equal(x.nbytes, plen);
  assert_memory_equal(x.data, payload, plen);
  rt_idx_free(&x);

  const uint32_t d2[1] = {2};
  n = idx_bytes(b, RT_IDX_I16, 1, d2, "\xfe\xdc\x00\x01", 4);
  write_gzip(p, b, n);
  assert_int_equal(rt_idx_read(p, &x, err, sizeof err), 0);
  assert_int_equal(((int16_t *)x.data)[0], (int16_t)0xfedc);
  assert_int_equal(((int16_t *)x.data)[1], 1);
  rt_idx_free(&x);
  free(payload);
  free(b);
}

static void idx_expect(void **state, const void *b, size_t n, int gz,
                       const char *want) {
  const char *p = scratch(state, gz ? "bad.idx.gz" : "bad.idx");
  if (gz)
    write_gzip(p, b, n);
  else
    write_bytes(p, b, n);
  rt_idx x;
  char err[256] = "";
  assert_error(rt_idx_read(p, &x, err, sizeof err), err, p, want);
  assert_null(x.data);
  assert_int_equal(x.ndim, 0);
}

static void idx_hostile(void **state) {
  unsigned char b[128];
  const uint32_t d3[1] = {3}, huge[4] = {0xffffffff, 0xffffffff, 0xffffffff, 2},
                 tera[3] = {65536, 65536, 256};
  for (int gz = 0; gz < 2; gz++) {
    idx_expect(state, b, 0, gz, "ends inside the 4-byte magic");
    idx_expect(state, "\0\0\x08", 3, gz, "ends inside the 4-byte magic");
    idx_expect(state, "\x01\0\x08\x01", 4, gz, "not an IDX file");
    idx_expect(state, "\0\0\x0a\x01\0\0\0\0", 8, gz, "unknown IDX element");
    idx_expect(state, "\0\0\x08\x00", 4, gz, "0 dimensions");
    idx_expect(state, "\0\0\x08\x09", 4, gz, "9 dimensions");
    idx_expect(state, "\0\0\x08\x02\0\0\0\x01\0\0", 10, gz,
               "ends inside the dimensions");
    idx_expect(state, b, idx_bytes(b, RT_IDX_U8, 4, huge, "", 0), gz,
               "overflows 64 bits");
    idx_expect(state, b, idx_bytes(b, RT_IDX_I32, 1, d3, "12345678", 8), gz,
               "truncated");
    idx_expect(state, b, idx_bytes(b, RT_IDX_U8, 1, d3, "1234", 4), gz,
               gz ? "data continues past the 3 bytes" : "more than the 11");
    /* Claims a terabyte: refused without allocating it. */
    idx_expect(state, b, idx_bytes(b, RT_IDX_U8, 3, tera, "12", 2), gz,
               "truncated");
  }

  /* Damaged gzip streams. */
  const uint32_t dims[1] = {4000};
  unsigned char *raw = malloc(8 + 4000);
  for (int i = 0; i < 4000; i++)
    raw[8 + i] = (unsigned char)(i * i);
  size_t n = idx_bytes(raw, RT_IDX_U8, 1, dims, raw + 8, 4000);
  const char *p = scratch(state, "good.idx.gz");
  write_gzip(p, raw, n);
  unsigned char *z;
  size_t zlen;
  char err[256];
  assert_int_equal(rt_read_file(p, &z, &zlen, err, sizeof err), 0);
  z[zlen - 6] ^= 0x55; /* the CRC */
  idx_expect(state, z, zlen, 0, "corrupt gzip data: incorrect data check");
  z[zlen - 6] ^= 0x55;
  idx_expect(state, z, zlen / 2, 0, "corrupt gzip data");
  z[3] = 0xe0; /* reserved flag bits */
  idx_expect(state, z, zlen, 0, "corrupt gzip data");
  z[3] = 0;
  /* Flipping any byte of the compressed stream fails cleanly or, if it
   * hits the optional header fields, changes nothing. */
  for (size_t i = 0; i < zlen; i++) {
    z[i] ^= 0xa5;
    const char *q = scratch(state, "flip.idx.gz");
    write_bytes(q, z, zlen);
    rt_idx x;
    int rc = rt_idx_read(q, &x, err, sizeof err);
    if (rc == 0)
      assert_memory_equal(x.data, raw + 8, 4000);
    rt_idx_free(&x);
    z[i] ^= 0xa5;
  }
  free(z);
  free(raw);

  rt_idx x;
  p = scratch(state, "absent.idx");
  assert_error(rt_idx_read(p, &x, err, sizeof err), err, p, "No such file");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(dtypes),
      cmocka_unit_test(tensor_sets),
      cmocka_unit_test(read_whole_file),
      cmocka_unit_test(safetensors_round_trip),
      cmocka_unit_test(safetensors_by_hand),
      cmocka_unit_test(safetensors_reference_bytes),
      cmocka_unit_test(safetensors_hostile),
      cmocka_unit_test(safetensors_hostile_lengths),
      cmocka_unit_test(safetensors_deep_nesting),
      cmocka_unit_test(safetensors_truncations_and_flips),
      cmocka_unit_test(safetensors_write_refuses),
      cmocka_unit_test(fashion_mnist),
      cmocka_unit_test(idx_plain),
      cmocka_unit_test(idx_gzip),
      cmocka_unit_test(idx_hostile),
  };
  return cmocka_run_group_tests_name("runtime", tests, make_scratch,
                                     remove_scratch);
}
