#!/usr/bin/env bash
# The price of consensus: redis-benchmark against a three-peer cluster (N=3, plain writes at
# W=2) on loopback, in one run: plain SET, SET … NX (a Paxos round per write) on many keys,
# and SET … IFEQ on one hot key (every client on the same key: contention). Prints one CSV row
# per test; figures go in docs/performance.md.
#
# Usage: benches/conditional_vs_plain.sh [REQUESTS] [CLIENTS]   (default 20000 and 50; needs
# redis-benchmark: apt-get install redis-tools)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20000}"
clients="${2:-50}"
source benches/lib.sh
build_ringcache

start_peer A 16391 17091 17011 17111 3
start_peer B 16392 17092 17012 17112 3 17011
start_peer C 16393 17093 17013 17113 3 17011
wait_port 16391; wait_port 16392; wait_port 16393
wait_members 3 17091 17092 17093
run() { # label, then the command redis-benchmark repeats
    local label="$1"; shift
    redis-benchmark -p 16391 -c "$clients" -n "$n" -r 100000 --csv "$@" 2>/dev/null \
        | tail -n +2 | sed "s/^\"[^\"]*\"/\"$label\"/" || echo "\"$label\",\"failed\""
}
echo '"test","rps","avg_ms","min_ms","p50_ms","p95_ms","p99_ms","max_ms"'
run "plain SET, many keys" SET "plain:__rand_int__" v
run "SET NX (consensus), many keys" SET "nx:__rand_int__" v NX
redis-cli -p 16391 set hot v >/dev/null
clients=8 run "SET IFEQ (consensus), one hot key, 8 clients" SET hot v IFEQ v
clients=8 run "plain SET, one hot key, 8 clients" SET hot v
