/*
 * keytext.h — a key as printable text, in the one encoding the library's
 * rl_metrics and rlctl use (API.md): printable ASCII other than `\` as is,
 * `\` as `\\`, every other byte as `\xHH` (lower-case hex). Shared by the
 * example servers' limited log and by rlctl, so that a key they print pastes
 * back into `rlctl peek`.
 */
#ifndef RL_EXAMPLE_KEYTEXT_H
#define RL_EXAMPLE_KEYTEXT_H

#include <stddef.h>

/* Room keytext_encode() needs for a key of len bytes, the NUL included. */
#define KEYTEXT_SIZE(len) (4 * (len) + 1)

/* Writes key[0..len) encoded, NUL-terminated, into out, which has room for
 * KEYTEXT_SIZE(len) bytes. Returns the text's length. */
static size_t keytext_encode(const unsigned char *key, size_t len, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, n = 0;
    for (i = 0; i < len; i++) {
        unsigned char c = key[i];
        if (c == '\\') {
            out[n++] = '\\';
            out[n++] = '\\';
        } else if (c >= 0x20 && c < 0x7f) {
            out[n++] = (char)c;
        } else {
            out[n++] = '\\';
            out[n++] = 'x';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    out[n] = '\0';
    return n;
}

#endif /* RL_EXAMPLE_KEYTEXT_H */
