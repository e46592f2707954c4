/*
 * body.c — reading a completion request's JSON body; see body.h.
 */
#include "body.h"

#include <string.h>

struct reader {
    const unsigned char *p, *end;
    struct llm_body_error *err;
};

static int fail(struct reader *r, const char *param, const char *message)
{
    r->err->param = param;
    r->err->message = message;
    return -1;
}

static int bad_json(struct reader *r, const char *message)
{
    return fail(r, NULL, message);
}

static void skip_ws(struct reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    int i;
    for (i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

/* Bytes of a valid UTF-8 sequence starting at p (at most avail bytes), or 0
 * (overlong forms, surrogates and code points past U+10FFFF are invalid). */
static size_t utf8_sequence(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    size_t n, i;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    if (avail < n)
        return 0;
    for (i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f) || (c == 0xf0 && p[1] < 0x90) ||
        (c == 0xf4 && p[1] > 0x8f))
        return 0;
    return n;
}

/* Reads a string (r->p at its opening quote). Sets *decoded to the UTF-8
 * length of what it decodes to, and copies the first cap bytes of that into
 * copy (when copy is not NULL). */
static int read_string(struct reader *r, size_t *decoded, unsigned char *copy, size_t cap)
{
    size_t n = 0;
    r->p++; /* the opening quote */
    for (;;) {
        unsigned char c;
        unsigned char bytes[4];
        size_t len = 0, i;
        if (r->p >= r->end)
            return bad_json(r, "the body is not valid JSON: a string is not terminated");
        c = *r->p;
        if (c == '"') {
            r->p++;
            *decoded = n;
            return 0;
        }
        if (c < 0x20)
            return bad_json(r, "the body is not valid JSON: a control character in a string must be escaped");
        if (c == '\\') {
            unsigned cp;
            if (r->end - r->p < 2)
                return bad_json(r, "the body is not valid JSON: a string is not terminated");
            c = r->p[1];
            r->p += 2;
            switch (c) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                bytes[len++] = c; /* its value does not matter here, only its length (1) */
                break;
            case 'u':
                if (r->end - r->p < 4 || hex4(r->p, &cp) < 0)
                    return bad_json(r, "the body is not valid JSON: a unicode escape wants four hex digits");
                r->p += 4;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return bad_json(r, "the body is not valid JSON: a lone low surrogate escape");
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    unsigned lo;
                    if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u' || hex4(r->p + 2, &lo) < 0 ||
                        lo < 0xdc00 || lo > 0xdfff)
                        return bad_json(r, "the body is not valid JSON: a lone high surrogate escape");
                    r->p += 6;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                if (cp < 0x80) {
                    bytes[len++] = (unsigned char)cp;
                } else if (cp < 0x800) {
                    bytes[len++] = (unsigned char)(0xc0 | (cp >> 6));
                    bytes[len++] = (unsigned char)(0x80 | (cp & 0x3f));
                } else if (cp < 0x10000) {
                    bytes[len++] = (unsigned char)(0xe0 | (cp >> 12));
                    bytes[len++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                    bytes[len++] = (unsigned char)(0x80 | (cp & 0x3f));
                } else {
                    bytes[len++] = (unsigned char)(0xf0 | (cp >> 18));
                    bytes[len++] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
                    bytes[len++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                    bytes[len++] = (unsigned char)(0x80 | (cp & 0x3f));
                }
                break;
            default:
                return bad_json(r, "the body is not valid JSON: an unknown escape in a string");
            }
        } else {
            len = utf8_sequence(r->p, (size_t)(r->end - r->p));
            if (len == 0)
                return bad_json(r, "the body is not valid UTF-8");
            memcpy(bytes, r->p, len);
            r->p += len;
        }
        for (i = 0; i < len; i++, n++)
            if (copy && n < cap)
                copy[n] = bytes[i];
    }
}

/* Reads a number. *is_integer: no fraction, no exponent. *negative: a minus
 * sign. *value: the integer part's magnitude, saturated at limit + 1. */
static int read_number(struct reader *r, int *is_integer, int *negative, int64_t *value, int64_t limit)
{
    int64_t v = 0;
    *negative = 0;
    *is_integer = 1;
    if (r->p < r->end && *r->p == '-') {
        *negative = 1;
        r->p++;
    }
    if (r->p >= r->end || *r->p < '0' || *r->p > '9')
        return bad_json(r, "the body is not valid JSON: a malformed number");
    if (*r->p == '0') {
        r->p++;
        if (r->p < r->end && *r->p >= '0' && *r->p <= '9')
            return bad_json(r, "the body is not valid JSON: a number with a leading zero");
    } else {
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
            if (v <= limit)
                v = v * 10 + (*r->p - '0');
            r->p++;
        }
    }
    if (r->p < r->end && *r->p == '.') {
        *is_integer = 0;
        r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9')
            return bad_json(r, "the body is not valid JSON: a malformed number");
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
            r->p++;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        *is_integer = 0;
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
            r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9')
            return bad_json(r, "the body is not valid JSON: a malformed number");
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
            r->p++;
    }
    *value = v > limit ? limit + 1 : v;
    return 0;
}

static int literal(struct reader *r, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
        return bad_json(r, "the body is not valid JSON: an unexpected character");
    r->p += n;
    return 0;
}

/* Skips any JSON value (r->p at its first byte, blanks skipped). */
static int skip_value(struct reader *r, int depth)
{
    size_t ignored;
    int is_integer, negative;
    int64_t v;

    if (r->p >= r->end)
        return bad_json(r, "the body is not valid JSON: it ends too early");
    switch (*r->p) {
    case '"':
        return read_string(r, &ignored, NULL, 0);
    case 't':
        return literal(r, "true");
    case 'f':
        return literal(r, "false");
    case 'n':
        return literal(r, "null");
    case '[':
    case '{': {
        int object = *r->p == '{';
        unsigned char close = object ? '}' : ']';
        if (depth >= LLM_BODY_MAX_DEPTH)
            return bad_json(r, "the body nests too deeply");
        r->p++;
        skip_ws(r);
        if (r->p < r->end && *r->p == close) {
            r->p++;
            return 0;
        }
        for (;;) {
            if (object) {
                if (r->p >= r->end || *r->p != '"')
                    return bad_json(r, "the body is not valid JSON: an object member needs a string name");
                if (read_string(r, &ignored, NULL, 0) < 0)
                    return -1;
                skip_ws(r);
                if (r->p >= r->end || *r->p != ':')
                    return bad_json(r, "the body is not valid JSON: a colon is missing");
                r->p++;
                skip_ws(r);
            }
            if (skip_value(r, depth + 1) < 0)
                return -1;
            skip_ws(r);
            if (r->p < r->end && *r->p == ',') {
                r->p++;
                skip_ws(r);
                continue;
            }
            if (r->p < r->end && *r->p == close) {
                r->p++;
                return 0;
            }
            return bad_json(r, "the body is not valid JSON: a comma or a closing bracket is missing");
        }
    }
    default:
        if (*r->p == '-' || (*r->p >= '0' && *r->p <= '9'))
            return read_number(r, &is_integer, &negative, &v, 0);
        return bad_json(r, "the body is not valid JSON: an unexpected character");
    }
}

int llm_body_parse(const char *buf, size_t len, struct llm_body *out, struct llm_body_error *err)
{
    struct reader r;
    int seen_prompt = 0, seen_max = 0;

    r.p = (const unsigned char *)buf;
    r.end = r.p + len;
    r.err = err;
    memset(out, 0, sizeof *out);

    skip_ws(&r);
    if (r.p >= r.end || *r.p != '{')
        return r.p < r.end && (*r.p == '[' || *r.p == '"' || *r.p == '-' || (*r.p >= '0' && *r.p <= '9') ||
                               *r.p == 't' || *r.p == 'f' || *r.p == 'n')
                   ? bad_json(&r, "the body must be a JSON object")
                   : bad_json(&r, "the body is not valid JSON: it must be an object");
    r.p++;
    skip_ws(&r);
    if (r.p < r.end && *r.p == '}') {
        r.p++;
    } else {
        for (;;) {
            unsigned char name[16];
            size_t name_len;
            if (r.p >= r.end || *r.p != '"')
                return bad_json(&r, "the body is not valid JSON: an object member needs a string name");
            if (read_string(&r, &name_len, name, sizeof name) < 0)
                return -1;
            skip_ws(&r);
            if (r.p >= r.end || *r.p != ':')
                return bad_json(&r, "the body is not valid JSON: a colon is missing");
            r.p++;
            skip_ws(&r);

            if (name_len == 6 && memcmp(name, "prompt", 6) == 0) {
                if (seen_prompt++)
                    return fail(&r, "prompt", "prompt is given twice");
                if (r.p >= r.end || *r.p != '"') {
                    if (skip_value(&r, 1) < 0)
                        return -1;
                    return fail(&r, "prompt", "prompt must be a string");
                }
                if (read_string(&r, &out->prompt_bytes, NULL, 0) < 0)
                    return -1;
            } else if (name_len == 10 && memcmp(name, "max_tokens", 10) == 0) {
                int is_integer, negative;
                int64_t v;
                if (seen_max++)
                    return fail(&r, "max_tokens", "max_tokens is given twice");
                if (r.p >= r.end || (*r.p != '-' && (*r.p < '0' || *r.p > '9'))) {
                    if (skip_value(&r, 1) < 0)
                        return -1;
                    return fail(&r, "max_tokens", "max_tokens must be an integer");
                }
                if (read_number(&r, &is_integer, &negative, &v, LLM_MAX_TOKENS) < 0)
                    return -1;
                if (!is_integer)
                    return fail(&r, "max_tokens", "max_tokens must be an integer");
                if (negative && v != 0)
                    return fail(&r, "max_tokens", "max_tokens must not be negative");
                if (v > LLM_MAX_TOKENS)
                    return fail(&r, "max_tokens", "max_tokens is too large (at most 1000000)");
                out->max_tokens = v;
            } else if (skip_value(&r, 1) < 0) {
                return -1;
            }
            skip_ws(&r);
            if (r.p < r.end && *r.p == ',') {
                r.p++;
                skip_ws(&r);
                continue;
            }
            if (r.p < r.end && *r.p == '}') {
                r.p++;
                break;
            }
            return bad_json(&r, "the body is not valid JSON: a comma or a closing brace is missing");
        }
    }
    skip_ws(&r);
    if (r.p != r.end)
        return bad_json(&r, "the body is not valid JSON: bytes after the object");
    if (!seen_prompt)
        return fail(&r, "prompt", "prompt is missing");
    if (!seen_max)
        return fail(&r, "max_tokens", "max_tokens is missing");
    return 0;
}
