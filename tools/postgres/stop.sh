#!/usr/bin/env bash
# Stops the server started by tools/postgres/start.sh and removes its data directory.
# Safe to run when nothing is running.
#
# Environment: MPP_PG_STATE_DIR (default /tmp/mpp-postgres), as for start.sh.
set -euo pipefail

STATE_DIR="$(readlink -m "${MPP_PG_STATE_DIR:-${TMPDIR:-/tmp}/mpp-postgres}")"
# pg tools run as another user, which may not be able to enter the caller's directory.
cd /
DATA_DIR="$STATE_DIR/data"

log() { printf 'postgres/stop.sh: %s\n' "$*" >&2; }

if [[ ! -e "$STATE_DIR" ]]; then
    log "nothing to stop ($STATE_DIR does not exist)"
    exit 0
fi

BINDIR=""
if [[ -f "$STATE_DIR/bindir" ]]; then
    BINDIR="$(cat "$STATE_DIR/bindir")"
fi
if [[ -z "$BINDIR" || ! -x "$BINDIR/pg_ctl" ]]; then
    BINDIR="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
fi

if [[ "$(id -u)" -eq 0 ]] && id -u postgres >/dev/null 2>&1; then
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

if [[ -d "$DATA_DIR" && -n "$BINDIR" && -x "$BINDIR/pg_ctl" ]]; then
    if as_pg "$BINDIR/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1; then
        log "stopping server in $DATA_DIR"
        if ! as_pg "$BINDIR/pg_ctl" -D "$DATA_DIR" -m fast -w -t 30 stop >/dev/null; then
            log "fast shutdown failed; using immediate"
            as_pg "$BINDIR/pg_ctl" -D "$DATA_DIR" -m immediate -w -t 30 stop >/dev/null || true
        fi
    fi
fi

rm -rf "$STATE_DIR"
log "removed $STATE_DIR"
