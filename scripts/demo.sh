#!/usr/bin/env bash
# Runs `tgingest demo` on the embedded default: a nats-server of its own, a temporary data dir.
# Does its own set-up (the pinned nats-server, a release build). Arguments go to `tgingest demo`
# (see scripts/demo.sh --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-nats-server.sh >&2
cargo build --release --locked --bin tgingest >&2
exec target/release/tgingest demo "$@"
