/*
 * test_llm_body.c — llm_server's JSON body reader (c-examples/llm/body.c)
 * and its Go-style durations (c-examples/llm/duration.c). Each body is
 * copied to a heap buffer of its exact size (no NUL after it), and every
 * prefix of every body is read too, so that ASan sees any read past the end.
 * Built with ASan/UBSan by `make test-examples`.
 */
#include "body.h"
#include "duration.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define EXPECT(cond, ...)                                                                                    \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            failures++;                                                                                      \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                             \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
        }                                                                                                    \
    } while (0)

/* Parses len bytes of text from an exact-size heap copy. */
static int parse_n(const char *text, size_t len, struct llm_body *b, struct llm_body_error *e)
{
    char *copy = malloc(len ? len : 1);
    int rc;
    memcpy(copy, text, len);
    rc = llm_body_parse(copy, len, b, e);
    free(copy);
    return rc;
}

static void every_prefix_fails(const char *text, size_t len)
{
    size_t i;
    struct llm_body b;
    struct llm_body_error e;
    for (i = 0; i < len; i++) {
        /* a prefix may parse only when what is cut is trailing blanks */
        int rc = parse_n(text, i, &b, &e);
        size_t j = i;
        while (j < len && strchr(" \t\r\n", text[j]))
            j++;
        EXPECT(rc < 0 || j == len, "prefix %zu of %s parsed", i, text);
    }
}

/* Every one-byte change of text parses or is refused cleanly (ASan sees
 * any read out of bounds), and what parses is plausible: a decoded prompt
 * never longer than the body, max_tokens in range. */
static void mutations(const char *text)
{
    static const unsigned char bytes[] = {0, '"', '\\', '{', '}', '[', ']', ',', ':', 'u', '0', '9', '-', ' ', 0x7f, 0xc3, 0xff};
    size_t len = strlen(text), i, k;
    char *copy = malloc(len);
    for (i = 0; i < len; i++) {
        for (k = 0; k < sizeof bytes; k++) {
            struct llm_body b;
            struct llm_body_error e;
            memcpy(copy, text, len);
            copy[i] = (char)bytes[k];
            if (llm_body_parse(copy, len, &b, &e) == 0) {
                EXPECT(b.prompt_bytes <= len && b.max_tokens >= 0 && b.max_tokens <= LLM_MAX_TOKENS,
                       "mutation %zu of %s: prompt_bytes %zu, max_tokens %ld", i, text, b.prompt_bytes,
                       (long)b.max_tokens);
            } else {
                EXPECT(e.message != NULL, "mutation %zu of %s: refused without a message", i, text);
            }
        }
    }
    free(copy);
}

static void ok(const char *text, size_t prompt_bytes, long max_tokens)
{
    struct llm_body b;
    struct llm_body_error e;
    int rc = parse_n(text, strlen(text), &b, &e);
    EXPECT(rc == 0, "%s: refused (%s)", text, rc ? e.message : "");
    if (rc == 0) {
        EXPECT(b.prompt_bytes == prompt_bytes, "%s: prompt_bytes %zu, wanted %zu", text, b.prompt_bytes,
               prompt_bytes);
        EXPECT(b.max_tokens == max_tokens, "%s: max_tokens %ld, wanted %ld", text, (long)b.max_tokens, max_tokens);
    }
    every_prefix_fails(text, strlen(text));
    mutations(text);
}

/* Refused, naming param (NULL: the body as a whole) with a message
 * containing words. */
static void bad_n(const char *text, size_t len, const char *param, const char *words)
{
    struct llm_body b;
    struct llm_body_error e;
    int rc = parse_n(text, len, &b, &e);
    EXPECT(rc < 0, "%s: accepted", text);
    if (rc < 0) {
        EXPECT((param == NULL) == (e.param == NULL) && (!param || strcmp(param, e.param) == 0),
               "%s: param %s, wanted %s", text, e.param ? e.param : "NULL", param ? param : "NULL");
        EXPECT(strstr(e.message, words) != NULL, "%s: message \"%s\" lacks \"%s\"", text, e.message, words);
        EXPECT(strchr(e.message, '"') == NULL && strchr(e.message, '\\') == NULL,
               "%s: message \"%s\" is not JSON-safe", text, e.message);
    }
}

static void bad(const char *text, const char *param, const char *words)
{
    bad_n(text, strlen(text), param, words);
}

static void duration(unsigned long long ms, const char *want)
{
    char out[LLM_DURATION_SIZE];
    size_t n = llm_format_duration(ms, out);
    EXPECT(strcmp(out, want) == 0 && n == strlen(want), "%llu ms: \"%s\", wanted \"%s\"", ms, out, want);
}

int main(void)
{
    /* prompt bytes: what the string decodes to, in UTF-8 */
    ok("{\"prompt\":\"hello\",\"max_tokens\":10}", 5, 10);
    ok(" { \"max_tokens\" : 0 , \"prompt\" : \"\" } \n", 0, 0);
    ok("{\"prompt\":\"a\\\"b\\\\c\\/d\\n\\t\\r\\b\\f\",\"max_tokens\":1}", 12, 1);
    ok("{\"prompt\":\"\\u0041\\u00e9\\u20ac\",\"max_tokens\":1}", 1 + 2 + 3, 1);
    ok("{\"prompt\":\"\\ud83d\\ude00\",\"max_tokens\":1}", 4, 1); /* a surrogate pair: U+1F600 */
    ok("{\"prompt\":\"\\u0000\",\"max_tokens\":1}", 1, 1);
    ok("{\"prompt\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\",\"max_tokens\":1}", 9, 1); /* raw UTF-8 */
    ok("{\"prompt\":\"x\",\"max_tokens\":1000000}", 1, 1000000);
    ok("{\"prompt\":\"x\",\"max_tokens\":-0}", 1, 0);
    /* other members of any type are skipped; names are decoded */
    ok("{\"model\":\"m\",\"n\":[1,2.5e3,{\"a\":[true,false,null]}],\"prompt\":\"ab\",\"stop\":null,"
       "\"max_tokens\":7,\"temperature\":-0.5E-2}",
       2, 7);
    ok("{\"pr\\u006fmpt\":\"abc\",\"max_tokens\":3}", 3, 3);
    ok("{\"prompt_x\":1,\"promp\":2,\"prompt\":\"abc\",\"max_tokens\":3}", 3, 3);

    /* malformed JSON */
    bad("", NULL, "not valid JSON");
    bad("   ", NULL, "not valid JSON");
    bad("{", NULL, "not valid JSON");
    bad("{\"prompt\":\"x\",\"max_tokens\":1", NULL, "not valid JSON");
    bad("{\"prompt\":\"x\",\"max_tokens\":1,}", NULL, "not valid JSON");
    bad("{\"prompt\":\"x\" \"max_tokens\":1}", NULL, "not valid JSON");
    bad("{\"prompt\":\"x\",\"max_tokens\":1}}", NULL, "bytes after");
    bad("{\"prompt\":\"x\",\"max_tokens\":1} x", NULL, "bytes after");
    bad("{'prompt':'x'}", NULL, "not valid JSON");
    bad("{\"prompt\":\"x\n\",\"max_tokens\":1}", NULL, "control character");
    bad("{\"prompt\":\"\\x41\",\"max_tokens\":1}", NULL, "unknown escape");
    bad("{\"prompt\":\"\\u12\",\"max_tokens\":1}", NULL, "four hex digits");
    bad("{\"prompt\":\"\\ud800\",\"max_tokens\":1}", NULL, "surrogate");
    bad("{\"prompt\":\"\\ud800\\u0041\",\"max_tokens\":1}", NULL, "surrogate");
    bad("{\"prompt\":\"\\udc00\",\"max_tokens\":1}", NULL, "surrogate");
    bad("{\"prompt\":\"\xff\",\"max_tokens\":1}", NULL, "UTF-8");
    bad("{\"prompt\":\"\xc0\xaf\",\"max_tokens\":1}", NULL, "UTF-8");       /* overlong */
    bad("{\"prompt\":\"\xed\xa0\x80\",\"max_tokens\":1}", NULL, "UTF-8");   /* a surrogate */
    bad("{\"prompt\":\"\xf4\x90\x80\x80\",\"max_tokens\":1}", NULL, "UTF-8"); /* past U+10FFFF */
    bad("{\"prompt\":\"\xe2\x82\",\"max_tokens\":1}", NULL, "UTF-8");       /* cut short */
    bad("{\"prompt\":\"x\",\"max_tokens\":01}", NULL, "leading zero");
    bad("{\"prompt\":\"x\",\"max_tokens\":1.}", NULL, "malformed number");
    bad("{\"prompt\":\"x\",\"max_tokens\":-}", NULL, "malformed number");
    bad("{\"prompt\":\"x\",\"max_tokens\":1,\"t\":tru}", NULL, "not valid JSON");
    bad_n("{\"prompt\":\"a\0b\",\"max_tokens\":1}", 29, NULL, "control character");
    {
        /* nesting: deep enough is fine, deeper is refused (no stack overflow) */
        char deep[4096];
        int i, n = 0;
        n += sprintf(deep + n, "{\"prompt\":\"x\",\"max_tokens\":1,\"d\":");
        for (i = 0; i < 1000; i++)
            deep[n++] = '[';
        deep[n] = '\0';
        bad(deep, NULL, "nests too deeply");
    }
    bad("[]", NULL, "must be a JSON object");
    bad("\"prompt\"", NULL, "must be a JSON object");
    bad("null", NULL, "must be a JSON object");

    /* the members */
    bad("{}", "prompt", "prompt is missing");
    bad("{\"max_tokens\":1}", "prompt", "prompt is missing");
    bad("{\"prompt\":\"x\"}", "max_tokens", "max_tokens is missing");
    bad("{\"prompt\":1,\"max_tokens\":1}", "prompt", "must be a string");
    bad("{\"prompt\":[\"a\"],\"max_tokens\":1}", "prompt", "must be a string");
    bad("{\"prompt\":null,\"max_tokens\":1}", "prompt", "must be a string");
    bad("{\"prompt\":\"x\",\"prompt\":\"y\",\"max_tokens\":1}", "prompt", "twice");
    bad("{\"prompt\":\"x\",\"max_tokens\":1,\"max_tokens\":2}", "max_tokens", "twice");
    bad("{\"prompt\":\"x\",\"max_tokens\":-1}", "max_tokens", "negative");
    bad("{\"prompt\":\"x\",\"max_tokens\":-99999999999999999999999}", "max_tokens", "negative");
    bad("{\"prompt\":\"x\",\"max_tokens\":1000001}", "max_tokens", "too large");
    bad("{\"prompt\":\"x\",\"max_tokens\":99999999999999999999999999999999}", "max_tokens", "too large");
    bad("{\"prompt\":\"x\",\"max_tokens\":18446744073709551617}", "max_tokens", "too large");
    bad("{\"prompt\":\"x\",\"max_tokens\":1.5}", "max_tokens", "integer");
    bad("{\"prompt\":\"x\",\"max_tokens\":1.0}", "max_tokens", "integer");
    bad("{\"prompt\":\"x\",\"max_tokens\":1e3}", "max_tokens", "integer");
    bad("{\"prompt\":\"x\",\"max_tokens\":\"10\"}", "max_tokens", "integer");
    bad("{\"prompt\":\"x\",\"max_tokens\":null}", "max_tokens", "integer");
    bad("{\"prompt\":\"x\",\"max_tokens\":true}", "max_tokens", "integer");

    /* durations, as Go's time.Duration.String() writes them */
    duration(0, "0s");
    duration(1, "1ms");
    duration(250, "250ms");
    duration(999, "999ms");
    duration(1000, "1s");
    duration(1500, "1.5s");
    duration(1050, "1.05s");
    duration(1005, "1.005s");
    duration(59999, "59.999s");
    duration(60000, "1m0s");
    duration(360000, "6m0s");
    duration(61500, "1m1.5s");
    duration(3600000, "1h0m0s");
    duration(3723000, "1h2m3s");
    duration(86400000, "24h0m0s");
    {
        char out[LLM_DURATION_SIZE];
        EXPECT(llm_format_duration(~0ULL, out) == strlen("5124095576030h25m51.615s") &&
                   strcmp(out, "5124095576030h25m51.615s") == 0,
               "UINT64_MAX ms: \"%s\"", out);
    }

    if (failures) {
        fprintf(stderr, "test_llm_body: %d failures\n", failures);
        return 1;
    }
    printf("test_llm_body: ok\n");
    return 0;
}
