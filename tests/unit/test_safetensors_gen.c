/* The safetensors loader and saver printed into generated models
 * (compiler/emit_c_safetensors.c.in), instantiated with the prefix "t":
 * round trips, a file written by hand from the format's description, and a
 * catalogue of bad files, each of which must fail with a message naming the
 * tensor and the problem, leave the model untouched and read nothing
 * outside the buffer (files live in exactly sized heap blocks, so ASan sees
 * any overread). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* What the compiler emits before the template. */
typedef struct t_tensor {
  const char *name;
  int dtype;
  int ndim;
  int64_t shape[4];
  size_t offset;
  size_t numel;
} t_tensor;

#include "safetensors_t.c"

static const t_tensor tab[] = {
    {"a.weight", 0, 2, {2, 3}, 0, 6},
    {"a.bias", 0, 1, {2}, 6, 2},
    {"bn.num_batches_tracked", 1, 0, {0}, 0, 1},
};
enum { NTAB = 3 };

/* The model's state; SENTINEL marks what a failed load must not touch. */
typedef struct Model {
  float f32[8];
  int64_t i64[1];
} Model;
#define SENTINEL -99.0f

static Model model_filled(void) {
  Model m;
  for (int k = 0; k < 8; k++)
    m.f32[k] = (float)k + 0.5f;
  m.i64[0] = 7;
  return m;
}

static Model model_sentinel(void) {
  Model m;
  for (int k = 0; k < 8; k++)
    m.f32[k] = SENTINEL;
  m.i64[0] = -1;
  return m;
}

/* A file in a heap block of exactly its size: the 8-byte little-endian
 * header length, the header, then the data. */
typedef struct File {
  unsigned char *b;
  size_t len;
} File;

static File file_raw(uint64_t hlen, const char *json, size_t jlen,
                     const void *data, size_t datalen) {
  File f;
  f.len = 8 + jlen + datalen;
  f.b = malloc(f.len ? f.len : 1);
  for (int k = 0; k < 8; k++)
    f.b[k] = (unsigned char)(hlen >> 8 * k);
  memcpy(f.b + 8, json, jlen);
  if (datalen)
    memcpy(f.b + 8 + jlen, data, datalen);
  return f;
}

static File file_of(const char *json, const void *data, size_t datalen) {
  return file_raw(strlen(json), json, strlen(json), data, datalen);
}

static File file_copy(const unsigned char *b, size_t len) {
  File f = {malloc(len ? len : 1), len};
  memcpy(f.b, b, len);
  return f;
}

/* Bytes of a value in the file's (little-endian) order, built without
 * assuming the host's. */
static void put_le(unsigned char *out, uint64_t v, int n) {
  for (int k = 0; k < n; k++)
    out[k] = (unsigned char)(v >> 8 * k);
}

static void put_f32(unsigned char *out, float x) {
  uint32_t bits;
  memcpy(&bits, &x, 4);
  put_le(out, bits, 4);
}

/* The data of model_filled() in table order: 6 + 2 floats, one int64. */
static void standard_data(unsigned char *d) {
  Model m = model_filled();
  for (int k = 0; k < 8; k++)
    put_f32(d + 4 * k, m.f32[k]);
  put_le(d + 32, (uint64_t)m.i64[0], 8);
}

#define W                                                                      \
  "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"
#define B                                                                      \
  "\"a.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}"
#define N                                                                      \
  "\"bn.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],"                \
  "\"data_offsets\":[32,40]}"

static void round_trip(void **state) {
  (void)state;
  Model m = model_filled(), back = model_sentinel();
  size_t size = t_st_size(tab, NTAB);
  unsigned char *buf = malloc(size);
  char err[256] = "unset";
  const char *json = "{" W "," B "," N "}";
  uint64_t hlen = 0;

  assert_int_equal(t_st_save(buf, size - 1, tab, NTAB, m.f32, m.i64), 0);
  assert_int_equal(t_st_save(buf, size, tab, NTAB, m.f32, m.i64), size);
  for (int k = 7; k >= 0; k--)
    hlen = hlen << 8 | buf[k];
  assert_int_equal((8 + hlen) % 8, 0);
  assert_int_equal(8 + hlen + 40, size);
  /* The header is exactly the canonical JSON, padded with spaces. */
  assert_memory_equal(buf + 8, json, strlen(json));
  for (size_t k = 8 + strlen(json); k < 8 + hlen; k++)
    assert_int_equal(buf[k], ' ');

  assert_int_equal(
      t_st_load(buf, size, tab, NTAB, back.f32, back.i64, err, sizeof err), 0);
  assert_string_equal(err, "");
  assert_memory_equal(&back, &m, sizeof m);
  free(buf);
}

/* Names the writer must escape and the reader must decode. */
static void escaped_names(void **state) {
  (void)state;
  static const t_tensor odd[] = {
      {"q\"uote\\back\x01slash/", 0, 1, {1}, 0, 1},
      {"caf\xc3\xa9", 0, 1, {1}, 1, 1},
      {"smile\xf0\x9f\x98\x80", 0, 1, {1}, 2, 1},
  };
  float f[3] = {1, 2, 3}, g[3] = {0};
  unsigned char buf[512];
  char err[256];
  size_t n = t_st_save(buf, sizeof buf, odd, 3, f, NULL);
  assert_true(n > 0);
  assert_memory_equal(buf + 8, "{\"q\\\"uote\\\\back\\u0001slash/\":", 29);
  assert_int_equal(t_st_load(buf, n, odd, 3, g, NULL, err, sizeof err), 0);
  assert_memory_equal(f, g, sizeof f);

  /* The same names, written with every kind of escape. */
  unsigned char d[12];
  for (int k = 0; k < 3; k++)
    put_f32(d + 4 * k, (float)(k + 10));
  File file = file_of(
      "{\"q\\\"uote\\\\back\\u0001slash\\/\":"
      "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
      "\"caf\\u00E9\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
      "\"smile\\ud83d\\ude00\":"
      "{\"dtype\":\"\\u0046\\u0033\\u0032\",\"shape\":[1],"
      "\"data_offsets\":[8,12]}}",
      d, sizeof d);
  assert_int_equal(
      t_st_load(file.b, file.len, odd, 3, g, NULL, err, sizeof err), 0);
  assert_true(g[0] == 10 && g[1] == 11 && g[2] == 12);
  free(file.b);
}

/* A file built byte by byte from the format's description, the way another
 * writer might lay it out: white space, keys in another order, data in
 * another order, metadata. */
static void handmade_file(void **state) {
  (void)state;
  const char *json =
      "{\n"
      "  \"__metadata__\": {\"format\": \"pt\", \"note\": \"a \\\"q\\\" "
      "\\u00e9 \\ud83d\\ude00\"},\r\n"
      "  \"bn.num_batches_tracked\": {\"data_offsets\": [0, 8], "
      "\"shape\": [], \"dtype\": \"I64\"},\n"
      "  \"a.bias\" : { \"shape\" : [ 2 ] , \"data_offsets\": [8, 16],\t"
      "\"dtype\": \"F32\" },\n"
      "  \"a.weight\": {\"data_offsets\": [16, 40], \"dtype\": \"F32\", "
      "\"shape\": [2, 3]}\n"
      "}      ";
  unsigned char d[40];
  const float w[6] = {1, -2, 3.25f, 0, 1e-3f, 6}, bias[2] = {0.5f, -0.5f};
  put_le(d, 123456789012345ull, 8);
  for (int k = 0; k < 2; k++)
    put_f32(d + 8 + 4 * k, bias[k]);
  for (int k = 0; k < 6; k++)
    put_f32(d + 16 + 4 * k, w[k]);
  File f = file_of(json, d, sizeof d);
  Model m = model_sentinel();
  char err[256];
  assert_int_equal(
      t_st_load(f.b, f.len, tab, NTAB, m.f32, m.i64, err, sizeof err), 0);
  assert_memory_equal(m.f32, w, sizeof w);
  assert_memory_equal(m.f32 + 6, bias, sizeof bias);
  assert_int_equal(m.i64[0], 123456789012345ll);
  free(f.b);
}

/* BatchNorm's counter may be absent; it is then left as it was. */
static void optional_counter(void **state) {
  (void)state;
  unsigned char d[40];
  standard_data(d);
  File f = file_of("{" W "," B "}", d, 32);
  Model m = model_sentinel(), want = model_filled();
  char err[256];
  assert_int_equal(
      t_st_load(f.b, f.len, tab, NTAB, m.f32, m.i64, err, sizeof err), 0);
  assert_memory_equal(m.f32, want.f32, sizeof want.f32);
  assert_int_equal(m.i64[0], -1);
  free(f.b);

  /* An empty model loads an empty file, and nothing else. */
  f = file_of("{}", NULL, 0);
  assert_int_equal(t_st_load(f.b, f.len, tab, 0, NULL, NULL, err, sizeof err),
                   0);
  assert_int_equal(
      t_st_load(f.b, f.len, tab, NTAB, m.f32, m.i64, err, sizeof err), -1);
  assert_string_equal(err, "tensor 'a.weight' is missing from the file");
  free(f.b);
}

/* Loads f, which must fail with a message containing want and leave the
 * model untouched. */
static void expect_error(File f, const char *want) {
  Model m = model_sentinel(), before = m;
  char err[512];
  memset(err, 'x', sizeof err);
  int r = t_st_load(f.b, f.len, tab, NTAB, m.f32, m.i64, err, sizeof err);
  assert_non_null(memchr(err, 0, sizeof err));
  if (r != -1 || !strstr(err, want))
    fail_msg("load returned %d with \"%s\"; wanted -1 with \"%s\"", r, err,
             want);
  assert_memory_equal(&m, &before, sizeof m);
  free(f.b);
}

static void bad_tensors(void **state) {
  (void)state;
  static const struct {
    const char *json, *want;
  } cases[] = {
      {"{" W "," N "}", "tensor 'a.bias' is missing from the file"},
      {"{" W "," B "," N ",\"c.weight\":{\"dtype\":\"F32\",\"shape\":[1],"
       "\"data_offsets\":[0,4]}}",
       "unexpected tensor 'c.weight' in the file"},
      {"{" W ",\"a.bias\":{\"dtype\":\"F16\",\"shape\":[2],"
       "\"data_offsets\":[24,28]}," N "}",
       "tensor 'a.bias' has dtype F16 in the file, but the model needs F32"},
      {"{" W "," B ",\"bn.num_batches_tracked\":{\"dtype\":\"F32\","
       "\"shape\":[],\"data_offsets\":[32,36]}}",
       "tensor 'bn.num_batches_tracked' has dtype F32 in the file, but the "
       "model needs I64"},
      {"{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[3,2],"
       "\"data_offsets\":[0,24]}," B "," N "}",
       "tensor 'a.weight' has shape [3, 2] in the file, but the model needs "
       "[2, 3]"},
      {"{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3,1],"
       "\"data_offsets\":[0,24]}," B "," N "}",
       "has shape [2, 3, 1] in the file"},
      {"{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2,3],"
       "\"data_offsets\":[0,24]}," B "," N "}",
       "has shape [1, 1, 1, 1, 1, 1, 1, 1, ...] in the file"},
      {"{" W "," N ",\"a.bias\":{\"dtype\":\"F32\",\"shape\":[2],"
       "\"data_offsets\":[24,28]}}",
       "tensor 'a.bias' has 4 bytes of data in the file, but the model needs "
       "8"},
      {"{" W "," N ",\"a.bias\":{\"dtype\":\"F32\",\"shape\":[2],"
       "\"data_offsets\":[24,1000]}}",
       "tensor 'a.bias' has data_offsets [24, 1000], out of range of the 40 "
       "bytes of data in the file"},
      {"{" W "," N ",\"a.bias\":{\"dtype\":\"F32\",\"shape\":[2],"
       "\"data_offsets\":[18446744073709551615,18446744073709551615]}}",
       "out of range"},
      {"{" W "," N ",\"a.bias\":{\"dtype\":\"F32\",\"shape\":[2],"
       "\"data_offsets\":[32,24]}}",
       "tensor 'a.bias' has data_offsets [32, 24], which are reversed"},
      {"{" W "," B "," B "," N "}", "tensor 'a.bias' appears twice"},
      /* The same name, once escaped: names compare after decoding. */
      {"{" W "," B ",\"a.\\u0062ias\":{\"dtype\":\"F32\",\"shape\":[2],"
       "\"data_offsets\":[24,32]}," N "}",
       "tensor 'a.bias' appears twice"},
      {"{" W "," N ",\"a.bias\":{\"shape\":[2],\"data_offsets\":[24,32]}}",
       "tensor 'a.bias' has no \"dtype\" in the file"},
      {"{" W "," N ",\"a.bias\":{\"dtype\":\"F32\",\"data_offsets\":[24,32]}}",
       "tensor 'a.bias' has no \"shape\" in the file"},
      {"{" W "," N ",\"a.bias\":{\"dtype\":\"F32\",\"shape\":[2]}}",
       "tensor 'a.bias' has no \"data_offsets\" in the file"},
      /* Exact matching: no prefixes, no case folding, no escaped NUL. */
      {"{" W "," B "," N ",\"a.bia\":{}}", "unexpected tensor 'a.bia'"},
      {"{" W "," B "," N ",\"A.bias\":{}}", "unexpected tensor 'A.bias'"},
      {"{" W "," N ",\"a.bias\\u0000\":{}}", "unexpected tensor 'a.bias?'"},
      {"{" W "," B "," N ",\"a.weight\\n\":{}}",
       "unexpected tensor 'a.weight?'"},
      {"{}", "tensor 'a.weight' is missing from the file"},
  };
  unsigned char d[40];
  standard_data(d);
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
    expect_error(file_of(cases[k].json, d, sizeof d), cases[k].want);

  /* A name too long to be in the model is shown cut. */
  char json[1024], want[512];
  memset(want, 0, sizeof want);
  memset(json, 0, sizeof json);
  strcpy(json, "{\"");
  memset(json + 2, 'n', 300);
  strcat(json, "\":{}}");
  strcpy(want, "unexpected tensor '");
  memset(want + strlen(want), 'n', 255);
  strcat(want, "...' in the file");
  expect_error(file_of(json, d, sizeof d), want);
}

static void bad_json(void **state) {
  (void)state;
  static const char *const cases[] = {
      "",
      " ",
      "[]",
      "{",
      "{\"a.weight\"",
      "{\"a.weight\":",
      "{\"a.weight\":{",
      "{\"a.weight\":{\"dtype\"",
      "{\"a.weight\":{\"dtype\":\"F32",
      "{\"a.weight\":{\"dtype\":\"F32\\",
      "{\"a.weight\":{\"shape\":[2,",
      "{\"a.weight\":{\"shape\":[2",
      "{\"a.weight\":{\"shape\":[2 3]}}",
      "{\"a.weight\":{\"shape\":[,]}}",
      "{\"a.weight\":{\"shape\":[2,]}}",
      "{" W "}}",
      "{" W ",}",
      "{" W " " B "}",
      "{" W "," B "," N "} x",
      "{\"a.weight\" {}}",
      "{a.weight:{}}",
      "{'a.weight':{}}",
      "{\"a.we\nght\":{}}",
      "{\"a.we\\ight\":{}}",
      "{\"a.we\\u00\":{}}",
      "{\"a.we\\u00g1\":{}}",
      "{\"a.we\\udc00\":{}}",
      "{\"a.we\\ud800\":{}}",
      "{\"a.we\\ud800\\u0041\":{}}",
      "{\"a.we\\ud800\\",
      "{\"a.weight\":{\"data_offsets\":[0,024]}}",
      "{\"a.weight\":{\"data_offsets\":[-0,24]}}",
      "{\"a.weight\":{\"data_offsets\":[0,24.0]}}",
      "{\"a.weight\":{\"data_offsets\":[0,2e1]}}",
      "{\"a.weight\":{\"data_offsets\":[0,18446744073709551616]}}",
      "{\"a.weight\":{\"data_offsets\":[0]}}",
      "{\"a.weight\":{\"data_offsets\":[0,24,48]}}",
      "{\"a.weight\":{\"data_offsets\":\"0,24\"}}",
      "{\"a.weight\":{\"shape\":2}}",
      "{\"a.weight\":{\"dtype\":32}}",
      "{\"a.weight\":{\"dtype\":\"F32\",\"dtype\":\"F32\"}}",
      "{\"a.weight\":{\"dtypes\":\"F32\"}}",
      "{\"a.weight\":[]}",
      "{\"a.weight\":null}",
      "{\"__metadata__\":{\"format\":1}}",
      "{\"__metadata__\":{\"format\":{}}}",
      "{\"__metadata__\":[]}",
      "{\"__metadata__\":\"pt\"}",
      "{\"__metadata__\":{\"a\" \"b\"}}",
  };
  unsigned char d[40];
  standard_data(d);
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
    expect_error(file_of(cases[k], d, sizeof d), "invalid safetensors header");
  /* A NUL inside the header is not white space. */
  expect_error(file_raw(5, "{}\0  ", 5, d, 0), "invalid safetensors header");
}

static void bad_framing(void **state) {
  (void)state;
  static const unsigned char tiny[5] = {2, 0, 0, 0, 0};
  unsigned char d[40];
  standard_data(d);
  expect_error(file_copy(tiny, 0),
               "the file has 0 bytes, too short for a safetensors header");
  expect_error(file_copy(tiny, 5),
               "the file has 5 bytes, too short for a safetensors header");
  expect_error(file_raw(1000, "{}", 2, d, sizeof d),
               "the safetensors header claims 1000 bytes, but the file has "
               "only 42 after the length field");
  expect_error(file_raw(UINT64_MAX, "{}", 2, d, sizeof d),
               "not a safetensors file: its header length field reads "
               "18446744073709551615");
  /* A zip archive (PyTorch's .pt format) is told apart. */
  expect_error(file_raw(0x0008000004034b50ull, "", 0, d, sizeof d),
               "not a safetensors file");
  expect_error(file_raw(0, "", 0, d, sizeof d), "invalid safetensors header");

  /* Every proper prefix of a good file is bad. */
  File good = file_of("{" W "," B "," N "}", d, sizeof d);
  for (size_t k = 0; k < good.len; k++) {
    Model m = model_sentinel(), before = m;
    File f = file_copy(good.b, k);
    char err[256];
    assert_int_equal(
        t_st_load(f.b, f.len, tab, NTAB, m.f32, m.i64, err, sizeof err), -1);
    assert_true(err[0] != '\0');
    assert_memory_equal(&m, &before, sizeof m);
    free(f.b);
  }
  free(good.b);
}

/* Whatever a byte of the file is changed to, the loader stays inside the
 * buffer and either loads or explains. */
static void corrupted_bytes(void **state) {
  (void)state;
  static const unsigned char with[] = {0,   ' ', '"',  '\\', '{', '}',
                                       '[', ']', ',',  ':',  '0', '9',
                                       'u', 'd', 0x80, 0xff};
  unsigned char d[40];
  standard_data(d);
  File good = file_of(
      "{\"__metadata__\":{\"k\":\"v\\u00e9\"}," W "," B "," N "}", d, sizeof d);
  for (size_t k = 0; k < good.len - 40; k++)
    for (size_t v = 0; v < sizeof with; v++) {
      Model m = model_sentinel();
      File f = file_copy(good.b, good.len);
      char err[64];
      f.b[k] = with[v];
      int r = t_st_load(f.b, f.len, tab, NTAB, m.f32, m.i64, err, sizeof err);
      assert_true(r == 0 || r == -1);
      assert_non_null(memchr(err, 0, sizeof err));
      assert_true(r == 0 ? err[0] == '\0' : err[0] != '\0');
      free(f.b);
    }
  free(good.b);
}

static void message_buffer(void **state) {
  (void)state;
  unsigned char d[40];
  Model m = model_sentinel();
  char err[16];
  standard_data(d);
  File f = file_of("{" W "," N "}", d, sizeof d);

  assert_int_equal(t_st_load(f.b, f.len, tab, NTAB, m.f32, m.i64, NULL, 100),
                   -1);
  assert_int_equal(t_st_load(f.b, f.len, tab, NTAB, m.f32, m.i64, NULL, 0), -1);

  memset(err, 'x', sizeof err);
  assert_int_equal(t_st_load(f.b, f.len, tab, NTAB, m.f32, m.i64, err, 10), -1);
  assert_string_equal(err, "tensor 'a");
  assert_int_equal(err[10], 'x');

  memset(err, 'x', sizeof err);
  assert_int_equal(t_st_load(f.b, f.len, tab, NTAB, m.f32, m.i64, err, 1), -1);
  assert_int_equal(err[0], '\0');
  assert_int_equal(err[1], 'x');

  memset(err, 'x', sizeof err);
  assert_int_equal(t_st_load(f.b, f.len, tab, NTAB, m.f32, m.i64, err, 0), -1);
  assert_int_equal(err[0], 'x');
  free(f.b);
}

/* More rows than one walk over the header checks: the later windows must
 * find missing and repeated tensors too. */
static void many_tensors(void **state) {
  (void)state;
  enum { MANY = 2 * t_ST_WINDOW + 100 };
  t_tensor *big = calloc(MANY, sizeof *big);
  char(*names)[16] = calloc(MANY, sizeof *names);
  float *f = malloc(MANY * sizeof *f), *g = malloc(MANY * sizeof *g);
  char err[256];
  for (int i = 0; i < MANY; i++) {
    snprintf(names[i], sizeof names[i], "p%d", i);
    big[i] = (t_tensor){names[i], 0, 1, {1}, (size_t)i, 1};
    f[i] = (float)i;
    g[i] = -1;
  }
  size_t size = t_st_size(big, MANY);
  unsigned char *buf = malloc(size);
  assert_int_equal(t_st_save(buf, size, big, MANY, f, NULL), size);
  assert_int_equal(t_st_load(buf, size, big, MANY, g, NULL, err, sizeof err),
                   0);
  assert_memory_equal(f, g, MANY * sizeof *f);

  /* A row of the third window missing, then one of the second. */
  size = t_st_save(buf, size, big, MANY - 1, f, NULL);
  assert_int_equal(t_st_load(buf, size, big, MANY, g, NULL, err, sizeof err),
                   -1);
  assert_string_equal(err, "tensor 'p8291' is missing from the file");
  t_tensor *gap = calloc(MANY, sizeof *gap);
  memcpy(gap, big, (t_ST_WINDOW + 1) * sizeof *big);
  memcpy(gap + t_ST_WINDOW + 1, big + t_ST_WINDOW + 2,
         (MANY - t_ST_WINDOW - 2) * sizeof *big);
  size = t_st_save(buf, t_st_size(big, MANY), gap, MANY - 1, f, NULL);
  assert_int_equal(t_st_load(buf, size, big, MANY, g, NULL, err, sizeof err),
                   -1);
  assert_string_equal(err, "tensor 'p4097' is missing from the file");

  /* A row of the third window written twice, in place of another. */
  big[2 * t_ST_WINDOW + 1].name = names[MANY - 2];
  size = t_st_save(buf, t_st_size(big, MANY), big, MANY, f, NULL);
  big[2 * t_ST_WINDOW + 1].name = names[2 * t_ST_WINDOW + 1];
  assert_int_equal(t_st_load(buf, size, big, MANY, g, NULL, err, sizeof err),
                   -1);
  assert_string_equal(err, "tensor 'p8290' appears twice in the file");
  free(gap);
  free(buf);
  free(g);
  free(f);
  free(names);
  free(big);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(round_trip),     cmocka_unit_test(escaped_names),
      cmocka_unit_test(handmade_file),  cmocka_unit_test(optional_counter),
      cmocka_unit_test(bad_tensors),    cmocka_unit_test(bad_json),
      cmocka_unit_test(bad_framing),    cmocka_unit_test(corrupted_bytes),
      cmocka_unit_test(message_buffer), cmocka_unit_test(many_tensors),
  };
  return cmocka_run_group_tests_name("safetensors_gen", tests, NULL, NULL);
}
