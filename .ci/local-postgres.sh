#!/usr/bin/env bash
# A REAL PostgreSQL server for the history store's tests (tests/unit/test_history_store.py and
# friends), from Debian's package: a fresh cluster made by initdb in a temporary folder, run as
# the `postgres` system user when this script runs as root (initdb refuses root), listening on
# 127.0.0.1 only (and a Unix socket inside that folder), on a free port, password
# authentication (scram-sha-256) for one role, `distrinews`, that may create databases.
#
#   bash .ci/local-postgres.sh up      installs the package if missing, starts the server and
#                                      prints on stdout the lines to eval:
#                                        export DISTRINEWS_TEST_POSTGRES_URL=postgresql+psycopg://...
#                                        export DISTRINEWS_TEST_POSTGRES_DIR=/tmp/...
#                                      exit 0 = it answered a query; else exit 1, ONE line on
#                                      stderr saying why, nothing left running.
#   bash .ci/local-postgres.sh down DIR   stops that server and deletes DIR.
#
# The tests read DISTRINEWS_TEST_POSTGRES_URL; without it the PostgreSQL variants skip and say
# so. The password is made up per run and lives only in that URL.
set -euo pipefail

fail() { echo "local-postgres: $*" >&2; exit 1; }

bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

as_owner() {  # run a command as the cluster's owner (postgres when we are root)
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

up() {
  local bin dir port pw log
  bin=$(bindir) || true
  if [ -z "$bin" ]; then
    command -v apt-get >/dev/null || fail "no PostgreSQL under /usr/lib/postgresql and no apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
      >/dev/null 2>&1 || fail "apt-get install postgresql failed"
    bin=$(bindir) || fail "postgresql installed but no initdb under /usr/lib/postgresql"
  fi
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    fail "running as root and there is no postgres user to own the cluster"
  fi
  dir=$(mktemp -d /tmp/distrinews-pg.XXXXXX)
  chmod 0755 "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log="$dir/server.log"
  local pwfile="$dir/pw"
  printf '%s\n' "$pw" >"$pwfile"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$pwfile"
  if ! as_owner "$bin/initdb" -D "$dir/data" -U distrinews --pwfile="$pwfile" \
      --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
      >"$dir/initdb.log" 2>&1; then
    local why; why=$(tail -n 1 "$dir/initdb.log")
    rm -rf "$dir"; fail "initdb failed: $why"
  fi
  rm -f "$pwfile"
  # Small and quick: no fsync (a test server; its data dies with the run), loopback only.
  if ! as_owner "$bin/pg_ctl" -D "$dir/data" -l "$log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir \
          -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
          -c max_connections=100 -c shared_buffers=32MB" >/dev/null 2>&1; then
    local why; why=$(tail -n 1 "$log" 2>/dev/null || echo "no log")
    rm -rf "$dir"; fail "the server did not start: $why"
  fi
  if ! PGPASSWORD="$pw" "$bin/psql" -h 127.0.0.1 -p "$port" -U distrinews -d postgres \
      -qAtc 'select 1' >/dev/null 2>&1; then
    down "$dir"; fail "the server started but does not answer on 127.0.0.1:$port"
  fi
  echo "export DISTRINEWS_TEST_POSTGRES_URL=postgresql+psycopg://distrinews:$pw@127.0.0.1:$port/postgres"
  echo "export DISTRINEWS_TEST_POSTGRES_DIR=$dir"
  echo "local-postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)" >&2
}

down() {
  local dir=${1:-}
  [ -n "$dir" ] && [ -d "$dir/data" ] || return 0
  local bin; bin=$(bindir) || true
  [ -n "$bin" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

case "${1:-}" in
  up) up ;;
  down) down "${2:-}" ;;
  *) echo "usage: $0 up | down DIR" >&2; exit 2 ;;
esac
