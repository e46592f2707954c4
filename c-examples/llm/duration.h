/*
 * duration.h — a span of milliseconds written as Go's time.Duration.String()
 * writes it, the form OpenAI-style x-ratelimit-reset-* headers use:
 *
 *   0 -> "0s"   250 -> "250ms"   1000 -> "1s"   1500 -> "1.5s"
 *   360000 -> "6m0s"   3723000 -> "1h2m3s"   3600000 -> "1h0m0s"
 *
 * Under a second: whole milliseconds and "ms". From a second: hours (when
 * any), minutes (when any hours or minutes), then seconds, always, with the
 * milliseconds as a decimal fraction without trailing zeros.
 */
#ifndef RL_EXAMPLE_LLM_DURATION_H
#define RL_EXAMPLE_LLM_DURATION_H

#include <stddef.h>
#include <stdint.h>

/* Room llm_format_duration() needs, the NUL included (UINT64_MAX ms fits). */
#define LLM_DURATION_SIZE 48

/* Writes ms into out (LLM_DURATION_SIZE bytes), NUL-terminated; returns
 * the text's length. */
size_t llm_format_duration(uint64_t ms, char *out);

#endif /* RL_EXAMPLE_LLM_DURATION_H */
