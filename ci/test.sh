#!/usr/bin/env bash
# The one test command (README, .ci/run): host set-up, lints, unit and
# namespace tests, PI build, libzfs tests in the buildroot, artifact checks,
# QEMU boot and node tests, the netboot suite (dev booter, iPXE),
# reproducibility check.
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

step "unit, component and namespace tests (host)"
# zfs-sys/zfs link libzfs, which only the trixie buildroot has: they run
# there after the image build. The ci package's tests need the built PI.
tests cargo test --workspace --locked --exclude ci --exclude zfs-sys --exclude zfs --lib --bins --tests
tests cargo test --locked -p ci --lib --bins
# ur-agent against a real RabbitMQ (Debian's rabbitmq-server, started per test)
tests cargo test --locked -p ci --test ur_agent
# the headnode double (CNAPI's part) against a real broker, and our setup scripts
tests cargo test --locked -p ci --test headnode

step "build the platform image"
cargo build --release --locked -p image
./target/release/triton-pi build --standalone --json

step "libzfs bindings and wrapper tests (in the trixie buildroot)"
tests ./target/release/triton-pi cargo-test -- -p zfs-sys -p zfs

step "artifact checks (tarball layout, version files, hashes, contents)"
tests cargo test --locked -p ci --test artifacts

step "QEMU boot tests (TCG, direct kernel; squashfs over HTTP or TFTP)"
tests cargo test --locked -p ci --test vm_boot -- --test-threads=2

step "QEMU node tests (networking, zones pool across boots, supervisor)"
tests cargo test --locked -p ci --test vm_node -- --test-threads=2

step "QEMU: the commands the headnode's setup scripts call, on real disks and ZFS"
tests cargo test --locked -p ci --test vm_setup_tools

step "netboot end-to-end (iPXE, booter's boot.ipxe, dev booter)"
tests cargo test --locked -p ci --test netboot -- --test-threads=2

step "server setup end-to-end (ur-agent, RabbitMQ, headnode double, 113 reboot, faults)"
tests cargo test --locked -p ci --test server_setup -- --test-threads=3

step "reproducibility (second build of HEAD with fresh Debian layers and runtime)"
./target/release/triton-pi repro

step "summary"
# A case that cannot run here (kernel feature, not root) passes after
# printing "SKIPPED <why>": it is counted as skipped, not passed.
grep '^SKIPPED ' "$results" | sort | uniq -c || true
awk '/^test result:/ { p += $4; f += $6; i += $8 } /^SKIPPED / { s += 1 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p - s, f, i + s }' "$results"
