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
remote-up)
    # Another machine, on this one: an incusd in its own network namespace NS, reachable from
    # here at ADDR (10.213.N.2) over a veth pair (10.213.N.1 on this side). Started with
    # `nsenter --net` (never `ip netns exec`, which remounts /sys). Prints the daemon's pid.
    #   incus.sh remote-up DIR NS N
    dir="${2:?}"; ns="${3:?}"; n="${4:?}"
    export INCUS_DIR="$dir"
    pool="${dir%/}-pool"
    mkdir -p "$dir" "$pool"
    getent group incus-admin >/dev/null || groupadd --system incus-admin
    if [ ! -e "/run/netns/$ns" ]; then
        ip netns add "$ns"
        ip link add "v$ns" type veth peer name "v${ns}p"
        ip link set "v${ns}p" netns "$ns"
        ip addr add "10.213.$n.1/30" dev "v$ns"; ip link set "v$ns" up
        ip -n "$ns" addr add "10.213.$n.2/30" dev "v${ns}p"
        ip -n "$ns" link set "v${ns}p" up; ip -n "$ns" link set lo up
        # The rest of this machine (another link's address, where the proxy may listen) via here.
        ip -n "$ns" route add default via "10.213.$n.1"
    fi
    nsenter --net="/run/netns/$ns" setsid /usr/libexec/incus/incusd --group incus-admin \
        --logfile "$dir/incusd.log" </dev/null >>"$dir/incusd.out" 2>&1 &
    pid=$!
    incus admin waitready --timeout=60
    if ! incus storage show default >/dev/null 2>&1; then
        incus admin init --preseed >/dev/null <<PRESEED
config:
  core.https_address: 10.213.$n.2:8443
networks: []
storage_pools:
- {name: default, driver: dir, config: {source: $pool}}
profiles:
- name: default
  devices: {root: {path: /, pool: default, type: disk}}
PRESEED
    fi
    echo "$pid"
    ;;
remote-down)
    # Stops the incusd of DIR (by its log file on the command line); with `purge`, also the
    # namespace NS and everything under DIR.   incus.sh remote-down DIR [NS purge]
    dir="${2:?}"
    if [ "${4:-}" = purge ]; then
        # Its containers first: their processes outlive the daemon (and would keep running).
        for c in $(INCUS_DIR="$dir" timeout 10 incus list -c n -f csv 2>/dev/null || true); do
            INCUS_DIR="$dir" timeout 30 incus delete -f "$c" >/dev/null 2>&1 || true
        done
    fi
    for pid in $(pgrep -f -- "--logfile $dir/incusd.log" || true); do
        kill "$pid" 2>/dev/null || true
        # Gone, or a zombie its adoptive parent has not reaped yet.
        for _ in $(seq 100); do
            state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
            [ -z "$state" ] || [ "$state" = Z ] && break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "${4:-}" = purge ]; then
        # A container its daemon could not delete (the daemon was already gone): its init is the
        # monitor's child, and the container dies with its init.
        for mon in $(pgrep -f -- "^\[lxc monitor\] $dir/containers " || true); do
            pkill -9 -P "$mon" 2>/dev/null || true
            kill -9 "$mon" 2>/dev/null || true
        done
        ip netns del "${3:?}" 2>/dev/null || true
        ip link del "v$3" 2>/dev/null || true
        # incusd leaves its pool and shared mounts mounted.
        awk -v d="$dir" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
        rm -rf "$dir" "${dir%/}-pool"
    fi
    ;;
cluster-up)
    # A 2-member Incus cluster on this machine: members m1 (10.213.N.2) and m2 (10.213.N.3),
    # each an incusd in its own namespace (P1, P2) on a bridge in namespace Psw, this machine at
    # 10.213.N.1 on that bridge. Their INCUS_DIRs are DIR-m1 and DIR-m2.
    #   incus.sh cluster-up DIR P N        (a stopped member comes back with remote-up DIR-mI PI N)
    dir="${2:?}"; p="${3:?}"; n="${4:?}"
    getent group incus-admin >/dev/null || groupadd --system incus-admin
    if [ ! -e "/run/netns/${p}sw" ]; then
        ip netns add "${p}sw"
        ip -n "${p}sw" link add br0 type bridge; ip -n "${p}sw" link set br0 up
        for i in 0 1 2; do
            ip link add "v${p}$i" type veth peer name "v${p}${i}b"
            ip link set "v${p}${i}b" netns "${p}sw"
            ip -n "${p}sw" link set "v${p}${i}b" master br0 up
            if [ "$i" = 0 ]; then
                ip addr add "10.213.$n.1/24" dev "v${p}0"; ip link set "v${p}0" up
            else
                ip netns add "${p}$i"
                ip link set "v${p}$i" netns "${p}$i"
                ip -n "${p}$i" addr add "10.213.$n.$((i + 1))/24" dev "v${p}$i"
                ip -n "${p}$i" link set "v${p}$i" up; ip -n "${p}$i" link set lo up
                ip -n "${p}$i" route add default via "10.213.$n.1"
            fi
        done
    fi
    for i in 1 2; do
        d="$dir-m$i"; mkdir -p "$d" "$d-pool"
        if ! INCUS_DIR="$d" timeout 3 incus info >/dev/null 2>&1; then
            INCUS_DIR="$d" nsenter --net="/run/netns/${p}$i" setsid /usr/libexec/incus/incusd --group incus-admin \
                --logfile "$d/incusd.log" </dev/null >>"$d/incusd.out" 2>&1 &
            INCUS_DIR="$d" incus admin waitready --timeout=60
        fi
    done
    if ! INCUS_DIR="$dir-m1" incus storage show default >/dev/null 2>&1; then
        INCUS_DIR="$dir-m1" incus admin init --preseed >/dev/null <<PRESEED
config:
  core.https_address: 10.213.$n.2:8443
  cluster.https_address: 10.213.$n.2:8443
networks: []
storage_pools:
- {name: default, driver: dir, config: {source: $dir-m1-pool}}
profiles:
- name: default
  devices: {root: {path: /, pool: default, type: disk}}
cluster: {server_name: m1, enabled: true}
PRESEED
    fi
    if ! INCUS_DIR="$dir-m2" incus storage show default >/dev/null 2>&1; then
        jt=$(INCUS_DIR="$dir-m1" incus cluster add m2 -q)
        INCUS_DIR="$dir-m2" incus admin init --preseed >/dev/null <<PRESEED
cluster:
  enabled: true
  server_name: m2
  server_address: 10.213.$n.3:8443
  cluster_token: $jt
  member_config:
  - {entity: storage-pool, name: default, key: source, value: $dir-m2-pool}
PRESEED
    fi
    ;;
cluster-down)
    # Stops both members and removes the namespaces and everything under DIR-m*.   incus.sh cluster-down DIR P
    dir="${2:?}"; p="${3:?}"
    for i in 1 2; do "$0" remote-down "$dir-m$i" "${p}$i" purge; done
    ip netns del "${p}sw" 2>/dev/null || true
    ip link del "v${p}0" 2>/dev/null || true
    ;;
*)
    echo "usage: $0 install | start DIR | remote-up DIR NS N | remote-down DIR [NS purge] | cluster-up DIR P N | cluster-down DIR P" >&2
    exit 2
    ;;
esac
