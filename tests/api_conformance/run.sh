#!/usr/bin/env bash
# The published API contract, checked against a real peer: docs/openapi.yaml must be a valid
# OpenAPI 3.0 document, and one `ringcache serve` (loopback only, with a client token) must
# answer every request schemathesis derives from it — valid and invalid, generated and
# fuzzed — exactly as the document says: documented status, content type, headers and body
# schema, invalid input refused with a 4xx, valid input accepted, auth enforced, 405 with
# Allow for undocumented methods, and no 5xx but the documented 503 and 507. Any violation,
# or a panic in the peer's log, fails the run.
#
# Usage: tests/api_conformance/run.sh [short|long]
#   short  CI (.ci/run): every operation, a bounded number of examples, at most
#          RINGCACHE_API_FUZZ_SECS seconds of requests (default 30).
#   long   `just api-fuzz`: many more examples and the stateful phase (links between
#          operations), RINGCACHE_API_FUZZ_SECS seconds (default 600).
# The seed is fresh each run and printed; RINGCACHE_API_FUZZ_SEED=N replays one.
# The peer binary is $RINGCACHE_BIN, or the debug build under $CARGO_TARGET_DIR (or target/).
# schemathesis and openapi-spec-validator are installed, pinned (requirements.txt), into a
# venv under the target directory the first time (pip; network to PyPI needed once).
set -euo pipefail
cd "$(dirname "$0")/../.."

root=$(pwd)
mode=${1:-short}
here=$root/tests/api_conformance
target=${CARGO_TARGET_DIR:-target}
case "$target" in /*) ;; *) target=$root/$target ;; esac
bin=${RINGCACHE_BIN:-$target/debug/ringcache}
venv=$target/api-conformance-venv
seed=${RINGCACHE_API_FUZZ_SEED:-$(( $(date +%s) % 1000000007 ))}
case "$mode" in
    short) secs=${RINGCACHE_API_FUZZ_SECS:-30}; examples=25; phases=examples,coverage,fuzzing ;;
    long) secs=${RINGCACHE_API_FUZZ_SECS:-600}; examples=2000; phases=examples,coverage,fuzzing,stateful ;;
    *) echo "usage: $0 [short|long]"; exit 2 ;;
esac
[ -x "$bin" ] || { echo "api conformance: no peer binary at $bin (cargo build first)"; exit 1; }
command -v python3 >/dev/null || { echo "api conformance: python3 is required"; exit 1; }

# The tools, pinned; the venv is rebuilt whenever requirements.txt changes.
if ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
    echo "api conformance: installing schemathesis into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/requirements.txt"
fi

# 1. A valid OpenAPI 3.0 document.
"$venv/bin/openapi-spec-validator" docs/openapi.yaml

# 2. One peer on loopback ports the kernel picks; it prints `READY {json}` once bound.
work=$(mktemp -d)
peer=
# SIGINT stops a peer at once (SIGTERM would start a leave); SIGKILL if it is still there 10 s on.
stop_peer() {
    if [ -n "$peer" ]; then
        kill -INT "$peer" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$peer" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$peer" 2>/dev/null || true
        wait "$peer" 2>/dev/null || true
        peer=
    fi
}
trap 'stop_peer; rm -rf "$work"' EXIT
token=conformance-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
RINGCACHE_CLUSTER_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n') \
RINGCACHE_CLIENT_TOKEN=$token \
    "$bin" serve --id conformance --replicas 1 \
    --gossip 127.0.0.1:0 --peer-addr 127.0.0.1:0 --http 127.0.0.1:0 --resp 127.0.0.1:0 \
    --max-memory 256MiB </dev/null >"$work/peer.out" 2>"$work/peer.log" &
peer=$!
http=
for _ in $(seq 200); do
    ready=$(grep -s -m1 '^READY ' "$work/peer.out" || true)
    if [ -n "$ready" ]; then
        http=$("$venv/bin/python" -c 'import json,sys; print(json.loads(sys.argv[1][6:])["http"])' "$ready")
        break
    fi
    kill -0 "$peer" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$http" ]; then
    echo "api conformance: the peer did not start"; cat "$work/peer.log"; exit 1
fi

# 3. schemathesis against it (settings that need explaining are in schemathesis.toml; what
# hooks.py changes in valid requests, and why, is in hooks.py).
echo "api conformance: $mode run against http://$http, seed $seed, at most ${secs}s"
# One worker: with two, hypothesis's ast.parse in threads trips a CPython 3.11 bug ("AST
# constructor recursion depth mismatch"); the peer is one process on two cores anyway.
# From the scratch directory: schemathesis and hypothesis keep their caches in the working
# directory, which must not be the checkout.
status=0
(cd "$work" && SCHEMATHESIS_HOOKS=$here/hooks.py RINGCACHE_CONFORMANCE_URL=http://$http \
RINGCACHE_CONFORMANCE_TOKEN=$token \
"$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "$root/docs/openapi.yaml" \
    --url "http://$http" --header "Authorization: Bearer $token" \
    --checks all --phases "$phases" --max-examples "$examples" --max-time "$secs" \
    --seed "$seed" --workers 1 --no-color) \
    || status=$?
alive=yes
kill -0 "$peer" 2>/dev/null || alive=no
stop_peer
if grep -q 'panicked' "$work/peer.log"; then
    echo "api conformance: the peer panicked:"; grep -A5 'panicked' "$work/peer.log"; status=1
fi
if [ "$alive" = no ]; then
    echo "api conformance: the peer died during the run:"; tail -20 "$work/peer.log"; status=1
fi
if [ "$status" != 0 ]; then
    echo "api conformance: FAILED (replay with RINGCACHE_API_FUZZ_SEED=$seed $0 $mode)"
    exit "$status"
fi
echo "api conformance: docs/openapi.yaml is valid and the peer meets it"
