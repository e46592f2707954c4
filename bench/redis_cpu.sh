#!/usr/bin/env bash
# bench/redis_cpu.sh [SCRIPT.lua...] — Redis CPU per call of check.lua (or
# of each script given, interleaved), by case: INFO commandstats
# usec_per_call of EVALSHA (which includes the commands the script runs
# inside), redis-benchmark replaying one check per request (8 clients, 4
# keys per case via -r 4: many calls on a few keys). "ok" cases never deny;
# "deny" cases run a small rate hammered far past its limit (mostly denied,
# some allowed). The floor is EVALSHA of `return 1` on the same server.
# Prints a markdown table of the minimum over the repetitions.
# Run under scripts/with_redis.sh. Env: CPU_N (requests per run, 10000),
# CPU_REPS (repetitions, 7).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RL_TEST_REDIS_URL:?run me under scripts/with_redis.sh}"
PORT=${RL_TEST_REDIS_URL##*:}
CLI=(redis-cli -p "$PORT")
N=${CPU_N:-10000}
REPS=${CPU_REPS:-7}
(($#)) || set -- src/store/redis/check.lua
one=$("${CLI[@]}" script load "return 1")
k() { echo "{rl:__rand_int__}:$1"; }
# The arguments after the sha of each case.
declare -A cases=(
  [tb1-ok]="1 $(k t1) c 1 '' t 1000000 1000000 1000000 1"
  [tb1-deny]="1 $(k t2) c 1 '' t 1000 1000000 10 1000"
  [tb2-ok]="2 $(k t3) $(k t4) c 1 '' t 1000000 1000000 1000000 1 t 100000000 60000000 100000000 1"
  [tb2-deny]="2 $(k t5) $(k t6) c 1 '' t 1000 1000000 10 1000 t 50000 60000000 50000 1200"
  [sw1-ok]="1 $(k s1) c 1 '' s 100000000 60000000 100000000 1"
  [sw1-deny]="1 $(k s2) c 1 '' s 1000 1000000 1000 1000"
  [fw1-ok]="1 $(k f1) c 1 '' f 100000000 60000000 100000000 1"
  [fw1-deny]="1 $(k f2) c 1 '' f 1000 1000000 1000 1000"
)
order=(tb1-ok tb1-deny tb2-ok tb2-deny sw1-ok sw1-deny fw1-ok fw1-deny)
shas=()
for src in "$@"; do shas+=("$("${CLI[@]}" script load "$(cat "$src")")"); done
# usec_per_call of one redis-benchmark run: ARGS...
# With CPU_METRIC=thread: the server main thread's CPU time per request
# (/proc/PID/task/PID/schedstat, ns), which time other processes take from
# it does not inflate (usec_per_call is wall time); includes the network.
PID=$("${CLI[@]}" info server | tr -d '\r' | sed -n 's/^process_id://p')
cpu_ns() { cut -d' ' -f1 "/proc/$PID/task/$PID/schedstat"; }
run() {
  local t0 t1
  "${CLI[@]}" config resetstat >/dev/null
  t0=$(cpu_ns)
  eval "redis-benchmark -p $PORT -c 8 -n $N -r 4 -q $*" >/dev/null 2>&1
  t1=$(cpu_ns)
  if [[ ${CPU_METRIC:-} == thread ]]; then
    awk -v a="$t0" -v b="$t1" -v n="$N" 'BEGIN { printf "%.2f\n", (b - a) / n / 1000 }'
  else
    "${CLI[@]}" info commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p'
  fi
}
minof() { tr ' ' '\n' | sort -g | head -n 1; }
# The minimum over REPS runs, the scripts interleaved within each repetition
# (the least disturbed run: other load on the machine only adds).
declare -A res
for ((r = 0; r < REPS; r++)); do
  res[floor]+=" $(run EVALSHA "$one" 0)"
  for c in "${order[@]}"; do
    for ((j = 0; j < ${#shas[@]}; j++)); do
      res[$c,$j]+=" $(run EVALSHA "${shas[$j]}" "${cases[$c]}")"
    done
  done
done
printf '| case |'; for src in "$@"; do printf ' %s |' "$(basename "$src")"; done; echo
printf '| --- |'; for src in "$@"; do printf ' ---: |'; done; echo
printf '| return 1 (floor) | %s |\n' "$(minof <<<"${res[floor]# }")"
for c in "${order[@]}"; do
  printf '| %s |' "$c"
  for ((j = 0; j < ${#shas[@]}; j++)); do printf ' %s |' "$(minof <<<"${res[$c,$j]# }")"; done
  echo
done
