#!/usr/bin/env bash
# bench/redis_cpu.sh [SCRIPT.lua...] — Redis CPU per call of check.lua (or
# of each script given, interleaved), by case: INFO commandstats
# usec_per_call of EVALSHA or FCALL (which includes the commands the script runs
# inside), redis-benchmark replaying one check per request (8 clients, 4
# keys per case via -r 4: many calls on a few keys). "ok" cases never deny;
# "deny" cases run a small rate hammered far past its limit (mostly denied,
# some allowed). The floor is `return 1`, called the same way, on the same server.
# Prints a markdown table of the minimum over the repetitions.
# Run under scripts/with_redis.sh. Env: CPU_N (requests per run, 10000),
# CPU_REPS (repetitions, 7), CPU_METRIC (see run below), CPU_CASES (the cases
# to run, by name, default all), CPU_CALLS (how each script is called, one
# column each: "evalsha" (default), "fcall" (the script as a Redis Function
# library, as script.rs builds it: Redis >= 7) or "evalsha fcall"),
# CPU_FOREIGN (another library's script, not check.lua's arguments: one more
# column per way of calling it, measured on the same server in the same run)
# with CPU_FOREIGN_ARGS (its arguments after the sha, one case a line:
# "CASE: NUMKEYS KEY... ARG...", @KEY standing for a key of the case's own
# (@KEY2 for a second: the suffix stays);
# cases it has no line for are left empty, "—") and CPU_FOREIGN_CALLS (how
# it is called, as CPU_CALLS; default CPU_CALLS), e.g.
#   CPU_FOREIGN=/tmp/redis_rate_allow.lua CPU_FOREIGN_CALLS=evalsha CPU_FOREIGN_ARGS=$'tb1-ok: 1 @KEY 1000000 1000000 1 1'
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RL_TEST_REDIS_URL:?run me under scripts/with_redis.sh}"
PORT=${RL_TEST_REDIS_URL##*:}
CLI=(redis-cli -p "$PORT")
BENCH=(redis-benchmark -p "$PORT")
N=${CPU_N:-10000}
REPS=${CPU_REPS:-7}
if [[ ${CPU_METRIC:-} == ir || ${CPU_METRIC:-} == ircall ]]; then
  # Instructions instead of time: a server of our own under valgrind's
  # callgrind (on a unix socket), whose counts the load on the machine does
  # not change: one repetition of fewer requests is enough.
  N=${CPU_N:-1000}
  REPS=${CPU_REPS:-1}
  IRDIR=$(mktemp -d "${TMPDIR:-/tmp}/rl-ir.XXXXXX")
  valgrind --tool=callgrind --callgrind-out-file="$IRDIR/out" redis-server --port 0 \
    --unixsocket "$IRDIR/sock" --save '' --appendonly no --dir "$IRDIR" >"$IRDIR/log" 2>&1 &
  IRPID=$!
  trap 'kill "$IRPID" 2>/dev/null; wait "$IRPID" 2>/dev/null; rm -rf "$IRDIR"' EXIT
  CLI=(redis-cli -s "$IRDIR/sock")
  BENCH=(redis-benchmark -s "$IRDIR/sock")
  for _ in $(seq 1 300); do "${CLI[@]}" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
(($#)) || set -- src/store/redis/check.lua
CALLS=(${CPU_CALLS:-evalsha})
one=$("${CLI[@]}" script load "return 1")
"${CLI[@]}" function flush >/dev/null 2>&1 || true
# A script as a function library named NAME, the way script.rs makes one:
# the lines above the line "-- each call --" are the library's body (run
# once, at FUNCTION LOAD), the lines below it the function's (run per call,
# KEYS and ARGV its parameters); with no such line, all of it runs per call.
library() {
  if grep -qx -- '-- each call --' "$1"; then
    { echo "#!lua name=$2"; sed '/^-- each call --$/,$d' "$1"
      echo "redis.register_function('$2', function(KEYS, ARGV)"; sed '1,/^-- each call --$/d' "$1"; echo "end)"; }
  else
    { echo "#!lua name=$2"; echo "redis.register_function('$2', function(KEYS, ARGV)"; cat "$1"; echo "end)"; }
  fi
}
"${CLI[@]}" function load "$(printf '#!lua name=one\nredis.register_function(\"one\", function() return 1 end)')" >/dev/null 2>&1 || true
k() { echo "{rl:__rand_int__}:$1"; }
# The arguments after the sha of each case.
declare -A cases=(
  [tb1-ok]="1 $(k t1) 1 t 1000000 1"
  [tb1-deny]="1 $(k t2) 1 t 10 1000"
  [tb2-ok]="1 $(k t3) 1 t 1000000 1 t 100000000 1"
  [tb2-deny]="1 $(k t5) 1 t 10 1000 t 50000 1200"
  [sw1-ok]="1 $(k s1) 1 s 100000000 60000000"
  [sw1-deny]="1 $(k s2) 1 s 1000 1000000"
  [fw1-ok]="1 $(k f1) 1 f 100000000 60000000"
  [fw1-deny]="1 $(k f2) 1 f 1000 1000000"
)
if [[ ${CPU_METRIC:-} == ir* ]]; then
  # A callgrind'ed server answers ~3,000 requests/s: the deny cases' rates
  # at 10/s per key, so that they deny there too.
  cases[tb1-deny]="1 $(k t2) 1 t 10 100000"
  cases[tb2-deny]="1 $(k t5) 1 t 10 100000 t 50000 1200"
  cases[sw1-deny]="1 $(k s2) 1 s 10 1000000"
  cases[fw1-deny]="1 $(k f2) 1 f 10 1000000"
fi
# The foreign script's cases, by name (same keys scheme: {rl:...}).
declare -A fcases=()
if [[ -n ${CPU_FOREIGN:-} ]]; then
  while IFS= read -r line; do
    [[ $line =~ ^[[:space:]]*([a-z0-9-]+):[[:space:]]*(.*)$ ]] || continue
    fcases[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]//@KEY/$(k "x${BASH_REMATCH[1]}")}
  done <<<"${CPU_FOREIGN_ARGS:-}"
  ((${#fcases[@]})) || { echo "CPU_FOREIGN_ARGS has no \"CASE: ARGS\" line" >&2; exit 1; }
fi
order=(${CPU_CASES:-tb1-ok tb1-deny tb2-ok tb2-deny sw1-ok sw1-deny fw1-ok fw1-deny})
# One column per script and way of calling it: the command and its first
# argument (sha or function name).
cols=() heads=() foreign=() j=0
for src in "$@" ${CPU_FOREIGN:+"$CPU_FOREIGN"}; do
  calls=("${CALLS[@]}")
  [[ -n ${CPU_FOREIGN:-} && $src == "$CPU_FOREIGN" ]] && calls=(${CPU_FOREIGN_CALLS:-${CALLS[*]}})
  for call in "${calls[@]}"; do
    foreign+=("$([[ -n ${CPU_FOREIGN:-} && $src == "$CPU_FOREIGN" ]] && echo 1 || echo 0)")
    if [[ $call == fcall ]]; then
      "${CLI[@]}" function load "$(library "$src" "f$j")" >/dev/null
      cols+=("FCALL f$j")
    else
      cols+=("EVALSHA $("${CLI[@]}" script load "$(cat "$src")")")
    fi
    heads+=("$(basename "$src") $call")
    j=$((j + 1))
  done
done
# The arguments column J sends in case C (empty: it has no such case).
args_of() {
  local a
  if ((${foreign[$2]})); then a=${fcases[$1]:-}; else a=${cases[$1]}; fi
  echo "${a//\{rl:/\{rl$2:}"
}
# Each column must answer each case (not an error, which would be cheap).
for c in "${order[@]}"; do
  for ((j = 0; j < ${#cols[@]}; j++)); do
    col=${cols[$j]} args=$(args_of "$c" "$j")
    [[ -n $args ]] || continue
    reply=$(eval "${CLI[*]} $col ${args//__rand_int__/000000000000}" 2>&1)
    if [[ $reply == *ERR* || $reply == *rror* ]]; then echo "$col $c: $reply" >&2; exit 1; fi
  done
done
# usec_per_call of one redis-benchmark run: ARGS...
# With CPU_METRIC=ir: thousands of instructions the server ran per request
# (callgrind's count, user space only: parsing, the script, the reply).
# With CPU_METRIC=ircall: those of the command alone (Redis's call(), with
# the commands the script runs inside it): what usec_per_call times, in
# instructions (needs callgrind_annotate).
# With CPU_METRIC=thread: the server main thread's CPU time per request
# (/proc/PID/task/PID/schedstat, ns), which time other processes take from
# it does not inflate (usec_per_call is wall time); includes the network.
PID=$("${CLI[@]}" info server | tr -d '\r' | sed -n 's/^process_id://p')
cpu_ns() { cut -d' ' -f1 "/proc/$PID/task/$PID/schedstat"; }
run() {
  local t0 t1
  local cmd=${1,,}
  "${CLI[@]}" config resetstat >/dev/null
  if [[ ${CPU_METRIC:-} == ir* ]]; then
    callgrind_control -z "$IRPID" >/dev/null 2>&1
    eval "${BENCH[*]} -c 8 -n $N -r 4 -q $*" >/dev/null 2>&1
    rm -f "$IRDIR"/out.*
    callgrind_control -d "$IRPID" >/dev/null 2>&1
    if [[ $CPU_METRIC == ircall ]]; then
      # The outermost call() (a script's inner commands are call'2).
      callgrind_annotate --inclusive=yes --threshold=100 "$IRDIR"/out.* 2>/dev/null |
        awk -v n="$N" '!done && $3 ~ /:call$/ { gsub(/,/, "", $1); printf "%.2f\n", $1 / n / 1000; done = 1 }'
    else
      awk -v n="$N" '/^totals:/ { printf "%.2f\n", $2 / n / 1000 }' "$IRDIR"/out.*
    fi
    return
  fi
  t0=$(cpu_ns)
  eval "${BENCH[*]} -c 8 -n $N -r 4 -q $*" >/dev/null 2>&1
  t1=$(cpu_ns)
  if [[ ${CPU_METRIC:-} == thread ]]; then
    awk -v a="$t0" -v b="$t1" -v n="$N" 'BEGIN { printf "%.2f\n", (b - a) / n / 1000 }'
  else
    "${CLI[@]}" info commandstats | tr -d '\r' | sed -n "s/^cmdstat_$cmd:.*usec_per_call=\\([0-9.]*\\).*/\\1/p"
  fi
}
minof() { tr ' ' '\n' | sort -g | head -n 1; }
# The minimum over REPS runs, the scripts interleaved within each repetition
# (the least disturbed run: other load on the machine only adds).
declare -A res
for ((r = 0; r < REPS; r++)); do
  for ((j = 0; j < ${#cols[@]}; j++)); do
    if [[ ${cols[$j]} == FCALL* ]]; then
      res[floor,$j]+=" $(run FCALL one 0)"
    else
      res[floor,$j]+=" $(run EVALSHA "$one" 0)"
    fi
  done
  for c in "${order[@]}"; do
    for ((j = 0; j < ${#cols[@]}; j++)); do
      # Each column its own keys: the scripts may keep states of other shapes.
      args=$(args_of "$c" "$j")
      [[ -n $args ]] && res[$c,$j]+=" $(run ${cols[$j]} "$args")"
    done
  done
done
printf '| case |'; for h in "${heads[@]}"; do printf ' %s |' "$h"; done; echo
printf '| --- |'; for h in "${heads[@]}"; do printf ' ---: |'; done; echo
for c in floor "${order[@]}"; do
  if [[ $c == floor ]]; then printf '| return 1 (floor) |'; else printf '| %s |' "$c"; fi
  for ((j = 0; j < ${#cols[@]}; j++)); do
    if [[ -n ${res[$c,$j]:-} ]]; then printf ' %s |' "$(minof <<<"${res[$c,$j]# }")"; else printf ' — |'; fi
  done
  echo
done
