#!/usr/bin/env bash
# Two ringcache binaries against each other on the same load, in one run (`just bench-ab OLD NEW`):
# a change to the request path is judged by how the two compare in turns, never by one figure
# against one taken earlier on this shared machine.
#
#   benches/ab.sh OLD_BINARY NEW_BINARY
#
# Each round starts, for OLD and then NEW: three peers (N=3, the cores divided among them, as
# `ringcache up` runs them) loaded with quorum GET and quorum PUT over RESP and quorum GET over
# HTTP; then one peer (N=1, every core) loaded with GET and SET over RESP. `ringcache bench`
# (from NEW) runs 50 connections on 10,000 uniform keys of 100 bytes, reads preloaded. Prints
# every run as it ends (workload, side, round, ops/s, p50 ms, p99 ms) and then the medians.
# Settings (environment): AB_SECS measured seconds per run (5), AB_WARMUP (1), AB_ROUNDS (3),
# AB_OUT where the runs are kept (a new temporary directory). Needs redis-cli, curl and jq.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: benches/ab.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
old=$(realpath "$1"); new=$(realpath "$2")
cd "$(dirname "$0")/.."
source benches/lib.sh
secs="${AB_SECS:-5}"; warmup="${AB_WARMUP:-1}"; rounds="${AB_ROUNDS:-3}"
out="${AB_OUT:-$(mktemp -d /tmp/ringcache-ab.XXXX)}"; mkdir -p "$out"; peer_logs="$out"
: > "$out/runs.tsv"

measure() { # name side round target url flags...
    local name=$1 side=$2 round=$3 target=$4 url=$5; shift 5
    "$new" bench --target "$target" --url "$url" --quiet --json -c 50 --keys 10000 --value-size 100 \
        --warmup "$warmup" --duration "$secs" --seed "$round" "$@" > "$out/$name.$side.$round.json"
    printf '%s\t%s\t%s\t%s\n' "$name" "$side" "$round" \
        "$(jq -r '[.ops_per_sec, .latency_ms.all.p50, .latency_ms.all.p99] | @tsv' "$out/$name.$side.$round.json")" \
        | tee -a "$out/runs.tsv"
}

one_side() { # side binary round
    local side=$1 round=$3 first="" resp http gossip quic id resp3="" http3=""
    bin=$2
    peer_threads=$(threads_for_peers 3)
    for id in A B C; do
        free_port resp; free_port http; free_port gossip; free_port quic
        start_peer "$side$id" "$resp" "$http" "$gossip" "$quic" 3 $first
        if [ -z "$first" ]; then first=$gossip; resp3=$resp; http3=$http; fi
        wait_port "$resp"
    done
    wait_members 3 "$http3"
    measure "quorum-GET-resp" "$side" "$round" resp "redis://127.0.0.1:$resp3" --reads 1 --preload
    measure "quorum-PUT-resp" "$side" "$round" resp "redis://127.0.0.1:$resp3" --reads 0
    measure "quorum-GET-http" "$side" "$round" http "http://127.0.0.1:$http3" --reads 1 --preload --r quorum
    stop_last 3
    peer_threads=0
    free_port resp; free_port http; free_port gossip; free_port quic
    start_peer "${side}S" "$resp" "$http" "$gossip" "$quic" 1
    wait_port "$resp"
    measure "GET-1-peer-resp" "$side" "$round" resp "redis://127.0.0.1:$resp" --reads 1 --preload
    measure "SET-1-peer-resp" "$side" "$round" resp "redis://127.0.0.1:$resp" --reads 0
    stop_last 1
}

for round in $(seq "$rounds"); do
    one_side old "$old" "$round"
    one_side new "$new" "$round"
done
echo "medians of $rounds rounds (ops/s; p99 ms), runs in $out:"
for name in quorum-GET-resp quorum-PUT-resp quorum-GET-http GET-1-peer-resp SET-1-peer-resp; do
    for side in old new; do
        awk -v n="$name" -v s="$side" '$1 == n && $2 == s { print $4, $6 }' "$out/runs.tsv" \
            | sort -n | awk -v n="$name" -v s="$side" '{ v[NR] = $1; p[NR] = $2 }
                END { m = int((NR + 1) / 2); printf "%s\t%s\t%s\t%s\n", n, s, v[m], p[m] }'
    done
done
