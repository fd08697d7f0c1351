#!/usr/bin/env bash
# One-time (idempotent) host set-up for building and testing the Triton Linux PI
# on a Debian 12 machine. Run as root. Safe to re-run: every step checks first.
set -euo pipefail

CACHE_ROOT=${TRITON_PI_CACHE:-/var/cache/triton-pi}
MKOSI_DIR="$CACHE_ROOT/tools/mkosi"
stamp="$CACHE_ROOT/tools/setup.done-v1"

log() { printf '==> %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "ci/setup.sh must run as root (it installs Debian packages)" >&2
  exit 2
fi

packages=(
  # image build
  squashfs-tools zstd xz-utils cpio bubblewrap debian-archive-keyring
  apt dpkg-dev uidmap
  # mkosi runtime needs (python deps of trixie's mkosi)
  python3 python3-pefile
  # QEMU smoke tests
  qemu-system-x86 ipxe-qemu qemu-utils python3
  # netboot test bed (dev booter)
  dnsmasq iproute2 bridge-utils
  # ur-agent and the headnode double (a real AMQP broker)
  rabbitmq-server
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing host packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# trixie's mkosi (Debian 12's mkosi 14 is too old; trixie's package needs a newer
# systemd than bookworm has, so we unpack it and run it with the host python).
if [ ! -f "$MKOSI_DIR/.ok" ]; then
  log "fetching mkosi from Debian trixie"
  src=/etc/apt/sources.list.d/triton-pi-trixie.sources
  pin=/etc/apt/preferences.d/triton-pi-trixie
  cat >"$src" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat >"$pin" <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 50
PIN
  apt-get update -qq
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq mkosi/trixie)
  rm -rf "$MKOSI_DIR.tmp"; mkdir -p "$MKOSI_DIR.tmp"
  dpkg-deb -x "$tmp"/mkosi_*.deb "$MKOSI_DIR.tmp"
  rm -rf "$tmp" "$MKOSI_DIR"
  mv "$MKOSI_DIR.tmp" "$MKOSI_DIR"
  touch "$MKOSI_DIR/.ok"
fi

log "host set-up complete (mkosi: $(PYTHONPATH=$MKOSI_DIR/usr/lib/python3/dist-packages python3 -m mkosi --version 2>&1))"
