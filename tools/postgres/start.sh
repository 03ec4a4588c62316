#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for tests and CI.
#
#   tools/postgres/start.sh            # installs Debian's `postgresql` if needed, starts a server
#   source "${MPP_PG_STATE_DIR:-/tmp/mpp-postgres}/env"    # exports DATABASE_URL etc.
#   tools/postgres/stop.sh             # stops it and removes its data
#
# TLS is on (`ssl=on`) with a certificate for `localhost` and 127.0.0.1 from a throwaway CA
# generated here with `openssl`; the env file exports the CA's path (MPP_TEST_PG_CA_FILE) and
# a URL that verifies it (MPP_TEST_DATABASE_TLS_URL, sslmode=verify-full). Plain connections
# still work. Without `openssl`, the server starts without TLS and those two are not exported.
#
# The server listens on 127.0.0.1 only, on a free port (never 5432), with its data in a
# fresh directory under $MPP_PG_STATE_DIR (default /tmp/mpp-postgres). It runs as the
# `postgres` system user when this script runs as root (postgres refuses to run as root),
# otherwise as the current user. Running it again while the server is up just prints the
# environment again.
#
# Environment:
#   MPP_PG_STATE_DIR   where data, socket, log and the env file live (default /tmp/mpp-postgres)
#   MPP_PG_PORT        port to use (default: a free random port in 20000-39999)
#   MPP_PG_DB          database name (default mpp_test)
#   MPP_PG_TIMEOUT     seconds to wait for readiness (default 60)
set -euo pipefail

STATE_DIR="$(readlink -m "${MPP_PG_STATE_DIR:-${TMPDIR:-/tmp}/mpp-postgres}")"
# pg tools run as another user, which may not be able to enter the caller's directory.
cd /
DB_NAME="${MPP_PG_DB:-mpp_test}"
DB_USER="mpp"
TIMEOUT="${MPP_PG_TIMEOUT:-60}"

log() { printf 'postgres/start.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Finds the directory holding initdb/pg_ctl: PATH first, then Debian's versioned layout.
find_bindir() {
    local cand
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        cand="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
        if [[ -x "$cand/initdb" && -x "$cand/postgres" ]]; then
            printf '%s\n' "$cand"
            return 0
        fi
    fi
    # Highest installed major version wins.
    cand="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$cand" && -x "$cand/pg_ctl" && -x "$cand/initdb" ]]; then
        printf '%s\n' "$cand"
        return 0
    fi
    return 1
}

BINDIR="$(find_bindir || true)"
if [[ -z "$BINDIR" ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        die "PostgreSQL server binaries not found; install Debian's 'postgresql' package (apt-get install -y postgresql) or run this script as root"
    fi
    log "installing PostgreSQL from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y postgresql
    BINDIR="$(find_bindir || true)"
    [[ -n "$BINDIR" ]] || die "postgresql installed but initdb/pg_ctl not found under /usr/lib/postgresql/*/bin"
fi

# Who runs the server: the `postgres` system user when we are root.
if [[ "$(id -u)" -eq 0 ]]; then
    if ! id -u postgres >/dev/null 2>&1; then
        log "creating system user 'postgres'"
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    RUN_USER="postgres"
    as_pg() { runuser -u postgres -- "$@"; }
else
    RUN_USER="$(id -un)"
    as_pg() { "$@"; }
fi

DATA_DIR="$STATE_DIR/data"
SOCK_DIR="$STATE_DIR/sock"
LOG_FILE="$STATE_DIR/postgres.log"
ENV_FILE="$STATE_DIR/env"

print_env() {
    log "PostgreSQL is up; run: source $ENV_FILE"
    cat "$ENV_FILE"
}

# Already running from this state dir? Then just report it (idempotent).
if [[ -f "$ENV_FILE" && -d "$DATA_DIR" ]] && as_pg "$BINDIR/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1; then
    print_env
    exit 0
fi
if [[ -e "$STATE_DIR" ]]; then
    log "removing stale state in $STATE_DIR"
    if [[ -d "$DATA_DIR" ]]; then
        as_pg "$BINDIR/pg_ctl" -D "$DATA_DIR" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$STATE_DIR"
fi

mkdir -p "$STATE_DIR" "$SOCK_DIR"
chmod 700 "$STATE_DIR"
chown -R "$RUN_USER" "$STATE_DIR"
# The server user must be able to reach the state dir (e.g. under a root-only `mktemp -d`):
# grant traverse-only permission (o+x, no listing) on ancestors it cannot enter.
if [[ "$RUN_USER" != "$(id -un)" ]]; then
    ancestors=()
    dir="$(dirname "$STATE_DIR")"
    while [[ "$dir" != "/" ]]; do
        ancestors=("$dir" "${ancestors[@]}")
        dir="$(dirname "$dir")"
    done
    # Top down, so only the directories that actually block get changed.
    for dir in "${ancestors[@]}"; do
        if ! as_pg test -x "$dir"; then
            log "granting o+x on $dir so '$RUN_USER' can reach $STATE_DIR"
            chmod o+x "$dir"
        fi
    done
fi

port_in_use() {
    # A successful connect means something listens there.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1
}

pick_port() {
    local p i
    for i in $(seq 1 50); do
        p=$(( 20000 + RANDOM % 20000 ))
        if ! port_in_use "$p"; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}

PASSWORD="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
PWFILE="$STATE_DIR/pwfile"
printf '%s\n' "$PASSWORD" >"$PWFILE"
chown "$RUN_USER" "$PWFILE"
chmod 600 "$PWFILE"

log "initdb in $DATA_DIR ($BINDIR)"
as_pg "$BINDIR/initdb" -D "$DATA_DIR" -U postgres --pwfile="$PWFILE" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
    >"$STATE_DIR/initdb.log" 2>&1 || {
        cat "$STATE_DIR/initdb.log" >&2
        die "initdb failed"
    }
rm -f "$PWFILE"

# TLS material: a CA and a server certificate it signs, for the names clients verify.
TLS_DIR="$STATE_DIR/tls"
TLS_OPTS=""
if command -v openssl >/dev/null 2>&1; then
    mkdir -p "$TLS_DIR"
    (
        cd "$TLS_DIR"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=mpp test postgres CA" \
            -keyout ca.key -out ca.crt >/dev/null 2>&1
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
            -keyout server.key -out server.csr >/dev/null 2>&1
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.crt >/dev/null 2>&1
        rm -f ca.key server.csr server.ext ca.srl
    ) || die "could not generate the TLS certificates with openssl"
    chown -R "$RUN_USER" "$TLS_DIR"
    # postgres refuses a key readable by others.
    chmod 600 "$TLS_DIR/server.key"
    chmod 644 "$TLS_DIR/ca.crt" "$TLS_DIR/server.crt"
    TLS_OPTS="-c ssl=on -c ssl_cert_file=$TLS_DIR/server.crt -c ssl_key_file=$TLS_DIR/server.key"
else
    log "openssl not found: starting without TLS (the TLS store tests will skip)"
fi

started=""
for attempt in 1 2 3 4 5; do
    PORT="${MPP_PG_PORT:-$(pick_port)}" || die "no free port found"
    [[ "$PORT" != "5432" ]] || die "refusing port 5432 (set MPP_PG_PORT to another port)"
    log "starting server on 127.0.0.1:$PORT (attempt $attempt)"
    if as_pg "$BINDIR/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t "$TIMEOUT" \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $SOCK_DIR -c fsync=off -c max_connections=200 $TLS_OPTS" \
        start >/dev/null; then
        started=1
        break
    fi
    as_pg "$BINDIR/pg_ctl" -D "$DATA_DIR" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    [[ -z "${MPP_PG_PORT:-}" ]] || break
done
if [[ -z "$started" ]]; then
    tail -n 30 "$LOG_FILE" >&2 || true
    die "server did not start"
fi
printf '%s\n' "$PORT" >"$STATE_DIR/port"
printf '%s\n' "$BINDIR" >"$STATE_DIR/bindir"

# Wait until it accepts TCP connections (pg_ctl -w already waited; this bounds the rest).
deadline=$(( SECONDS + TIMEOUT ))
until as_pg "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 2; do
    if (( SECONDS >= deadline )); then
        tail -n 30 "$LOG_FILE" >&2 || true
        die "server not ready after ${TIMEOUT}s"
    fi
    sleep 0.2
done

psql_pg() { as_pg "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK_DIR" -p "$PORT" -U postgres -d postgres "$@"; }
psql_pg -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$PASSWORD'" >/dev/null
psql_pg -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >/dev/null

URL="postgres://$DB_USER:$PASSWORD@127.0.0.1:$PORT/$DB_NAME"
umask 077
cat >"$ENV_FILE" <<ENV
export DATABASE_URL=$URL
export MPP_TEST_DATABASE_URL=$URL
export MPP_PG_STATE_DIR=$STATE_DIR
ENV
if [[ -n "$TLS_OPTS" ]]; then
    cat >>"$ENV_FILE" <<ENV
export MPP_TEST_PG_CA_FILE=$TLS_DIR/ca.crt
export MPP_TEST_DATABASE_TLS_URL='postgres://$DB_USER:$PASSWORD@localhost:$PORT/$DB_NAME?sslmode=verify-full&sslrootcert=$TLS_DIR/ca.crt'
ENV
fi
chown "$RUN_USER" "$ENV_FILE"
# The caller (possibly root) must be able to read it; root can anyway, so keep it private.
print_env
