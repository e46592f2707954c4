#!/usr/bin/env bash
# bench/redis.sh — the Redis rows of `make bench`: checks per second of
# libratelimit with backend=redis (8 threads, through the C API) next to
# redis-benchmark at the same concurrency (PING, and EVALSHA of a script that
# only returns 1), next to the least a client of 8 blocking threads does
# (bench/redis_blocking.c: the library's own call, and that EVALSHA), and the
# Redis commands each check costs, counted by Redis.
#
# Run by scripts/bench.sh under scripts/with_redis.sh, which starts a
# throwaway redis-server on a free loopback port (RL_TEST_REDIS_URL) and stops
# it afterwards; needs build/bench/bench_redis (bench/redis_driver.c).
# Prints a markdown block on stdout (progress on stderr).
#
# Environment: REDIS_REPS (repetitions, default 7), REDIS_ITERS (checks per
# thread, all allowed; default 5000), REDIS_DENIED_ITERS (checks per thread on
# the key over its limit; default 500000), REDIS_N (requests per
# redis-benchmark run; default 100000).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${RL_TEST_REDIS_URL:?run me under scripts/with_redis.sh}"
REPS=${REDIS_REPS:-7}
ITERS=${REDIS_ITERS:-5000}
DENIED_ITERS=${REDIS_DENIED_ITERS:-500000}
N=${REDIS_N:-100000}
CLIENTS=8 # = THREADS in bench/redis_driver.c and bench/redis_blocking.c
RUNNER=build/bench/bench_redis
BLOCKING=build/bench/redis_blocking
PORT=${RL_TEST_REDIS_URL##*:}
CLI=(redis-cli -p "$PORT")

say() { echo "bench(redis): $*" >&2; }
for bin in "$RUNNER" "$BLOCKING"; do
    [[ -x $bin ]] || { say "missing $bin (scripts/bench.sh builds it)"; exit 1; }
done
have_rb=1
command -v redis-benchmark >/dev/null || { have_rb=0; say "redis-benchmark not found (Debian: redis-tools): its rows are left out"; }

work=$(mktemp -d)
monpid=
trap '[[ -n $monpid ]] && kill "$monpid" 2>/dev/null; rm -rf "$work"' EXIT

# `INFO commandstats` as "name calls usec" lines.
cmdstats() { "${CLI[@]}" info commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2 \3/p'; }
# The difference of two cmdstats snapshots as "name:calls:usec,..." (info,
# and the CONFIG GETs redis-benchmark sends once at start, left out).
cmddelta() {
    awk 'NR == FNR { b[$1] = $2; u[$1] = $3; next }
         $1 != "info" && $1 != "config|get" && $2 - b[$1] > 0 { out = out sep $1 ":" ($2 - b[$1]) ":" ($3 - u[$1]); sep = "," }
         END { print out }' "$1" "$2"
}

# ---- client commands per check, with MONITOR (short runs, not timed) -----
# MONITOR prints every command a client sent, and marks those a script ran
# inside itself "[db lua]"; the runner's two INFO commands bracket its timed
# checks. Counted here: the commands clients sent between them.
# Sets $mon to "sent=name:n,... checks=N"; the first command sent goes to
# $work/first.
monitor_case() { # case iterations
    local line
    "${CLI[@]}" monitor >"$work/monitor" 2>&1 &
    monpid=$!
    sleep 0.3
    line=$("$RUNNER" "$PORT" "$1" "$2") || exit 1
    sleep 0.3
    kill "$monpid" 2>/dev/null || true
    wait "$monpid" 2>/dev/null || true
    monpid=
    mon=$(awk '/"INFO" "commandstats"/ { n++; next }
               n == 1 && / lua\] / { next }
               n == 1 { c = tolower($4); gsub(/"/, "", c); sent[c]++; if (!first++) print > "'"$work/first"'" }
               END { s = ""; for (c in sent) { s = s sep c ":" sent[c]; sep = "," }
                     printf "sent=%s", s }' "$work/monitor")
    mon="$mon checks=$(sed -n 's/.*\tchecks=\([0-9]*\).*/\1/p' <<<"$line")"
}
say "counting client commands with MONITOR"
monitor_case allowed 200
mon_allowed=$mon
# One of those commands exactly as the library sent it (its FCALL of
# check.lua's function, or EVALSHA on a server without functions: name,
# key, arguments), for redis-benchmark to replay.
mapfile -t script_cmd < <(sed 's/^[^]]*] //' "$work/first" | grep -o '"[^"]*"' | sed 's/^"//; s/"$//')
[[ ${script_cmd[0]:-} =~ ^(FCALL|EVALSHA)$ ]] || { say "no FCALL or EVALSHA seen with MONITOR"; exit 1; }
monitor_case denied 10000
mon_denied=$mon

# ---- timed runs -----------------------------------------------------------
sha=$("${CLI[@]}" script load "return 1")
raw=$work/raw # lines: row TAB checks/s TAB checks TAB cmds TAB local denials
: >"$raw"
lib() { # case row
    local line
    line=$("$RUNNER" "$PORT" "$1" "$([[ $1 == denied ]] && echo "$DENIED_ITERS" || echo "$ITERS")") || exit 1
    awk -F'\t' -v row="$2" '{ sub(/^checks=/, "", $4); sub(/^local_denials=/, "", $5); sub(/^cmds=/, "", $6)
                              print row "\t" $3 "\t" $4 "\t" $6 "\t" $5 }' <<<"$line" >>"$raw"
}
blk() { # row command... (bench/redis_blocking.c: 8 threads, each waiting for its reply)
    local row=$1 line
    shift
    cmdstats >"$work/before"
    line=$("$BLOCKING" "$PORT" "$((N / CLIENTS))" "$@") || { say "redis_blocking $* failed"; exit 1; }
    cmdstats >"$work/after"
    # Its line: "requests=N<TAB>rps=R".
    awk -F'\t' -v row="$row" -v cmds="$(cmddelta "$work/before" "$work/after")" \
        '{ sub(/^requests=/, "", $1); sub(/^rps=/, "", $2); print row "\t" $2 "\t" $1 "\t" cmds "\t0" }' <<<"$line" >>"$raw"
}
rb() { # row command...
    local row=$1 rps
    shift
    cmdstats >"$work/before"
    rps=$(redis-benchmark -p "$PORT" -c "$CLIENTS" -n "$N" -q "$@" 2>&1 | tr '\r' '\n' |
        sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -n 1)
    cmdstats >"$work/after"
    [[ -n $rps ]] || { say "redis-benchmark $* failed"; exit 1; }
    printf '%s\t%s\t%s\t%s\t0\n' "$row" "$rps" "$N" "$(cmddelta "$work/before" "$work/after")" >>"$raw"
}
ROW_ALLOWED="libratelimit, own keys (all allowed)"
ROW_DENIED="libratelimit, one key over its limit"
ROW_SCRIPT="redis-benchmark, the library's call replayed"
ROW_EVALSHA="redis-benchmark EVALSHA (return 1)"
ROW_PING="redis-benchmark PING"
ROW_BLK_SCRIPT="8 blocking threads, the library's call replayed"
ROW_BLK_EVALSHA="8 blocking threads, EVALSHA (return 1)"
runs=(allowed denied blk_script blk_evalsha)
((have_rb)) && runs+=(script evalsha ping)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$SECONDS
for ((rep = 0; rep < REPS; rep++)); do
    n=${#runs[@]}
    for ((i = 0; i < n; i++)); do
        case ${runs[$(((i + rep) % n))]} in
            allowed) lib allowed "$ROW_ALLOWED" ;;
            denied) lib denied "$ROW_DENIED" ;;
            script) rb "$ROW_SCRIPT" "${script_cmd[@]}" ;;
            evalsha) rb "$ROW_EVALSHA" EVALSHA "$sha" 0 ;;
            ping) rb "$ROW_PING" PING ;;
            blk_script) blk "$ROW_BLK_SCRIPT" "${script_cmd[@]}" ;;
            blk_evalsha) blk "$ROW_BLK_EVALSHA" EVALSHA "$sha" 0 ;;
        esac
    done
    say "repetition $((rep + 1))/$REPS done"
done
elapsed=$((SECONDS - start))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report ---------------------------------------------------------------
# Per row: median and spread of checks/s; commands per check from the sum of
# every repetition's INFO commandstats difference over the sum of its checks.
fmt_mon() { # "sent=... checks=N" -> "1 (evalsha 1)" per check
    awk -v s="$1" 'BEGIN {
        n = split(s, f, " "); for (i = 1; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
        total = 0; parts = ""
        m = split(v["sent"], c, ",")
        for (i = 1; i <= m; i++) { split(c[i], nc, ":"); total += nc[2]; parts = parts (parts == "" ? "" : ", ") nc[1] " " sprintf("%.4g", nc[2] / v["checks"]) }
        printf "%s%s", sprintf("%.4g", total / v["checks"]), parts == "" ? "" : " (" parts ")"
    }'
}
table=$(awk -F'\t' -v ping="$ROW_PING" -v script="$ROW_SCRIPT" -v evalsha="$ROW_EVALSHA" -v allowed="$ROW_ALLOWED" -v denied="$ROW_DENIED" \
            -v blk_script="$ROW_BLK_SCRIPT" -v blk_evalsha="$ROW_BLK_EVALSHA" \
            -v mon_allowed="$(fmt_mon "$mon_allowed")" -v mon_denied="$(fmt_mon "$mon_denied")" '
    function median(list,    a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function minmax(list,    a, n, i, lo, hi) {
        n = split(list, a, " "); lo = hi = a[1]
        for (i = 2; i <= n; i++) { if (a[i] + 0 < lo + 0) lo = a[i]; if (a[i] + 0 > hi + 0) hi = a[i] }
        return sprintf("%s–%s", thousands(lo), thousands(hi))
    }
    function sortkey(name) { return (name == "evalsha" || name == "eval" || name == "fcall" || name == "ping" ? "0" : "1") name }
    function thousands(x,    s, r) {
        s = sprintf("%.0f", x); r = ""
        while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
        return s r
    }
    {
        if (!($1 in seen)) { seen[$1] = 1; rows[++nr] = $1 }
        v[$1] = v[$1] " " $2; checks[$1] += $3; local[$1] += $5
        n = split($4, c, ",")
        for (i = 1; i <= n; i++) {
            split(c[i], nc, ":")
            if (!(($1, nc[1]) in calls)) names[$1] = names[$1] " " nc[1]
            calls[$1, nc[1]] += nc[2]; usec[$1, nc[1]] += nc[3]
        }
    }
    END {
        print "| 8 concurrent clients, local Redis | checks/s (median) | min–max | ×EVALSHA | commands sent per check (MONITOR) | commands Redis ran per check (INFO commandstats) | Redis µs per check |"
        print "| --- | ---: | ---: | ---: | --- | --- | ---: |"
        order[1] = allowed; order[2] = denied; order[3] = blk_script; order[4] = blk_evalsha
        order[5] = script; order[6] = evalsha; order[7] = ping
        ref = (evalsha in seen) ? median(v[evalsha]) : 0
        for (r = 1; r <= 7; r++) {
            row = order[r]
            if (!(row in seen)) continue
            m = median(v[row])
            total = 0; parts = ""; us = 0
            k = split(names[row], nm, " ")
            # The commands clients send first, then the others by name.
            for (i = 2; i <= k; i++) {
                t = nm[i]
                for (j = i - 1; j >= 1 && sortkey(nm[j]) > sortkey(t); j--) nm[j + 1] = nm[j]
                nm[j + 1] = t
            }
            for (i = 1; i <= k; i++) {
                total += calls[row, nm[i]]
                parts = parts (parts == "" ? "" : ", ") nm[i] " " sprintf("%.4g", calls[row, nm[i]] / checks[row])
                # Time of the commands clients send; a script'"'"'s usec includes
                # the commands it runs inside.
                if (nm[i] == "evalsha" || nm[i] == "eval" || nm[i] == "fcall" || nm[i] == "ping") us += usec[row, nm[i]]
            }
            what = row == allowed || row == denied ? "checks" : "requests"
            ran = sprintf("%.4g", total / checks[row]) (parts == "" ? "" : " (" parts ")") " over " thousands(checks[row]) " " what
            if (local[row]) ran = ran ", " thousands(local[row]) " of them answered by the local over-limit cache"
            sent = row == allowed ? mon_allowed : row == denied ? mon_denied : row == script || row == blk_script ? "1 (one command per request)" : "as on the right (no script)"
            printf "| %s | %s | %s | %s | %s | %s | %.2f |\n", row, thousands(m), minmax(v[row]), ref ? sprintf("%.2f", m / ref) : "—", sent, ran, us / checks[row]
        }
    }' "$raw")

cat <<EOF
Command: \`make bench\` (Redis part: \`scripts/with_redis.sh bench/redis.sh\`, REDIS_REPS=$REPS REDIS_ITERS=$ITERS REDIS_DENIED_ITERS=$DENIED_ITERS REDIS_N=$N), $(date -u +%Y-%m-%d).
$(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1, same machine; load average before/after: $load_before / $load_after; the runs took ${elapsed} s.

Median of $REPS interleaved runs; ×EVALSHA is the ratio to redis-benchmark's
EVALSHA of \`return 1\` at the same concurrency. libratelimit: $CLIENTS threads,
one handle, \`rl_check\` through the C API, $ITERS checks per thread (own keys) or
$DENIED_ITERS (the key over its limit); redis-benchmark: \`-c $CLIENTS -n $N\`.
"8 blocking threads" (bench/redis_blocking.c, $((N / CLIENTS)) requests each): the
least a client whose callers wait for their own answers does, as
libratelimit's do; each thread on its own connection writes one command and
reads its reply, with no library, pool or parsing. redis-benchmark instead
drives all its connections from one thread.

$table
EOF
