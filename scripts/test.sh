#!/usr/bin/env bash
# Runs the whole test suite. Does its own set-up: installs the pinned nats-server into .tools/
# when no suitable one is found (the tests spawn real servers on free loopback ports), and the
# pinned Telethon and Pyrogram packages into .tools/python (the session-import tests check strings
# written by the real libraries).
# Extra arguments go to `cargo test` (e.g. scripts/test.sh --test bus_setup).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-nats-server.sh
scripts/install-python-test-deps.sh
scripts/install-prometheus.sh
cargo test --workspace --locked "$@"
