# Everyday recipes. Install just with `cargo install just` (or your package manager).

# Start a local cluster of N peers on loopback (Ctrl-C stops it).
up peers="3":
    cargo run --release -- up --peers {{peers}}

# The whole test suite (what CI runs).
test:
    bash .ci/run

# Replay one simulation seed (prints its report; shrinks and prints the history on failure).
sim seed="1" ops="600":
    cargo run --release -p simulations -- run --seed {{seed}} --ops {{ops}} --verbose

# Run K simulation seeds starting at FIRST.
sim-sweep k="1000" first="1":
    cargo run --release -p simulations -- sweep --seeds {{k}} --first {{first}}

# Prove the checker can fail: run K seeds with a planted bug (exits non-zero when caught).
sim-plant bug="last-write-wins" k="30":
    cargo run --release -p simulations -- sweep --seeds {{k}} --plant {{bug}}

# Fuzz the decoders that read untrusted bytes (peer frames, causal contexts, keys, gossip
# datagrams), each target for SECS/4 seconds, seed after seed (they run side by side, so the
# wall time is shorter on several cores); a failure prints its seed (tests/fuzz.rs).
fuzz secs="300":
    RINGCACHE_FUZZ_SECS={{secs}} cargo test --release --test fuzz -- --nocapture

# Schema-driven conformance and fuzzing of the HTTP API for SECS seconds: one debug peer, every
# operation of docs/openapi.yaml, many examples each and the stateful phase; no 5xx but the
# documented 503/507 (tests/api_conformance/run.sh; CI runs its short form). Replay a failure
# with RINGCACHE_API_FUZZ_SEED=<seed it printed>.
api-fuzz secs="600":
    cargo build --bin ringcache
    RINGCACHE_API_FUZZ_SECS={{secs}} bash tests/api_conformance/run.sh long

# Real-process chaos for SECS seconds (root; needs nftables: apt-get install nftables).
chaos secs="300":
    RINGCACHE_CHAOS_SECS={{secs}} cargo test --release --test chaos -- --nocapture

# Benchmarks: memory per key against redis-server in the same run (installs redis-server if
# missing and root), then the engine's get/set/evict/expire on 1M keys (Criterion). Figures go
# in docs/performance.md.
bench:
    command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
    cargo bench --bench memory
    cargo bench --bench engine
    cargo bench --bench anti_entropy

# Load a running cluster with `ringcache bench` (start one with `just up`; it prints the
# peers' URLs): 50 connections, 90% reads of 10,000 zipfian keys (θ 0.99) at r=w=quorum
# (the default), 10 s after a 2 s warm-up. More flags through ARGS, e.g.
# `just bench-run URL --rate 10000` for open loop, `--r one`, or
# `just bench-run redis://127.0.0.1:6379 --target redis --wait 1` for a Redis.
bench-run url="http://127.0.0.1:7070" *args="":
    cargo run --release -- bench --url {{url}} --connections 50 --keys 10000 --zipf 0.99 --reads 0.9 --preload --duration 10 {{args}}

# Two ringcache binaries against each other on the same load, taking turns (benches/ab.sh):
# `just bench-ab /tmp/ringcache.old target/release/ringcache`.
bench-ab old new:
    cargo build --release --bin ringcache
    bash benches/ab.sh {{old}} {{new}}

# ringcache against Redis with the same load generator, on loopback, in one run: GET and SET
# (one peer, N=1, HTTP and RESP, against a lone redis-server), quorum PUT and GET on three peers
# against SET + WAIT 1 on a primary with two replicas and a lone GET, open loop too, and a
# latency-against-throughput SVG. Medians of BENCH_ROUNDS (3) rounds of BENCH_SECS (10) s each;
# the table replaces the bench-compare section of docs/performance.md (benches/compare.sh lists
# its settings). Installs redis-server and jq if missing and root.
bench-compare:
    command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
    command -v jq >/dev/null || (apt-get update -qq && apt-get install -y -qq jq)
    bash benches/compare.sh

fmt:
    cargo fmt --all

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
