#!/usr/bin/env bash
# The one test command (README, .ci/run): set-up check, lints, unit tests,
# PI build, QEMU boot tests, reproducibility check.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

step "host set-up"
if [ "$(id -u)" = 0 ]; then bash ci/setup.sh; else sudo bash ci/setup.sh; fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and component tests"
cargo test --workspace --locked --lib --bins

step "build the platform image"
cargo build --release --locked -p image
./target/release/triton-pi build --json

step "artifact checks (tarball layout, version files, hashes, contents)"
cargo test --locked -p ci --test artifacts

step "QEMU boot tests (TCG, direct kernel, squashfs over HTTP)"
cargo test --locked -p ci --test vm_boot -- --test-threads=2

step "reproducibility (second build with fresh Debian layers)"
./target/release/triton-pi repro

echo
echo "all test stages passed"
