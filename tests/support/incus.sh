#!/usr/bin/env bash
# Installs Incus 6.0 from bookworm-backports (incus-base + incus-client only: `incus` drags in
# qemu) without touching the system's apt sources, and starts a private incusd for the tests.
#   tests/support/incus.sh install     # idempotent
#   tests/support/incus.sh start DIR   # prints the INCUS_DIR to export; idempotent
set -euo pipefail

case "${1:-}" in
install)
    if command -v incus >/dev/null && [ -x /usr/libexec/incus/incusd ]; then exit 0; fi
    state="${XDG_CACHE_HOME:-$HOME/.cache}/fleet/tools/apt-backports"
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
    cat > "$state/sources.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
LIST
    apt_opts=(-o "Dir::Etc::sourcelist=$state/sources.list" -o "Dir::Etc::sourceparts=-"
              -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache")
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get "${apt_opts[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get "${apt_opts[@]}" install -y -qq -t bookworm-backports \
        --no-install-recommends incus-base incus-client >/dev/null
    ;;
start)
    dir="${2:?usage: incus.sh start DIR}"
    export INCUS_DIR="$dir"
    pool="${dir%/}-pool"   # a dir pool may not live inside INCUS_DIR
    mkdir -p "$dir" "$pool"
    if ! timeout 5 incus info >/dev/null 2>&1; then
        getent group incus-admin >/dev/null || groupadd --system incus-admin
        nohup /usr/libexec/incus/incusd --group incus-admin --logfile "$dir/incusd.log" >/dev/null 2>&1 &
        incus admin waitready --timeout=60
    fi
    if ! incus storage show default >/dev/null 2>&1; then
        incus admin init --preseed <<PRESEED
config: {}
networks: []
storage_pools:
- name: default
  driver: dir
  config:
    source: $pool
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
PRESEED
    fi
    echo "$dir"
    ;;
*)
    echo "usage: $0 install | start DIR" >&2
    exit 2
    ;;
esac
