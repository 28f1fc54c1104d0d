#!/usr/bin/env bash
# redis-benchmark (keys drawn among 100,000: -r) against one ringcache peer (N=1), a three-peer
# cluster (N=3, R=W=2, the benchmark on one peer) and a stock redis-server, in the same run, on
# loopback; prints one CSV row per (target, test, pipeline depth). Figures go in
# docs/performance.md.
#
# Usage: benches/resp_vs_redis.sh [REQUESTS]   (default 100000; needs redis-server and
# redis-benchmark: apt-get install redis-server)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
source benches/lib.sh
build_ringcache

bench() { # label port
    for pipeline in 1 16; do
        redis-benchmark -p "$2" -t get,set,mset,incr -n "$n" -r 100000 -P "$pipeline" --csv 2>/dev/null \
            | tail -n +2 | sed "s/^/\"$1\",$pipeline,/" || echo "\"$1\",$pipeline,\"failed\""
    done
}

echo '"target","pipeline","test","rps","avg_ms","min_ms","p50_ms","p95_ms","p99_ms","max_ms"'
redis-server --port 16379 --save '' --appendonly no >/dev/null 2>&1 &
pids+=($!)
wait_port 16379
bench "redis-server" 16379

start_peer A 16380 17070 17000 17100 1
wait_port 16380
bench "ringcache N=1" 16380
kill -INT "${pids[-1]}"

start_peer A 16381 17071 17001 17101 3
start_peer B 16382 17072 17002 17102 3 17001
start_peer C 16383 17073 17003 17103 3 17001
wait_port 16381; wait_port 16382; wait_port 16383
wait_members 3 17071 17072 17073
bench "ringcache N=3 R=W=2" 16381
