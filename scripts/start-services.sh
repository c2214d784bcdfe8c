#!/usr/bin/env bash
# Make sure the services of the test tiers answer on this machine:
#   PostgreSQL at 127.0.0.1:5432 (user postgres, no password) and Redis at 127.0.0.1:6379.
# Installs (apt) and starts whichever is missing; exits non-zero with a clear message when one
# cannot be made to answer. Works with or without systemd.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" start-services

install_service() { # package...
  apt_install "$@"
  say "installed $*"
}

# --- PostgreSQL -------------------------------------------------------------------------------

PG_DSN="postgresql://postgres@127.0.0.1:5432/postgres"
PG_ERROR=""

pg_ok() {
  if PG_ERROR="$("$PYTHON" - "$PG_DSN" 2>&1 <<'EOF'
import sys
try:
    import psycopg
except ImportError:
    sys.exit(3)
try:
    with psycopg.connect(sys.argv[1], connect_timeout=3) as conn:
        conn.execute("SELECT 1")
except psycopg.Error as exc:
    print(str(exc).strip().splitlines()[-1])
    sys.exit(1)
EOF
  )"; then
    return 0
  elif [ $? -eq 3 ]; then # no psycopg yet: fall back to psql
    command -v psql >/dev/null 2>&1 || return 1
    PG_ERROR="$(psql "$PG_DSN" -tAc 'SELECT 1' 2>&1 >/dev/null)" && return 0
  fi
  return 1
}

pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }

pg_start() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(pg_version)" ]; then
    install_service postgresql
    PG_INSTALLED=1
    mkdir -p "$VAR_DIR" && touch "$VAR_DIR/.postgresql-installed-by-setup"
  fi
  local version
  version="$(pg_version)"
  [ -n "$version" ] || die "PostgreSQL is installed but /etc/postgresql holds no cluster"
  if [ ! -d "/etc/postgresql/$version/main" ]; then
    "${SUDO[@]}" pg_createcluster "$version" main
    PG_INSTALLED=1
    say "created PostgreSQL cluster $version/main"
  fi
  if ! tcp_answers 127.0.0.1 5432; then
    if has_systemd; then
      "${SUDO[@]}" systemctl start postgresql
    else
      "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
    say "started PostgreSQL $version/main"
  fi
}

# A fresh Debian cluster asks for a password over TCP; the tests connect as postgres without
# one. Only a cluster that this script or setup.sh installed (or any cluster under CI) is
# switched to trust, and only for user postgres from 127.0.0.1.
pg_trust_localhost() {
  local version hba
  version="$(pg_version)"
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  [ -n "$version" ] && [ -f "$hba" ] || return 1
  grep -q "added by scripts/start-services.sh" "$hba" && return 1
  "${SUDO[@]}" sed -i '1i host all postgres 127.0.0.1/32 trust  # added by scripts/start-services.sh for the test tiers' "$hba"
  "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  say "allowed user postgres from 127.0.0.1 without password in $hba"
}

PG_INSTALLED=0
[ -e "$VAR_DIR/.postgresql-installed-by-setup" ] && PG_INSTALLED=1
if ! pg_ok; then
  pg_start
  wait_for 30 tcp_answers 127.0.0.1 5432 ||
    die "PostgreSQL does not listen on 127.0.0.1:5432 (see /var/log/postgresql/)"
  if ! wait_for 10 pg_ok; then
    ci="$(tr '[:upper:]' '[:lower:]' <<<"${CI:-}")"
    if [ "$PG_INSTALLED" -eq 1 ] || [ "$ci" = true ] || [ "$ci" = 1 ]; then
      pg_trust_localhost || true
    fi
    wait_for 5 pg_ok ||
      die "PostgreSQL answers but user postgres cannot log in from 127.0.0.1 without a password: $PG_ERROR
  (the postgres tier needs: host all postgres 127.0.0.1/32 trust in pg_hba.conf)"
  fi
fi
say "PostgreSQL answers at 127.0.0.1:5432"

# --- Redis ------------------------------------------------------------------------------------

redis_ok() {
  "$PYTHON" - <<'EOF' 2>/dev/null
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", 6379), timeout=2) as s:
        s.sendall(b"PING\r\n")
        sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
EOF
}

if ! redis_ok; then
  if ! command -v redis-server >/dev/null 2>&1; then
    install_service redis-server
  fi
  # The package's own start (when there is an init system) may already have done the job.
  if ! wait_for 3 redis_ok; then
    if has_systemd; then
      "${SUDO[@]}" systemctl start redis-server
    else
      "${SUDO[@]}" redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    fi
    say "started redis-server"
  fi
  wait_for 15 redis_ok ||
    die "Redis does not answer PING at 127.0.0.1:6379 (is another process on the port, or a password set?)"
fi
say "Redis answers at 127.0.0.1:6379"
