#!/usr/bin/env bash
# Idempotent installation of the tools the real-client integration tests need
# (coturn's turnutils_* and turnserver, iproute2, openssl, a Python venv with aioice).
# Meant to run as root on a Debian machine; safe to re-run.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

export DEBIAN_FRONTEND=noninteractive

log() { printf '[setup] %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        $SUDO apt-get update -q
        APT_UPDATED=1
    fi
}

# --- coturn and friends -------------------------------------------------------------
need_apt=()
command -v turnutils_uclient >/dev/null 2>&1 || need_apt+=(coturn)
# The kernel offload's eBPF program (bpf/offload.c) is built by build.rs with clang against
# the libbpf headers; without them the daemon builds without the offload.
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_apt+=(libbpf-dev)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v timeout >/dev/null 2>&1 || need_apt+=(coreutils)
# strace: tests/ops_reload.rs counts the file-system calls of idle watchers with it.
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
# ethtool: tests/it/offload_veth.rs turns transmit checksum offload off on its veths, so the
# receiving stacks verify the checksums the kernel offload rewrote.
command -v ethtool >/dev/null 2>&1 || need_apt+=(ethtool)
# scripts/dockerfile-build-steps.sh: `file` checks the static binary, binutils' `strip`
# strips it; scripts/readme-first-command.sh clones the repository with git.
command -v file >/dev/null 2>&1 || need_apt+=(file)
command -v strip >/dev/null 2>&1 || need_apt+=(binutils)
command -v git >/dev/null 2>&1 || need_apt+=(git)
# Build dependencies: openssl-sys (TURN-DTLS) links the system OpenSSL via pkg-config
# (libssl-dev also holds the static libraries the container image's build links).
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need_apt+=(libssl-dev)

if [ "${#need_apt[@]}" -gt 0 ]; then
    log "installing: ${need_apt[*]}"
    # Keep the package's init script / unit from starting a turnserver on 3478 during
    # installation: a policy-rc.d that denies every start (only if none exists already).
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ] && [ -w /usr/sbin ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created_policy=1
    fi
    cleanup_policy() { if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi; }
    trap cleanup_policy EXIT
    apt_update_once
    $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}"
    cleanup_policy
    created_policy=0
    trap - EXIT
else
    log "coturn, iproute2, openssl already installed"
fi

# Make sure no packaged coturn service keeps running (it would listen on 3478/3479/5349).
# Only the service manager / the package's own pidfile are used: never kill by name.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-active --quiet coturn 2>/dev/null; then
        log "stopping packaged coturn service"
        $SUDO systemctl stop coturn || true
    fi
    $SUDO systemctl disable coturn >/dev/null 2>&1 || true
else
    for pidfile in /var/run/turnserver.pid /run/turnserver.pid /var/run/turnserver/turnserver.pid; do
        if [ -r "$pidfile" ]; then
            pid="$(tr -dc '0-9' <"$pidfile")"
            if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] \
                && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q '/etc/turnserver.conf'; then
                log "stopping packaged coturn daemon (pid $pid)"
                $SUDO kill "$pid" 2>/dev/null || true
            fi
        fi
    done
fi
if [ -f /etc/default/coturn ] && grep -q '^TURNSERVER_ENABLED=1' /etc/default/coturn; then
    log "disabling TURNSERVER_ENABLED in /etc/default/coturn"
    $SUDO sed -i 's/^TURNSERVER_ENABLED=1/#TURNSERVER_ENABLED=1/' /etc/default/coturn || true
fi

# --- Python venv with aioice --------------------------------------------------------
VENV="$REPO_ROOT/.venv"

make_venv() {
    rm -rf "$VENV"
    local py
    py="$(command -v python3 || true)"
    log "creating venv at $VENV"
    # Debian's python3 needs python3-venv for `-m venv` (ensurepip); install on demand.
    if [ -z "$py" ] || ! "$py" -m venv "$VENV" >/dev/null 2>&1 \
        || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$VENV"
        log "installing python3 + python3-venv"
        apt_update_once
        $SUDO apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip
        py="$(command -v python3)"
        "$py" -m venv "$VENV"
    fi
}

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import aioice' >/dev/null 2>&1; then
    log "venv with aioice present: $VENV"
else
    if ! [ -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        make_venv
    fi
    log "pip install aioice"
    "$VENV/bin/python" -m pip install -q aioice
    "$VENV/bin/python" -c 'import aioice' || { echo "aioice not importable after install" >&2; exit 1; }
fi

log "turnutils_uclient: $(command -v turnutils_uclient)"
log "aioice: $("$VENV/bin/python" -c 'import aioice; print(aioice.__version__)' 2>/dev/null || echo '?')"
log "done"
