#!/usr/bin/env bash
# Syscalls per response (BENCHMARKS.md, "Syscalls per response"): counts what the server
# process PID does with `strace -c -f` while N sequential curl GETs of one hot object run
# (each on a new connection), after two GETs that make it hot. Writes strace's table to
# OUT; divide by N. Needs strace and curl; run as root (ptrace).
#   benches/syscalls.sh PID URL N OUT
set -euo pipefail
pid=$1 url=$2 n=$3 out=$4
for _ in 1 2; do curl -s -o /dev/null "$url"; done
strace -c -f -p "$pid" -o "$out" 2>/dev/null &
tracer=$!
sleep 1 # strace attaches to every thread before the first counted request
for _ in $(seq "$n"); do curl -s -o /dev/null "$url"; done
sleep 0.5
kill -INT "$tracer"
wait "$tracer" 2>/dev/null || true
