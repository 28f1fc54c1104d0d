# Everyday recipes. Install just with `cargo install just` (or your package manager).

# Start a local cluster of N peers on loopback (Ctrl-C stops it).
up peers="3":
    cargo run --release -- up --peers {{peers}}

# The whole test suite (what CI runs).
test:
    bash .ci/run

# Replay one simulation seed.
sim seed="1":
    cargo run --release -p simulations -- run --seed {{seed}}

# Run K simulation seeds.
sim-sweep k="1000" first="1":
    cargo run --release -p simulations -- sweep --seeds {{k}} --first {{first}}

fmt:
    cargo fmt --all

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
