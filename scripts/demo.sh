#!/usr/bin/env bash
# `make demo`: a PostgreSQL holding a 1,000,000-row `orders` table and a small `customers` table, a demo/rivet.toml
# exporting both (orders → Parquet/zstd, customers → CSV, under demo/out), and a real run of it.
#
# Which PostgreSQL: $RIVET_DEMO_PG_URL if set (its database is used as is); else the server on 127.0.0.1:5432
# (database rivet_demo) if it lets user postgres in; else a throwaway cluster in demo/pg on a free port, stopped when
# the demo ends (its data is kept, so the next demo skips the load).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=1000000
DEMO=$PWD/demo
MARK="rivet demo data"   # table comment: tables without it are never dropped or reloaded

log() { echo "demo: $*" >&2; }
die() { log "$*"; exit 1; }
mask() { sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#' <<<"$1"; }
q() { PGOPTIONS='-c client_min_messages=warning' psql -X -w -q -v ON_ERROR_STOP=1 "$@"; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

# ---------------------------------------------------------------- pick a server
CLUSTER=""   # data directory of the throwaway cluster, when we started one

stop_cluster() {
  if [ -n "$CLUSTER" ]; then
    log "stopping the throwaway PostgreSQL"
    as_pg "$(pg_bin)/pg_ctl" -D "$CLUSTER" -m fast -w stop >/dev/null || true
  fi
}
trap stop_cluster EXIT
trap 'exit 130' INT TERM

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_throwaway() {  # sets CLUSTER and SERVER (the URL of its postgres database)
  local bin dir port
  bin=$(pg_bin)
  dir=$DEMO/pg
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    # The server runs as postgres, which may not reach a checkout under a private home directory.
    if ! runuser -u postgres -- test -w "$dir"; then
      dir=${TMPDIR:-/tmp}/rivet-demo-pg
      install -d -o postgres -g postgres "$dir"
    fi
  fi
  CLUSTER=$dir/data
  if [ ! -s "$CLUSTER/PG_VERSION" ]; then
    log "creating a throwaway PostgreSQL cluster in $CLUSTER"
    as_pg "$bin/initdb" -D "$CLUSTER" -U postgres -A trust -E UTF8 --no-sync >/dev/null
  fi
  port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log "starting it on 127.0.0.1:$port"
  as_pg "$bin/pg_ctl" -D "$CLUSTER" -l "$dir/server.log" -w -s \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=''" start
  SERVER="postgresql://postgres@127.0.0.1:$port/postgres"
}

ensure_db() {  # ensure_db SERVER_URL DB → prints the database URL
  local server=$1 db=$2
  if [ "$(q "$server" -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
    q "$server" -c "CREATE DATABASE $db"
  fi
  sed -E "s#/[^/?]*([?].*)?\$#/$db\\1#" <<<"$server"
}

command -v psql >/dev/null || [ -n "$(pg_bin)" ] || scripts/services.sh   # no client at all: install PostgreSQL
[ -n "$(pg_bin)" ] && PATH=$PATH:$(pg_bin)

LOCAL=postgresql://postgres@127.0.0.1:5432/postgres
if [ -n "${RIVET_DEMO_PG_URL:-}" ]; then
  export RIVET_DEMO_PG_URL
  URL=$RIVET_DEMO_PG_URL
  SOURCE='url_env = "RIVET_DEMO_PG_URL"'   # keep any password out of the file
elif q "$LOCAL" -c 'SELECT 1' >/dev/null 2>&1; then
  URL=$(ensure_db "$LOCAL" rivet_demo)
  SOURCE="url = \"$URL\""
else
  if [ -z "$(pg_bin)" ]; then scripts/services.sh && URL=$(ensure_db "$LOCAL" rivet_demo)
  else start_throwaway && URL=$(ensure_db "$SERVER" rivet_demo); fi
  SOURCE="url = \"$URL\""
fi
log "using $(mask "$URL")"

# ---------------------------------------------------------------- sample data
table_state() {  # absent | ours | foreign
  q "$URL" -Atc "SELECT CASE WHEN to_regclass('public.$1') IS NULL THEN 'absent'
                             WHEN obj_description(to_regclass('public.$1'), 'pg_class') = '$MARK' THEN 'ours'
                             ELSE 'foreign' END"
}
refuse_foreign() {
  [ "$(table_state "$1")" != foreign ] ||
    die "$(mask "$URL") already has a table public.$1 that the demo did not create; not touching it (use a scratch database)"
}

refuse_foreign orders
refuse_foreign customers
if [ "$(table_state orders)" = ours ] && [ "$(q "$URL" -Atc 'SELECT count(*) FROM public.orders')" = "$ROWS" ]; then
  log "orders already holds $ROWS rows"
else
  log "loading $ROWS rows into orders (a few seconds)"
  q "$URL" -1 -v tbl=orders -v n=$ROWS -f scripts/pg_orders.sql -c "COMMENT ON TABLE orders IS '$MARK'"
fi
q "$URL" -1 -f scripts/demo_data.sql -c "COMMENT ON TABLE customers IS '$MARK'"

# ---------------------------------------------------------------- config and run
mkdir -p "$DEMO"
cat >"$DEMO/rivet.toml" <<EOF
# Written by scripts/demo.sh (make demo). Paths are relative to this file.
[source]
type = "postgres"
$SOURCE
environment = "local"

[[exports]]
name = "orders"
table = "public.orders"
mode = "full"
format = "parquet"
compression = "zstd"
destination = { type = "local", path = "out/orders" }

[[exports]]
name = "orders_chunked"
table = "public.orders"
mode = "chunked"
chunk_size = 100000
parallel = 2
destination = { type = "local", path = "out/orders_chunked" }

[[exports]]
name = "orders_changes"
table = "public.orders"
mode = "incremental"
cursor_column = "updated_at"
incremental_cursor_mode = "coalesce"
cursor_fallback_column = "created_at"
destination = { type = "local", path = "out/orders_changes" }

[[exports]]
name = "customers"
table = "public.customers"
mode = "full"
format = "csv"
compression = "none"
destination = { type = "local", path = "out/customers" }
EOF
log "wrote demo/rivet.toml; exporting to demo/out"

# On a terminal this opens the TUI with the exports running (r / R / p / c / ? inside); headless otherwise.
.venv/bin/rivet run -c demo/rivet.toml --parallel-exports 2
