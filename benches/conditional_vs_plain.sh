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
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin ringcache -q
bin="$target/release/ringcache"
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_peer() { # id resp_port http_port gossip_port quic_port [seed]
    local seed=()
    [ -n "${6:-}" ] && seed=(--seed "127.0.0.1:$6")
    RINGCACHE_CLUSTER_SECRET="$secret" "$bin" serve --id "$1" --resp "127.0.0.1:$2" \
        --http "127.0.0.1:$3" --gossip "127.0.0.1:$4" --peer-addr "127.0.0.1:$5" \
        --replicas 3 --max-memory 1GiB "${seed[@]}" >/dev/null 2>&1 &
    pids+=($!)
}
wait_port() { for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.1; done; exit 1; }

start_peer A 16391 17091 17011 17111
start_peer B 16392 17092 17012 17112 17011
start_peer C 16393 17093 17013 17113 17011
wait_port 16391; wait_port 16392; wait_port 16393
for port in 17091 17092 17093; do # every peer sees three members up
    for _ in $(seq 200); do
        [ "$(curl -s "http://127.0.0.1:$port/v1/cluster" | grep -o '"up":true' | wc -l)" = 3 ] && break
        sleep 0.1
    done
done
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
