#!/usr/bin/env bash
# ringcache against Redis with the same load generator (`ringcache bench`), in one run on
# loopback, release build (`just bench-compare`):
#
#   - GET and SET: a lone redis-server against one ringcache peer (N=1), over HTTP and RESP;
#   - quorum PUT (w=quorum, W=2 of N=3) on three peers, over HTTP and RESP, against SET + WAIT 1
#     on a Redis primary with two replicas;
#   - quorum GET (r=quorum) on three peers, over HTTP and RESP, against the lone redis-server's
#     GET, closed loop, and open loop at BENCH_OPEN_RATE ops/s;
#   - latency against throughput for quorum GET and PUT on three peers, open loop at each of
#     BENCH_RATES, plotted by `cargo bench --bench plot_latency` into docs/bench-compare.svg.
#
# Closed loop: 50 connections, 10,000 uniform keys, 100-byte values, reads preloaded. Each
# comparison runs BENCH_ROUNDS times, the two sides taking turns in every round, and the table
# gives medians; it replaces what stands between the bench-compare markers of
# docs/performance.md. Redis stays up throughout; ringcache's one-peer and three-peer clusters
# run one after the other, the three peers on the machine's cores divided among them (as
# `ringcache up` runs them).
#
# Settings (environment): BENCH_SECS measured seconds per run (10), BENCH_WARMUP (2),
# BENCH_ROUNDS (3), BENCH_OPEN_RATE (10000), BENCH_RATES ("2000 4000 6000 8000 10000 12000"),
# BENCH_NOTE (a sentence added to the machine note). Needs redis-server, redis-cli, curl and jq
# (apt-get install redis-server curl jq).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${BENCH_SECS:-10}"
warmup="${BENCH_WARMUP:-2}"
rounds="${BENCH_ROUNDS:-3}"
open_rate="${BENCH_OPEN_RATE:-10000}"
rates="${BENCH_RATES:-2000 4000 6000 8000 10000 12000}"
for tool in redis-server redis-cli curl jq; do
    command -v "$tool" >/dev/null || { echo "benches/compare.sh needs $tool" >&2; exit 1; }
done
source benches/lib.sh
build_ringcache
# The plot's renderer, built now so that its compilation does not overlap the measurements.
cargo bench --bench plot_latency --no-run -q
out=$(mktemp -d)
peer_logs="$out"
echo "runs' reports and peers' logs in $out" >&2
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# One run of `ringcache bench`: its JSON report is kept, and one row (comparison, side, ops/s,
# p50, p99, errors, unsent) goes to runs.tsv. Both sides of a round share a seed: the same keys
# in the same order.
measure() { # comparison side round bench-flags…
    local name="$1" side="$2" round="$3"; shift 3
    local file="$out/${name// /_}.$side.$round.json"
    echo "round $round: $name, $side" >&2
    "$bin" bench --quiet --json --connections 50 --keys 10000 --value-size 100 \
        --warmup "$warmup" --duration "$secs" --seed "$round" "$@" >"$file"
    jq -r --arg name "$name" --arg side "$side" \
        '[$name, $side, .ops_per_sec, .latency_ms.all.p50, .latency_ms.all.p99,
          ([.errors[]] | add // 0), .unsent] | @tsv' "$file" >>"$out/runs.tsv"
}

# --- Redis: one alone, and a primary with two replicas ---
free_port redis_alone; free_port primary; free_port replica1; free_port replica2
redis_server() { redis-server --port "$1" --save '' --appendonly no --dir "$out" "${@:2}" >/dev/null 2>&1 & pids+=($!); }
redis_server "$redis_alone"
redis_server "$primary"
redis_server "$replica1" --replicaof 127.0.0.1 "$primary"
redis_server "$replica2" --replicaof 127.0.0.1 "$primary"
for port in "$redis_alone" "$primary" "$replica1" "$replica2"; do wait_port "$port"; done
for _ in $(seq 100); do
    redis-cli -p "$primary" info replication | grep -q '^connected_slaves:2' \
        && redis-cli -p "$replica1" info replication | grep -q '^master_link_status:up' \
        && redis-cli -p "$replica2" info replication | grep -q '^master_link_status:up' \
        && break
    sleep 0.1
done
redis-cli -p "$primary" info replication | grep -q '^connected_slaves:2' \
    || { echo "the Redis replicas did not connect" >&2; exit 1; }
redis="--target redis --url redis://127.0.0.1:$redis_alone"

# --- ringcache, one peer, N=1: GET and SET over HTTP and RESP against the lone Redis ---
free_port resp1; free_port http1; free_port gossip1; free_port quic1
peer_threads=$(threads_for_peers 1)
start_peer A "$resp1" "$http1" "$gossip1" "$quic1" 1
wait_port "$resp1"
for round in $(seq "$rounds"); do
    for op in GET SET; do
        [ "$op" = GET ] && flags="--reads 1 --preload" || flags="--reads 0"
        # shellcheck disable=SC2086
        measure "$op" redis "$round" $redis $flags
        # shellcheck disable=SC2086
        measure "$op" http "$round" --url "http://127.0.0.1:$http1" $flags
        # shellcheck disable=SC2086
        measure "$op" resp "$round" --target resp --url "redis://127.0.0.1:$resp1" $flags
    done
done
stop_last 1

# --- ringcache, three peers, N=3: quorum operations ---
# Three peers share the machine's cores as `ringcache up` shares them (as the three Redis
# servers, one thread each, do).
peer_threads=$(threads_for_peers 3)
peers=()
for id in A B C; do
    free_port resp; free_port http; free_port gossip; free_port quic
    [ "$id" = A ] && seed_port="$gossip" seed="" || seed="$seed_port"
    start_peer "$id" "$resp" "$http" "$gossip" "$quic" 3 $seed
    peers+=("$resp:$http")
done
for p in "${peers[@]}"; do wait_port "${p%%:*}"; done
# shellcheck disable=SC2046
wait_members 3 $(for p in "${peers[@]}"; do echo "${p##*:}"; done)
cluster="--url http://127.0.0.1:${peers[0]##*:}"
# The same peer over RESP, whose connections read and write at R = W = 2 (quorum of three).
cluster_resp="--target resp --url redis://127.0.0.1:${peers[0]%%:*}"
for round in $(seq "$rounds"); do
    # shellcheck disable=SC2086
    {
        measure "quorum PUT" redis "$round" --target redis --url "redis://127.0.0.1:$primary" --reads 0 --wait 1
        measure "quorum PUT" http "$round" $cluster --reads 0 --w quorum
        measure "quorum PUT" resp "$round" $cluster_resp --reads 0
        measure "quorum GET" redis "$round" $redis --reads 1 --preload
        measure "quorum GET" http "$round" $cluster --reads 1 --r quorum --preload
        measure "quorum GET" resp "$round" $cluster_resp --reads 1 --preload
        measure "quorum GET open" redis "$round" $redis --reads 1 --preload --rate "$open_rate"
        measure "quorum GET open" http "$round" $cluster --reads 1 --r quorum --preload --rate "$open_rate"
        measure "quorum GET open" resp "$round" $cluster_resp --reads 1 --preload --rate "$open_rate"
    }
done
# Latency against throughput: one run per rate, reads then writes.
echo -e "operation\trate\tops_per_sec\tp50_ms\tp99_ms" >"$out/sweep.tsv"
for rate in $rates; do
    for op in GET PUT; do
        [ "$op" = GET ] && flags="--reads 1 --r quorum --preload" || flags="--reads 0 --w quorum"
        # shellcheck disable=SC2086
        measure "sweep $op $rate" http 1 $cluster $flags --rate "$rate"
        tail -n 1 "$out/runs.tsv" | awk -F'\t' -v op="quorum $op" -v rate="$rate" \
            'BEGIN { OFS = "\t" } { print op, rate, $3, $4, $5 }' >>"$out/sweep.tsv"
    done
done
stop_last 3
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the report ---
# Median of column COL over the rounds of one comparison's side.
median() { # name side col
    awk -F'\t' -v n="$1" -v s="$2" -v c="$3" '$1 == n && $2 == s { print $c }' "$out/runs.tsv" \
        | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
total() { # name side col: summed over the rounds
    awk -F'\t' -v n="$1" -v s="$2" -v c="$3" '$1 == n && $2 == s { t += $c } END { print t + 0 }' "$out/runs.tsv"
}
row() { # label name ringcache-side redis-label
    local ops_rc ops_r p50_rc p50_r p99_rc p99_r notes="" errors unsent
    ops_rc=$(median "$2" "$3" 3); ops_r=$(median "$2" redis 3)
    p50_rc=$(median "$2" "$3" 4); p50_r=$(median "$2" redis 4)
    p99_rc=$(median "$2" "$3" 5); p99_r=$(median "$2" redis 5)
    for side in "$3" redis; do
        errors=$(total "$2" "$side" 6); unsent=$(total "$2" "$side" 7)
        [ "$errors" != 0 ] && notes+="${notes:+; }$side: $errors errors"
        [ "$unsent" != 0 ] && notes+="${notes:+; }$side: $unsent unsent"
    done
    awk -v l="$1" -v r="$4" -v a="$ops_rc" -v b="$ops_r" -v c="$p50_rc" -v d="$p50_r" \
        -v e="$p99_rc" -v f="$p99_r" -v n="${notes:-—}" 'function ratio(x, y) {
            return y > 0 ? sprintf("%.2f×", x / y) : "—" }
        BEGIN { printf "| %s | %s | %.0f | %.0f | **%s** | %.3f | %.3f | %s | %.3f | %.3f | **%s** | %s |\n",
            l, r, a, b, ratio(a, b), c, d, ratio(c, d), e, f, ratio(e, f), n }'
}
command_line="BENCH_SECS=$secs BENCH_WARMUP=$warmup BENCH_ROUNDS=$rounds BENCH_OPEN_RATE=$open_rate BENCH_RATES=\"$rates\" benches/compare.sh"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//' || true)
{
    echo "Measured $(date -u +%Y-%m-%d) with \`$command_line\` (\`just bench-compare\` runs it"
    echo "with the defaults): $(nproc) cores${cpu:+ ($cpu)}, $(uname -sr), $(redis-server --version | grep -o 'v=[^ ]*' | sed 's/v=/redis-server /'),"
    echo "load average $load_start at the start and $load_end at the end; generator, servers and"
    echo "anything else running share the machine.${BENCH_NOTE:+ $BENCH_NOTE}"
    echo "Medians of $rounds round(s), each run $secs s measured after $warmup s of warm-up; 50"
    echo "connections (closed loop unless a rate is named), 10,000 uniform keys, 100-byte values."
    echo "Latencies in ms (open loop: from each request's due time); ratios are ringcache / Redis."
    echo
    echo "| workload | Redis side | ringcache ops/s | Redis ops/s | ops/s ratio | ringcache p50 | Redis p50 | p50 ratio | ringcache p99 | Redis p99 | p99 ratio | errors, unsent |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    row "GET, 1 peer N=1, HTTP" GET http "GET, alone"
    row "GET, 1 peer N=1, RESP" GET resp "GET, alone"
    row "SET, 1 peer N=1, HTTP" SET http "SET, alone"
    row "SET, 1 peer N=1, RESP" SET resp "SET, alone"
    row "quorum PUT (w=quorum), 3 peers N=3, HTTP" "quorum PUT" http "SET + WAIT 1, primary + 2 replicas"
    row "quorum PUT (W=2), 3 peers N=3, RESP" "quorum PUT" resp "SET + WAIT 1, primary + 2 replicas"
    row "quorum GET (r=quorum), 3 peers N=3, HTTP" "quorum GET" http "GET, alone"
    row "quorum GET (R=2), 3 peers N=3, RESP" "quorum GET" resp "GET, alone"
    row "quorum GET, open loop at $open_rate ops/s, HTTP" "quorum GET open" http "GET, alone, same rate"
    row "quorum GET, open loop at $open_rate ops/s, RESP" "quorum GET open" resp "GET, alone, same rate"
    echo
    echo "Latency against throughput, three peers (N=3, HTTP, open loop at $rates ops/s, one run"
    echo "each): [docs/bench-compare.svg](bench-compare.svg)."
    echo
    echo "![p50 and p99 from due time against achieved ops/s, quorum GET and PUT](bench-compare.svg)"
} >"$out/section.md"
cargo bench --bench plot_latency -q -- "$out/sweep.tsv" docs/bench-compare.svg

# Replace what stands between the markers.
grep -q '^<!-- bench-compare:start -->$' docs/performance.md \
    || { echo "docs/performance.md has no bench-compare markers" >&2; exit 1; }
awk -v section="$out/section.md" '
    /^<!-- bench-compare:start -->$/ { print; while ((getline line < section) > 0) print line; skip = 1; next }
    /^<!-- bench-compare:end -->$/ { skip = 0 }
    !skip' docs/performance.md >"$out/performance.md"
cp "$out/performance.md" docs/performance.md
cat "$out/section.md"
echo "wrote docs/performance.md (between the bench-compare markers) and docs/bench-compare.svg" >&2
