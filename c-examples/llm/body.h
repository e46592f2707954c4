/*
 * body.h — the JSON body of a completion request, as llm_server reads it:
 *
 *   {"prompt": "...", "max_tokens": N}
 *
 * A strict RFC 8259 reader over the body's bytes (not NUL-terminated; any
 * byte may appear): one object at the top, other members of any JSON type
 * skipped (nested at most LLM_BODY_MAX_DEPTH deep), strings valid UTF-8
 * without raw control bytes, duplicate "prompt" or "max_tokens" refused
 * (which of two values counted would be a guess). Member names are compared
 * after their escapes are decoded, so "pr\u006fmpt" is "prompt".
 *
 * prompt must be a string; what counts is the length in bytes of the string
 * it DECODES to, in UTF-8: escapes are decoded (\" \\ \/ \b \f \n \r \t are
 * one byte each, \uXXXX one to three bytes, a surrogate pair four), so a
 * client pays for the text the model reads, not for how it was escaped. A
 * lone surrogate (\ud800 alone) is refused: it decodes to no UTF-8 at all.
 *
 * max_tokens must be a JSON integer (no fraction, no exponent: 1.0 and 1e3
 * are refused) from 0 to LLM_MAX_TOKENS; longer digit strings are refused
 * without overflowing.
 */
#ifndef RL_EXAMPLE_LLM_BODY_H
#define RL_EXAMPLE_LLM_BODY_H

#include <stddef.h>
#include <stdint.h>

#define LLM_MAX_TOKENS 1000000 /* the largest max_tokens accepted */
#define LLM_BODY_MAX_DEPTH 32  /* nesting of the members skipped */

struct llm_body {
    size_t prompt_bytes; /* UTF-8 bytes of the decoded prompt */
    int64_t max_tokens;  /* 0 .. LLM_MAX_TOKENS */
};

/* What is wrong with a body: param is the member at fault ("prompt",
 * "max_tokens") or NULL for the body as a whole; message is a constant
 * sentence, safe to put in a JSON string as is (no quote, no backslash). */
struct llm_body_error {
    const char *param;
    const char *message;
};

/* Reads buf[0..len). Returns 0 and fills *out, or -1 and fills *err. */
int llm_body_parse(const char *buf, size_t len, struct llm_body *out, struct llm_body_error *err);

#endif /* RL_EXAMPLE_LLM_BODY_H */
