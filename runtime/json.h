/* The JSON of safetensors headers, private to the runtime: a UTF-8 check,
 * a syntax check that keeps no state beyond bounded recursion, and
 * scanners that read one token at a time from checked text. */
#ifndef CNNC_RUNTIME_JSON_H
#define CNNC_RUNTIME_JSON_H

#include <stddef.h>
#include <stdint.h>

/* A header needs three levels; anything much deeper is an attack on the
 * stack, not a safetensors file. */
enum { RT_JSON_MAX_DEPTH = 16 };

typedef struct rt_json {
  const unsigned char *p;
  size_t n, i;     /* text length and the scanning position */
  const char *msg; /* the syntax error, if any; i is where it was found */
  int too_deep;
} rt_json;

typedef struct rt_json_num {
  int neg, integer, big; /* big: the magnitude does not fit 64 bits */
  uint64_t v;            /* the magnitude of an integer */
} rt_json_num;

/* The offset of the first byte that is not part of valid UTF-8 (no
 * overlong forms, surrogates or code points past U+10FFFF), or n. */
size_t rt_utf8_prefix(const unsigned char *s, size_t n);

/* 0 if the whole text is one JSON value between optional whitespace. */
int rt_json_check(rt_json *j);

int rt_json_peek(const rt_json *j); /* the next byte, or -1 at the end */
void rt_json_skip_ws(rt_json *j);
/* Scans the string at j->i (its opening quote). With out, also decodes it
 * there, NUL-terminated; out needs as many bytes as the raw text, since
 * decoding never lengthens a string. */
int rt_json_string(rt_json *j, char *out, size_t *outlen);
int rt_json_number(rt_json *j, rt_json_num *num); /* num may be NULL */

#endif
