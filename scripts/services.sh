#!/usr/bin/env bash
# Make the two database servers the tests need available, installing and starting them only when needed:
#   PostgreSQL  127.0.0.1:5432, user postgres, trust auth
#   MariaDB     127.0.0.1:3306, user root, no password over TCP
# plus tmux (the TUI smoke test drives a real terminal) and chromium + chromium-driver (the `rivet serve` test drives
# a real browser with Selenium).
#
# A server that already answers as above is left alone: never stopped, never reconfigured. Authentication is only
# changed on a server this script installed or started itself. When RIVET_SERVICES_RECORD names a file, the servers
# this script started are written to it, and `services.sh stop` (same variable) stops exactly those.
set -euo pipefail

PG_PORT=5432
MY_PORT=3306
RECORD=${RIVET_SERVICES_RECORD:-}
MARK="# added by rivet scripts/services.sh: local trust for the test suite"

log() { echo "services: $*" >&2; }
die() { log "$*"; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

apt_updated=""
apt_install() {
  command -v apt-get >/dev/null || die "cannot install $* (no apt-get): install it by hand"
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then die "need root to install $*"; fi
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  log "installing $*"
  # Debian's maintainer scripts may try to start the servers; that can fail in a container without init, harmlessly:
  # the servers are started below either way.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

record() { if [ -n "$RECORD" ]; then echo "$1" >>"$RECORD"; fi; }

wait_for() {  # wait_for NAME CMD...: up to 60 s
  local name=$1; shift
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "$name did not come up within 60 s"
}

# ---------------------------------------------------------------- PostgreSQL
pg_answers() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }
pg_ok() { psql -X -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; }
pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -1; }

pg_trust() {  # first match wins in pg_hba.conf: put loopback trust for postgres at the top, then reload
  local ver hba
  ver=$(pg_version)
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  if ! $SUDO grep -qF "$MARK" "$hba"; then
    log "PostgreSQL: trusting postgres on 127.0.0.1/::1 ($hba)"
    $SUDO sed -i "1i $MARK\nhost all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust" "$hba"
  fi
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
}

postgres_up() {
  if pg_ok; then return 0; fi
  if pg_answers; then
    die "PostgreSQL on 127.0.0.1:$PG_PORT is running but does not let user postgres in without a password;
  add 'host all postgres 127.0.0.1/32 trust' to pg_hba.conf, or point RIVET_TEST_PG_URL at a server the tests may use"
  fi
  command -v pg_ctlcluster >/dev/null && [ -n "$(pg_version)" ] || apt_install postgresql postgresql-client
  local ver
  ver=$(pg_version)
  [ -n "$ver" ] || die "PostgreSQL is installed but /etc/postgresql holds no cluster"
  log "starting PostgreSQL $ver"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start || $SUDO service postgresql start
  record postgres
  wait_for "PostgreSQL" pg_answers
  pg_ok || pg_trust
  wait_for "PostgreSQL (auth)" pg_ok
}

# ---------------------------------------------------------------- MariaDB
my_answers() { mysqladmin -s -h 127.0.0.1 -P "$MY_PORT" -uroot ping; }  # 0 even on "access denied"
my_ok() { mariadb -h 127.0.0.1 -P "$MY_PORT" -uroot -e 'SELECT 1'; }

my_trust() {  # a fresh MariaDB lets root in only through the unix socket: also allow an empty password over TCP
  log "MariaDB: allowing root with no password over TCP"
  $SUDO mariadb -uroot <<'SQL'
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('');
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
}

mariadb_up() {
  if my_ok >/dev/null 2>&1; then return 0; fi
  if my_answers >/dev/null 2>&1; then
    die "MariaDB on 127.0.0.1:$MY_PORT is running but refuses root without a password;
  allow it, or point RIVET_TEST_MYSQL_URL at a server the tests may use"
  fi
  [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server mariadb-client
  log "starting MariaDB"
  $SUDO install -d -o mysql -g mysql /run/mysqld   # the socket directory; the init script makes it, mariadbd does not
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || $SUDO service mariadb start
  record mariadb
  wait_for "MariaDB" my_answers
  my_ok >/dev/null 2>&1 || my_trust
  wait_for "MariaDB (auth)" my_ok
}

# ---------------------------------------------------------------- stop what we started
stop_recorded() {
  [ -n "$RECORD" ] && [ -s "$RECORD" ] || return 0
  if grep -qx postgres "$RECORD"; then
    log "stopping PostgreSQL (started by this run)"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main stop || true
  fi
  if grep -qx mariadb "$RECORD"; then
    log "stopping MariaDB (started by this run)"
    $SUDO mariadb-admin -uroot shutdown || true
  fi
  : >"$RECORD"
}

case "${1:-start}" in
  start)
    command -v tmux >/dev/null || apt_install tmux
    { command -v chromium && command -v chromedriver; } >/dev/null || apt_install chromium chromium-driver
    postgres_up
    mariadb_up
    log "PostgreSQL 127.0.0.1:$PG_PORT and MariaDB 127.0.0.1:$MY_PORT are up"
    ;;
  stop) stop_recorded ;;
  *) die "usage: $0 [start|stop]" ;;
esac
