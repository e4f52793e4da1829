/* The host runtime of cnnc's drivers and tests: tensors in memory,
 * safetensors files (weights, inputs, outputs) and IDX data sets (MNIST,
 * Fashion-MNIST). It runs on the host, allocates with malloc and reads with
 * stdio; generated model code never depends on it.
 *
 * Every function that can fail returns 0 on success and -1 on failure; when
 * it takes err/errlen, the message (naming the file and the problem) is
 * written there, and err may be NULL. Nothing here prints or exits. */
#ifndef CNNC_RUNTIME_H
#define CNNC_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#define RT_MAX_DIMS 8

/* Largest safetensors header accepted: the reference implementation's. */
#define RT_SAFETENSORS_MAX_HEADER 100000000u

/* The safetensors element types cnnc reads and writes. */
typedef enum rt_dtype {
  RT_F32,
  RT_F64,
  RT_I64,
  RT_I32,
  RT_I16,
  RT_I8,
  RT_U8,
  RT_BOOL,
  RT_F16,
  RT_BF16
} rt_dtype;

size_t rt_dtype_size(rt_dtype t);      /* bytes per element; 0 if invalid */
const char *rt_dtype_name(rt_dtype t); /* "F32", ...; "?" if invalid */
int rt_dtype_parse(const char *name, rt_dtype *out); /* 0 ok, -1 unknown */

/* A dense row-major tensor. data is in host byte order, owned by the set
 * holding the tensor, and aligned for any element type; it is never NULL
 * once the tensor is in a set, even with zero elements. */
typedef struct rt_tensor {
  char *name;
  rt_dtype dtype;
  int ndim; /* 0 is a scalar */
  int64_t shape[RT_MAX_DIMS];
  void *data;
  size_t nbytes; /* rt_dtype_size(dtype) * product(shape) */
} rt_tensor;

typedef struct rt_meta {
  char *key, *value;
} rt_meta;

/* A named set of tensors plus the file's string metadata. Zero-initialize
 * ({0}) for an empty set; names are unique. */
typedef struct rt_tensors {
  rt_tensor *v;
  int n, cap;
  rt_meta *meta;
  int nmeta;
} rt_tensors;

/* Adds a copy of data (zeros when data is NULL). Fails on a duplicate or
 * reserved name ("__metadata__"), ndim outside 0..RT_MAX_DIMS, a negative
 * or overflowing shape, an invalid dtype, or out of memory. */
int rt_tensors_add(rt_tensors *t, const char *name, rt_dtype dtype, int ndim,
                   const int64_t *shape, const void *data);
const rt_tensor *rt_tensors_find(const rt_tensors *t, const char *name);
/* A name from a file, fit for a message: control characters (a terminal
 * escape sequence in a hostile file) become '?', and it is cut to n - 1
 * bytes. Returns buf. */
const char *rt_printable(const char *name, char *buf, size_t n);
int64_t rt_tensor_numel(const rt_tensor *x);
/* Sets or replaces one metadata entry. */
int rt_tensors_set_meta(rt_tensors *t, const char *key, const char *value);
const char *rt_tensors_get_meta(const rt_tensors *t, const char *key);
/* Frees everything and leaves *t empty. */
void rt_tensors_free(rt_tensors *t);

/* A model's state of size bytes, zeroed, at a 64-byte boundary (the
 * generated header's advice: its tensors then start on cache lines);
 * NULL when out of memory. Released with free. */
void *rt_state_alloc(size_t size);

/* Reads a whole file. *buf is NUL-terminated (not counted in *len) and
 * freed by the caller. */
int rt_read_file(const char *path, unsigned char **buf, size_t *len, char *err,
                 size_t errlen);

/* Safetensors: an 8-byte little-endian header length N, N bytes of JSON
 * header, then the little-endian data. The reader is safe on hostile files
 * and as strict as the reference implementation (the tensors must tile the
 * data section exactly), and stricter in refusing unknown keys in a
 * tensor's entry. *out is overwritten, and left empty on failure. Tensors
 * keep the header's order. */
int rt_safetensors_read(const char *path, rt_tensors *out, char *err,
                        size_t errlen);
/* The same from memory; `what` names the buffer in messages. Data is
 * copied, so buf may be freed afterwards. */
int rt_safetensors_parse(const unsigned char *buf, size_t len, const char *what,
                         rt_tensors *out, char *err, size_t errlen);
/* Writes the layout of the reference serializer (data sorted by dtype
 * alignment then name, header padded with spaces to 8 bytes) to PATH.tmp
 * and renames it over PATH, so readers never see half a file. */
int rt_safetensors_write(const char *path, const rt_tensors *t, char *err,
                         size_t errlen);

/* IDX type codes (the third magic byte). */
enum {
  RT_IDX_U8 = 0x08,
  RT_IDX_I8 = 0x09,
  RT_IDX_I16 = 0x0B,
  RT_IDX_I32 = 0x0C,
  RT_IDX_F32 = 0x0D,
  RT_IDX_F64 = 0x0E
};

/* An IDX file: 00 00 TYPE NDIM, NDIM big-endian 32-bit dimensions, then
 * big-endian data. */
typedef struct rt_idx {
  int type;       /* RT_IDX_* */
  rt_dtype dtype; /* the same element type as a safetensors dtype */
  int ndim;       /* 1..RT_MAX_DIMS */
  int64_t dims[RT_MAX_DIMS];
  int64_t count; /* product of dims */
  void *data;    /* host byte order; never NULL after a successful read */
  size_t nbytes;
} rt_idx;

/* Reads a plain or gzip-compressed IDX file (told apart by the gzip magic
 * 1f 8b). *out is overwritten, and left empty on failure. */
int rt_idx_read(const char *path, rt_idx *out, char *err, size_t errlen);
void rt_idx_free(rt_idx *x);

/* Training a classifier on IDX data (cnnc train). The driver cnnc
 * generates fills an rt_model from the generated model code and calls
 * rt_train_main; the loop, the data, the progress display, checkpoints and
 * the log live here. */
typedef struct rt_param {
  const char *name;
  int is_int; /* int64 (num_batches_tracked), else float32 */
  int ndim;
  int64_t shape[4];
  size_t offset; /* into the f32 (or i64) area */
  size_t numel;
  int trainable;
} rt_param;

typedef struct rt_model {
  const char *name;
  int batch;
  int64_t channels, height, width; /* the image input */
  int64_t classes;                 /* the logits */
  size_t state_size;
  int epochs;    /* the train section's */
  float lr;      /* the train section's */
  uint64_t seed; /* the train section's */
  const rt_param *params;
  int nparams;
  void (*init)(void *s, uint64_t seed);
  int (*forward)(void *s, int count, const float *x, float *logits);
  float (*train_step)(void *s, int count, const float *x, const int64_t *y);
  void (*set_lr)(void *s, float lr);
  float (*end_epoch)(void *s, int epoch, int epochs, float val_error);
  /* the state's areas: f32, i64, m32, v32 (NULL when absent), and its
   * scalars */
  float *(*f32)(void *s);
  int64_t *(*i64)(void *s);
  float *(*m32)(void *s);
  float *(*v32)(void *s);
  float *(*lr_of)(void *s);
  int64_t *(*step_of)(void *s);
  size_t f32_count;
  /* the state to train, when the caller made it (cnnc's JIT); NULL: a
   * zeroed block of state_size bytes */
  void *state;
} rt_model;

/* Runs cnnc train with the command line the generated driver got;
 * returns the exit status. */
int rt_train_main(const rt_model *m, int argc, char **argv);

#endif
