/* JSON for safetensors headers: the whole grammar (RFC 8259), strictly, so
 * that what passes here is what any other reader would parse the same way.
 * Numbers are only classified, never converted to floating point. */
#include <string.h>

#include "json.h"

size_t rt_utf8_prefix(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i], lo = 0x80, hi = 0xBF;
    size_t len;
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      lo = c == 0xE0 ? 0xA0 : lo;
      hi = c == 0xED ? 0x9F : hi;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      lo = c == 0xF0 ? 0x90 : lo;
      hi = c == 0xF4 ? 0x8F : hi;
    } else {
      return i;
    }
    if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
      return i;
    for (size_t k = 2; k < len; k++)
      if ((s[i + k] & 0xC0) != 0x80)
        return i;
    i += len;
  }
  return n;
}

int rt_json_peek(const rt_json *j) { return j->i < j->n ? j->p[j->i] : -1; }

void rt_json_skip_ws(rt_json *j) {
  while (j->i < j->n && (j->p[j->i] == ' ' || j->p[j->i] == '\t' ||
                         j->p[j->i] == '\n' || j->p[j->i] == '\r'))
    j->i++;
}

static int syntax(rt_json *j, const char *msg) {
  j->msg = msg;
  return -1;
}

static int is_digit(int c) { return c >= '0' && c <= '9'; }

static int hex4(rt_json *j, unsigned *u) {
  *u = 0;
  if (j->n - j->i < 4)
    return syntax(j, "truncated \\u escape");
  for (int k = 0; k < 4; k++) {
    int c = j->p[j->i++], d = is_digit(c)            ? c - '0'
                              : c >= 'a' && c <= 'f' ? c - 'a' + 10
                              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                     : -1;
    if (d < 0)
      return syntax(j, "bad hex digit in \\u escape");
    *u = *u << 4 | (unsigned)d;
  }
  return 0;
}

static size_t put_utf8(char *out, unsigned u) {
  if (u < 0x80) {
    out[0] = (char)u;
    return 1;
  }
  if (u < 0x800) {
    out[0] = (char)(0xC0 | u >> 6);
    out[1] = (char)(0x80 | (u & 0x3F));
    return 2;
  }
  if (u < 0x10000) {
    out[0] = (char)(0xE0 | u >> 12);
    out[1] = (char)(0x80 | (u >> 6 & 0x3F));
    out[2] = (char)(0x80 | (u & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | u >> 18);
  out[1] = (char)(0x80 | (u >> 12 & 0x3F));
  out[2] = (char)(0x80 | (u >> 6 & 0x3F));
  out[3] = (char)(0x80 | (u & 0x3F));
  return 4;
}

int rt_json_string(rt_json *j, char *out, size_t *outlen) {
  size_t o = 0;
  j->i++;
  for (;;) {
    if (j->i >= j->n)
      return syntax(j, "unterminated string");
    unsigned c = j->p[j->i++];
    if (c == '"')
      break;
    if (c < 0x20)
      return syntax(j, "control character in a string");
    if (c != '\\') {
      if (out)
        out[o++] = (char)c;
      continue;
    }
    if (j->i >= j->n)
      return syntax(j, "unterminated string");
    c = j->p[j->i++];
    const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
    const char *e = c ? strchr(from, (int)c) : NULL;
    if (e) {
      if (out)
        out[o++] = to[e - from];
      continue;
    }
    if (c != 'u')
      return syntax(j, "invalid escape in a string");
    unsigned u, lo;
    if (hex4(j, &u) < 0)
      return -1;
    if (u >= 0xDC00 && u <= 0xDFFF)
      return syntax(j, "unpaired surrogate in a \\u escape");
    if (u >= 0xD800 && u <= 0xDBFF) {
      if (j->n - j->i < 2 || j->p[j->i] != '\\' || j->p[j->i + 1] != 'u')
        return syntax(j, "unpaired surrogate in a \\u escape");
      j->i += 2;
      if (hex4(j, &lo) < 0)
        return -1;
      if (lo < 0xDC00 || lo > 0xDFFF)
        return syntax(j, "unpaired surrogate in a \\u escape");
      u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (out)
      o += put_utf8(out + o, u);
  }
  if (out) {
    out[o] = 0;
    *outlen = o;
  }
  return 0;
}

int rt_json_number(rt_json *j, rt_json_num *num) {
  rt_json_num r = {0, 1, 0, 0};
  if (rt_json_peek(j) == '-')
    r.neg = 1, j->i++;
  if (rt_json_peek(j) == '0') {
    j->i++;
  } else if (is_digit(rt_json_peek(j))) {
    while (is_digit(rt_json_peek(j))) {
      unsigned d = (unsigned)(j->p[j->i++] - '0');
      if (r.v > (UINT64_MAX - d) / 10)
        r.big = 1;
      else
        r.v = r.v * 10 + d;
    }
  } else {
    return syntax(j, "invalid number");
  }
  if (rt_json_peek(j) == '.') {
    r.integer = 0, j->i++;
    if (!is_digit(rt_json_peek(j)))
      return syntax(j, "invalid number");
    while (is_digit(rt_json_peek(j)))
      j->i++;
  }
  if (rt_json_peek(j) == 'e' || rt_json_peek(j) == 'E') {
    r.integer = 0, j->i++;
    if (rt_json_peek(j) == '+' || rt_json_peek(j) == '-')
      j->i++;
    if (!is_digit(rt_json_peek(j)))
      return syntax(j, "invalid number");
    while (is_digit(rt_json_peek(j)))
      j->i++;
  }
  if (num)
    *num = r;
  return 0;
}

static int scan_literal(rt_json *j, const char *word) {
  size_t n = strlen(word);
  if (j->n - j->i < n || memcmp(j->p + j->i, word, n) != 0)
    return syntax(j, "expected a value");
  j->i += n;
  return 0;
}

/* The syntax check: recursion is bounded by RT_JSON_MAX_DEPTH. */
static int check_value(rt_json *j, int depth) {
  rt_json_skip_ws(j);
  int c = rt_json_peek(j), close = c == '{' ? '}' : ']';
  switch (c) {
  case '{':
  case '[':
    if (depth == RT_JSON_MAX_DEPTH) {
      j->too_deep = 1;
      return syntax(j, "too deep");
    }
    j->i++;
    rt_json_skip_ws(j);
    if (rt_json_peek(j) == close) {
      j->i++;
      return 0;
    }
    for (;;) {
      if (c == '{') {
        rt_json_skip_ws(j);
        if (rt_json_peek(j) != '"')
          return syntax(j, "expected a string key");
        if (rt_json_string(j, NULL, NULL) < 0)
          return -1;
        rt_json_skip_ws(j);
        if (rt_json_peek(j) != ':')
          return syntax(j, "expected ':' after a key");
        j->i++;
      }
      if (check_value(j, depth + 1) < 0)
        return -1;
      rt_json_skip_ws(j);
      if (rt_json_peek(j) == ',') {
        j->i++;
      } else if (rt_json_peek(j) == close) {
        j->i++;
        return 0;
      } else {
        return syntax(j,
                      c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
      }
    }
  case '"': return rt_json_string(j, NULL, NULL);
  case 't': return scan_literal(j, "true");
  case 'f': return scan_literal(j, "false");
  case 'n': return scan_literal(j, "null");
  case -1: return syntax(j, "unexpected end");
  default: return rt_json_number(j, NULL);
  }
}

int rt_json_check(rt_json *j) {
  j->i = 0;
  if (check_value(j, 0) < 0)
    return -1;
  rt_json_skip_ws(j);
  if (j->i < j->n)
    return syntax(j, "trailing characters after the JSON value");
  return 0;
}
