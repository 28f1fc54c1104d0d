# Helpers the benchmark scripts share (sourced, not run): build the release binary, start
# peers and redis-servers on loopback, wait for them, and stop everything they started on exit.
# A script sources it from the repository root, after `set -euo pipefail`.

target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/ringcache"
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
# SIGINT stops a peer at once (SIGTERM would make it hand its data off first); redis-server
# takes it as a shutdown too.
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

build_ringcache() { cargo build --release --bin ringcache -q; }

# A peer's output goes to $peer_logs/ID.log when the script sets peer_logs, else nowhere. Its
# runtime runs $peer_threads worker threads when the script sets it (0: one per core).
peer_threads=0
# The cores divided among COUNT peers sharing this machine, at least one (as `ringcache up`).
threads_for_peers() { local t=$(( $(nproc) / $1 )); echo $(( t > 0 ? t : 1 )); }
start_peer() { # id resp_port http_port gossip_port quic_port replicas [seed's gossip port]
    local seed=()
    [ -n "${7:-}" ] && seed=(--seed "127.0.0.1:$7")
    RINGCACHE_CLUSTER_SECRET="$secret" "$bin" serve --id "$1" --resp "127.0.0.1:$2" \
        --http "127.0.0.1:$3" --gossip "127.0.0.1:$4" --peer-addr "127.0.0.1:$5" \
        --replicas "$6" --max-memory 1GiB --threads "$peer_threads" "${seed[@]}" >"${peer_logs:-/dev/null}${peer_logs:+/$1.log}" 2>&1 &
    pids+=($!)
}

# Stops the processes started last (their pids are at the end of `pids`), and waits for them.
stop_last() { # count
    local p
    for p in "${pids[@]: -$1}"; do kill -INT "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    pids=("${pids[@]:0:${#pids[@]}-$1}")
}

wait_port() { for _ in $(seq 300); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.1; done; echo "nothing answers on port $1" >&2; exit 1; }

wait_members() { # count http_port…: every peer sees COUNT members up
    local count="$1" port; shift
    for port in "$@"; do
        for _ in $(seq 200); do
            [ "$(curl -s "http://127.0.0.1:$port/v1/cluster" | grep -o '"up":true' | wc -l)" = "$count" ] && break
            sleep 0.1
        done
    done
}

# Sets the variable named $1 to a loopback TCP port nothing listens on and that no earlier call
# handed out, below the kernel's range for ephemeral ports (where tests' port-0 sockets, TCP
# and UDP, land); ports for UDP gossip and QUIC come from the same draw.
ports_taken=" "
free_port() {
    local p
    while :; do
        p=$((16000 + RANDOM % 16000))
        [[ $ports_taken == *" $p "* ]] && continue
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        ports_taken+="$p "
        printf -v "$1" '%s' "$p"
        return
    done
}
