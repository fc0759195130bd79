#!/usr/bin/env bash
# Installs the pinned Telethon and Pyrogram packages into <repo>/.tools/python (no root needed).
# tests/session_import.rs runs tests/fixtures/make_sessions.py with PYTHONPATH pointing there, so
# the session-string import is checked against strings written by the real libraries.
# Idempotent: returns at once when the pinned versions are already present.
set -euo pipefail

TELETHON_VERSION=1.42.0
PYROGRAM_VERSION=2.0.106

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$repo/.tools/python"
stamp="$target/.installed-telethon-$TELETHON_VERSION-pyrogram-$PYROGRAM_VERSION"

if [[ -f "$stamp" ]]; then
    exit 0
fi

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "install-python-test-deps: $python not found" >&2; exit 1; }

rm -rf "$target"
mkdir -p "$target"
"$python" -m pip install --quiet --disable-pip-version-check --no-input --no-warn-conflicts --root-user-action=ignore \
    --target "$target" \
    "telethon==$TELETHON_VERSION" "pyrogram==$PYROGRAM_VERSION"
touch "$stamp"
echo "install-python-test-deps: telethon $TELETHON_VERSION and pyrogram $PYROGRAM_VERSION in $target"
