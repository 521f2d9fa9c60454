#!/bin/sh
# Builds Drydock and the benchmark with the release profile, then runs the benchmark.
# Extra arguments go to drydock-bench (see `drydock-bench --help`).
set -eu
cd "$(dirname "$0")/.."
cargo build --release -p drydock -p drydock-dev-oidc-issuer -p drydock-bench
exec target/release/drydock-bench "$@"
