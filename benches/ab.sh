#!/usr/bin/env bash
# Two ringcache binaries against each other on the same load, in one run (`just bench-ab OLD NEW`):
# a change to the request path is judged by how the two compare in turns, never by one figure
# against one taken earlier on this shared machine.
#
#   benches/ab.sh OLD_BINARY NEW_BINARY
#
# Each round starts, for OLD and then NEW: three peers (N=3, the cores divided among them, as
# `ringcache up` runs them) loaded with quorum GET and quorum PUT over RESP and quorum GET over
# HTTP; then one peer (N=1, every core) loaded with GET and SET over RESP and over HTTP. `ringcache bench`
# (from NEW) runs 50 connections on 10,000 uniform keys of 100 bytes, reads preloaded. Prints
# every run as it ends (workload, side, round, ops/s, p50 ms, p99 ms, and the CPU time the
# peers spent per request in µs, user and system, summed over the peers) and then the medians.
# CPU per request is the steadier figure on a shared machine: a neighbour's load slows both
# sides' throughput, but barely changes what each request costs.
# Settings (environment): AB_SECS measured seconds per run (5), AB_WARMUP (1), AB_ROUNDS (3),
# AB_OUT where the runs are kept (a new temporary directory), AB_ONLY a regular expression: only
# the workloads it matches run (e.g. `http`). Needs redis-cli, curl and jq.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: benches/ab.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
old=$(realpath "$1"); new=$(realpath "$2")
cd "$(dirname "$0")/.."
source benches/lib.sh
secs="${AB_SECS:-5}"; warmup="${AB_WARMUP:-1}"; rounds="${AB_ROUNDS:-3}"
out="${AB_OUT:-$(mktemp -d /tmp/ringcache-ab.XXXX)}"; mkdir -p "$out"; peer_logs="$out"
: > "$out/runs.tsv"

# CPU time (clock ticks, user + system) the processes named spent so far.
cpu_ticks() { # pid...
    local pid total=0
    for pid in "$@"; do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
    echo "$total"
}

measure() { # name side round target url flags... (peers: the last $peer_count started)
    local name=$1 side=$2 round=$3 target=$4 url=$5 before after; shift 5
    [[ $name =~ ${AB_ONLY:-.} ]] || return 0
    local peers=("${pids[@]: -$peer_count}") flags=() flag
    # Keys are preloaded in a run of their own, so that the measured run's CPU is its load's.
    for flag in "$@"; do
        if [ "$flag" = --preload ]; then
            "$new" bench --target "$target" --url "$url" --quiet -c 50 --keys 10000 --value-size 100 \
                --preload --reads 1 --warmup 0 --duration 1 >/dev/null
        else
            flags+=("$flag")
        fi
    done
    set -- "${flags[@]}"
    before=$(cpu_ticks "${peers[@]}")
    # The warm-up's share of the CPU is not counted: the bench runs warm-up + measured
    # seconds, and the ticks are scaled to the measured part.
    "$new" bench --target "$target" --url "$url" --quiet --json -c 50 --keys 10000 --value-size 100 \
        --warmup "$warmup" --duration "$secs" --seed "$round" "$@" > "$out/$name.$side.$round.json"
    after=$(cpu_ticks "${peers[@]}")
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$side" "$round" \
        "$(jq -r '[.ops_per_sec, .latency_ms.all.p50, .latency_ms.all.p99] | @tsv' "$out/$name.$side.$round.json")" \
        "$(jq -r --argjson ticks $((after - before)) --argjson hz "$(getconf CLK_TCK)" \
            --argjson secs "$secs" --argjson warmup "$warmup" \
            'if .ops_per_sec > 0 then ($ticks / $hz * 1e6 * $secs / ($secs + $warmup))
                / (.ops_per_sec * $secs) | . * 100 | round / 100 else "-" end' \
            "$out/$name.$side.$round.json")" \
        | tee -a "$out/runs.tsv"
}

one_side() { # side binary round
    local side=$1 round=$3 first="" resp http gossip quic id resp3="" http3=""
    bin=$2
    peer_threads=$(threads_for_peers 3)
    peer_count=3
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
    peer_count=1
    free_port resp; free_port http; free_port gossip; free_port quic
    start_peer "${side}S" "$resp" "$http" "$gossip" "$quic" 1
    wait_port "$resp"
    measure "GET-1-peer-resp" "$side" "$round" resp "redis://127.0.0.1:$resp" --reads 1 --preload
    measure "SET-1-peer-resp" "$side" "$round" resp "redis://127.0.0.1:$resp" --reads 0
    measure "GET-1-peer-http" "$side" "$round" http "http://127.0.0.1:$http" --reads 1 --preload
    measure "PUT-1-peer-http" "$side" "$round" http "http://127.0.0.1:$http" --reads 0
    stop_last 1
}

for round in $(seq "$rounds"); do
    one_side old "$old" "$round"
    one_side new "$new" "$round"
done
echo "medians of $rounds rounds (ops/s; p99 ms; peers' CPU µs per request), runs in $out:"
median_of() { # name side column
    awk -v n="$1" -v s="$2" -v c="$3" '$1 == n && $2 == s { print $c }' "$out/runs.tsv" \
        | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
for name in quorum-GET-resp quorum-PUT-resp quorum-GET-http GET-1-peer-resp SET-1-peer-resp \
    GET-1-peer-http PUT-1-peer-http; do
    [[ $name =~ ${AB_ONLY:-.} ]] || continue
    for side in old new; do
        printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$side" "$(median_of "$name" "$side" 4)" \
            "$(median_of "$name" "$side" 6)" "$(median_of "$name" "$side" 7)"
    done
done
