#!/usr/bin/env bash
# Every test fleet has, as CI runs it (.ci/run calls exactly this).
# Installs nothing system-wide; real components that later tests need install
# themselves under ~/.cache/fleet.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --check

step "lint"
cargo clippy --all-targets --locked -- -D warnings

step "unit and integration tests"
cargo test --locked
