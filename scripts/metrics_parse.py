#!/usr/bin/env python3
"""rl_metrics read by a Prometheus parser nobody here wrote.

Loads the library with ctypes, makes a limiter (on RL_TEST_BACKEND_CONFIG's
backend when set, as the C tests do; memory otherwise), denies keys made to
break an exposition (quotes, newlines, braces, backslashes, NULs, invalid
UTF-8, a 1 MiB key, a key that reads like the end of a sample and a new
one), dumps rl_metrics with RL_METRICS_TOP_KEYS and labels, and feeds the
text to prometheus_client.parser.text_string_to_metric_families (pinned in
the Makefile, installed in build/venv). The parser must accept it and yield
exactly the expected samples, no more (no injected sample); each key's label
value, decoded from the key encoding of include/ratelimit.h (written again
here from its description), must give back the key's first 64 bytes.

    build/venv/bin/python scripts/metrics_parse.py [-v] [LIBRARY]

-v prints the exposition and the parser's view of it. LIBRARY defaults to
target/release/libratelimit.so. Ends with "N passed, N failed"; exit 1 if
any check failed.
"""

import ctypes
import os
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

RL_OK = 0
RL_TOP_LIMITED = 1
RL_METRICS_TOP_KEYS = 1
KEY_BYTES = 64

passed = 0
failed = 0


def check(ok, what, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAILED: {what}" + (f"\n    {detail}" if detail else ""), flush=True)
    return ok


class Decision(ctypes.Structure):
    _fields_ = [("allowed", ctypes.c_uint32), ("rate_index", ctypes.c_uint32), ("limit", ctypes.c_uint64),
                ("remaining", ctypes.c_uint64), ("reset_ms", ctypes.c_uint64), ("retry_after_ms", ctypes.c_uint64),
                ("window_ms", ctypes.c_uint64)]


class Stats(ctypes.Structure):
    _fields_ = [(f, ctypes.c_uint64) for f in ("allowed", "limited", "errors", "keys", "evictions", "local_denials")]


def load(path):
    lib = ctypes.CDLL(path)
    lib.rl_create.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.rl_create.restype = ctypes.c_int
    lib.rl_destroy.argtypes = [ctypes.c_void_p]
    lib.rl_destroy.restype = None
    lib.rl_check.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64,
                             ctypes.POINTER(Decision)]
    lib.rl_check.restype = ctypes.c_int
    lib.rl_stats_get.argtypes = [ctypes.c_void_p, ctypes.POINTER(Stats)]
    lib.rl_stats_get.restype = ctypes.c_int
    lib.rl_metrics.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]
    lib.rl_metrics.restype = ctypes.c_int64
    lib.rl_last_error.argtypes = []
    lib.rl_last_error.restype = ctypes.c_char_p
    lib.rl_shm_unlink.argtypes = [ctypes.c_char_p]
    lib.rl_shm_unlink.restype = ctypes.c_int
    return lib


def decode_key(text):
    """The key encoding of rl_metrics (include/ratelimit.h), strictly:
    printable ASCII but '\\' as is, '\\\\' for '\\', '\\xHH' (lower-case) for
    any other byte."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            if not " " <= c <= "~":
                raise ValueError(f"{c!r} at {i} is not printable ASCII")
            out.append(ord(c))
            i += 1
        elif text[i + 1:i + 2] == "\\":
            out.append(0x5C)
            i += 2
        elif re.fullmatch(r"x[0-9a-f]{2}", text[i + 1:i + 4]):
            b = int(text[i + 2:i + 4], 16)
            if 0x20 <= b < 0x7F:
                raise ValueError(f"\\x{b:02x} at {i} stands for a printable character")
            out.append(b)
            i += 4
        else:
            raise ValueError(f"bad escape at {i}: {text[i:i + 4]!r}")
    return bytes(out)


HOSTILE_KEYS = [
    b'"} 1\nfake_metric 2',
    b'x"} 7\n# TYPE fake_gauge gauge\nfake_gauge{a="b"} 3\n',
    b'"quoted"',
    b"new\nline",
    b"carriage\r\nreturn",
    b"}brace{",
    b"back\\slash\\",
    b"\\x41 looks escaped \\\\",
    b"nul\x00byte\x00",
    b"\xff\xfe invalid UTF-8 \xc3\x28 \xed\xa0\x80",
    "é ✓ UTF-8".encode(),
    b"",
    bytes(range(0, 64)),
    bytes(range(192, 256)),
    b'\\"}\n' * (1 << 18),  # 1 MiB
    b"k" * 64 + b"\n} 1",  # the hostile part past the 64 bytes kept
    b"plain-api-key-123",
]

LABELS = 'zone="edge \\"1\\" \\\\ \\n",instance="a}b,c=\\"d\\"",empty=""'
LABELS_PARSED = {"zone": 'edge "1" \\ \n', "instance": 'a}b,c="d"', "empty": ""}


def backend_config():
    cfg = os.environ.get("RL_TEST_BACKEND_CONFIG", "")
    return cfg.replace("{n}", f"{os.getpid()}.metrics")


def main():
    args = [a for a in sys.argv[1:] if a != "-v"]
    verbose = "-v" in sys.argv[1:]
    lib = load(args[0] if args else "target/release/libratelimit.so")
    backend = backend_config()
    redis = "backend=redis" in backend
    config = ("rate=1/hour " + backend).strip()
    lim = ctypes.c_void_p()
    rc = lib.rl_create(config.encode(), ctypes.byref(lim))
    if not check(rc == RL_OK, f"rl_create({config!r})", lib.rl_last_error()):
        return
    try:
        run(lib, lim, redis)
    finally:
        lib.rl_destroy(lim)
        name = re.search(r"name=(\S+)", backend)
        if name and "backend=shm" in backend:
            lib.rl_shm_unlink(name.group(1).encode())
    if verbose:
        print(f"(config {config!r})")


def run(lib, lim, redis):
    # Key i is checked i + 2 times: 1 allowed, i + 1 denied (distinct counts).
    d = Decision()
    for i, key in enumerate(HOSTILE_KEYS):
        for _ in range(i + 2):
            rc = lib.rl_check(lim, key, len(key), 1, ctypes.byref(d))
            check(rc == RL_OK, f"rl_check of key {i}", lib.rl_last_error())
    stats = Stats()
    check(lib.rl_stats_get(lim, ctypes.byref(stats)) == RL_OK, "rl_stats_get")

    need = lib.rl_metrics(lim, LABELS.encode(), RL_METRICS_TOP_KEYS, None, 0)
    if not check(need > 0, "rl_metrics(NULL, 0) gives the length", lib.rl_last_error()):
        return
    buf = ctypes.create_string_buffer(2 * need + 1)
    got = lib.rl_metrics(lim, LABELS.encode(), RL_METRICS_TOP_KEYS, buf, len(buf))
    check(got == need and got < len(buf), "rl_metrics fits in twice the length asked", f"{got} vs {need}")
    raw = buf.raw[:got]
    check(b"\x00" not in raw, "no NUL in the text")
    text = raw.decode("utf-8")
    if "-v" in sys.argv:
        print("---- exposition\n" + text, end="")

    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser refused it: the test's main failure
        check(False, "prometheus_client parses the exposition", repr(e))
        return
    check(True, "prometheus_client parses the exposition")

    types = {f.name: f.type for f in families}
    want_types = {"ratelimit_checks": "counter", "ratelimit_errors": "counter", "ratelimit_keys": "gauge",
                  "ratelimit_evictions": "counter", "ratelimit_top_limited": "gauge"}
    if redis:
        want_types["ratelimit_local_denials"] = "counter"
    else:
        want_types["ratelimit_capacity"] = "gauge"
    check(types == want_types, "exactly the expected families, with their types", f"{types}")

    samples = sorted((s.name, tuple(sorted(s.labels.items())), s.value) for f in families for s in f.samples)
    n = len(HOSTILE_KEYS)
    denied = sum(i + 1 for i in range(n))

    def series(name, value, **extra):
        return (name, tuple(sorted({**LABELS_PARSED, **extra}.items())), float(value))

    want = [
        series("ratelimit_checks_total", n, decision="allowed"),
        series("ratelimit_checks_total", denied, decision="limited"),
        series("ratelimit_errors_total", 0),
        series("ratelimit_keys", 0 if redis else n),
        series("ratelimit_evictions_total", 0),
    ]
    if redis:
        want.append(series("ratelimit_local_denials_total", stats.local_denials))
    else:
        want.append(series("ratelimit_capacity", 100000))
    # The top keys, as the parser gives them: decoded later.
    tops = [s for s in samples if s[0] == "ratelimit_top_limited"]
    rest = [s for s in samples if s[0] != "ratelimit_top_limited"]
    check(rest == sorted(want), "the counters' samples are exactly the expected ones",
          f"got {rest}\n    want {sorted(want)}")
    check(stats.allowed == n and stats.limited == denied, "rl_stats_get agrees", f"{stats.allowed} {stats.limited}")

    # Every key once, by its first 64 bytes, with its denials; nothing else.
    want_keys = {}
    for i, key in enumerate(HOSTILE_KEYS):
        want_keys[key[:KEY_BYTES]] = want_keys.get(key[:KEY_BYTES], 0) + i + 1
    got_keys = {}
    for name, labels, value in tops:
        labels = dict(labels)
        key_text = labels.pop("key", None)
        check(labels == LABELS_PARSED, "a top key sample has the caller's labels", f"{labels}")
        try:
            key = decode_key(key_text)
        except (TypeError, ValueError) as e:
            check(False, "a top key's label decodes", f"{key_text!r}: {e}")
            continue
        check(key not in got_keys, "each key has one sample", repr(key))
        got_keys[key] = value
    check(got_keys == {k: float(v) for k, v in want_keys.items()},
          "the decoded keys are the keys' first 64 bytes, with their denials",
          f"got {sorted(got_keys.items())}\n    want {sorted(want_keys.items())}")
    check(not any(s[0].startswith("fake") for s in samples), "no injected sample")

    if "-v" in sys.argv:
        print("---- the parser's view")
        for f in families:
            print(f"family {f.name} ({f.type}): {f.documentation}")
            for s in f.samples:
                print(f"    {s.name} {s.labels} {s.value}")


if __name__ == "__main__":
    main()
    print(f"metrics_parse: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
