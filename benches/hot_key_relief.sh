#!/usr/bin/env bash
# Hot-key relief on reads: how much of a skewed read load the busiest of three peers
# coordinates, and the p99 the bench sees, when a ring-aware client sends every read of a key to
# its first live replica (`--read-from first`, the routing before the relief) or to each live
# replica in turn (`--read-from spread`). Three release peers on loopback (N = 3), one bench
# process, zipf θ = 1.2 over 10,000 keys, 95% reads, at r=one and r=quorum; RUNS runs of each,
# interleaved so both routings see the same machine. Prints one CSV row per run; the medians
# go in docs/performance.md.
#
# Usage: benches/hot_key_relief.sh [RUNS] [SECONDS]   (defaults 3 and 8)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
secs="${2:-8}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin ringcache -q
bin="$target/release/ringcache"
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
# SIGINT stops a peer at once (SIGTERM would make it hand its data off first).
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_peer() { # id http_port gossip_port quic_port [seed]
    local seed=()
    [ -n "${5:-}" ] && seed=(--seed "127.0.0.1:$5")
    RINGCACHE_CLUSTER_SECRET="$secret" "$bin" serve --id "$1" --no-resp \
        --http "127.0.0.1:$2" --gossip "127.0.0.1:$3" --peer-addr "127.0.0.1:$4" \
        --max-memory 256MiB "${seed[@]}" >/dev/null 2>&1 &
    pids+=($!)
}

ports=(17171 17172 17173)
start_peer A 17171 17101 17201
start_peer B 17172 17102 17202 17101
start_peer C 17173 17103 17203 17101
for port in "${ports[@]}"; do # every peer sees three members up
    for _ in $(seq 300); do
        [ "$(curl -s "http://127.0.0.1:$port/v1/cluster" | grep -o '"up":true' | wc -l)" = 3 ] && break
        sleep 0.1
    done
done
url="http://127.0.0.1:${ports[0]}"

# Client requests each peer coordinated so far (reads that hit or missed, writes received).
served() { for port in "${ports[@]}"; do
    curl -s "http://127.0.0.1:$port/v1/stats" | jq '.hits + .misses + .client_writes'
done | paste -sd' '; }

common=(--url "$url" --ring -c 32 --keys 10000 --zipf 1.2 --reads 0.95 --quiet --json)
"$bin" bench "${common[@]}" --preload --duration 1 --warmup 0 >/dev/null

echo '"routing","r","run","ops_per_sec","p99_ms","busiest_share"'
for run in $(seq "$runs"); do
    for r in one quorum; do
        for routing in first spread; do
            before=($(served))
            report=$("$bin" bench "${common[@]}" --r "$r" --read-from "$routing" \
                --duration "$secs" --warmup 1 --seed "$run")
            after=($(served))
            share=$(python3 -c "
d=[a-b for a,b in zip(map(int,'${after[*]}'.split()),map(int,'${before[*]}'.split()))]
print(f'{max(d)/sum(d):.3f}')")
            echo "\"$routing\",\"$r\",$run,$(jq -r '"\(.ops_per_sec|floor),\(.latency_ms.all.p99)"' <<<"$report"),$share"
        done
    done
done
