/*
 * duration.c — Go-style durations; see duration.h.
 */
#include "duration.h"

#include <inttypes.h>
#include <stdio.h>

size_t llm_format_duration(uint64_t ms, char *out)
{
    uint64_t h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60;
    unsigned frac = (unsigned)(ms % 1000);
    char fraction[8] = "";
    int n = 0;

    if (ms == 0)
        n = snprintf(out, LLM_DURATION_SIZE, "0s");
    else if (ms < 1000)
        n = snprintf(out, LLM_DURATION_SIZE, "%ums", frac);
    else {
        if (frac != 0) {
            int digits = 3;
            while (frac % 10 == 0) {
                frac /= 10;
                digits--;
            }
            snprintf(fraction, sizeof fraction, ".%0*u", digits, frac);
        }
        if (h > 0)
            n = snprintf(out, LLM_DURATION_SIZE, "%" PRIu64 "h%" PRIu64 "m%" PRIu64 "%ss", h, m, s, fraction);
        else if (m > 0)
            n = snprintf(out, LLM_DURATION_SIZE, "%" PRIu64 "m%" PRIu64 "%ss", m, s, fraction);
        else
            n = snprintf(out, LLM_DURATION_SIZE, "%" PRIu64 "%ss", s, fraction);
    }
    return n > 0 ? (size_t)n : 0;
}
