#!/usr/bin/env bash
# Runs the whole test suite. Does its own set-up: installs the pinned nats-server into .tools/
# when no suitable one is found (the tests spawn real servers on free loopback ports).
# Extra arguments go to `cargo test` (e.g. scripts/test.sh --test bus_setup).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-nats-server.sh
cargo test --workspace --locked "$@"
