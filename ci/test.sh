#!/usr/bin/env bash
# The one test command (README, .ci/run): host set-up, lints, unit tests,
# PI build, artifact checks, QEMU boot tests, reproducibility check.
set -euo pipefail
cd "$(dirname "$0")/.."

results=$(mktemp)
trap 'rm -f "$results"' EXIT
step() { printf '\n=== %s ===\n' "$*"; }
# Runs a cargo test command, keeping its "test result" lines for the total.
tests() { "$@" 2>&1 | tee -a "$results"; }

step "host set-up"
if [ "$(id -u)" = 0 ]; then bash ci/setup.sh; else sudo bash ci/setup.sh; fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and component tests"
tests cargo test --workspace --locked --lib --bins

step "build the platform image"
cargo build --release --locked -p image
./target/release/triton-pi build --standalone --json

step "artifact checks (tarball layout, version files, hashes, contents)"
tests cargo test --locked -p ci --test artifacts

step "QEMU boot tests (TCG, direct kernel, squashfs over HTTP)"
tests cargo test --locked -p ci --test vm_boot -- --test-threads=2

step "reproducibility (second build of HEAD with fresh Debian layers and runtime)"
./target/release/triton-pi repro

step "summary"
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$results"
