#!/bin/sh
# psql as the superuser (`postgres`) on the embedded Postgres that `npm start` runs, over TCP with
# SCRAM, using the password kept in <data dir>/pg-superuser.secret. The password is never printed
# nor put on a command line or in the environment: it goes into a temporary password file (mode
# 600, removed on exit) named by PGPASSFILE.
#
#   scripts/psql.sh                      # the control-plane database (tenantry)
#   scripts/psql.sh -d tenantry_data     # the shared data database (pool and bridge tenants)
#   scripts/psql.sh -d tenantry -c 'SELECT slug, tier, status FROM tenants'
#
# Any argument goes to psql. Reads TENANTRY_DATA_DIR (default ./.tenantry, relative to the current
# directory, as the server reads it) and TENANTRY_EMBEDDED_PG_PORT (default 54329).
set -eu

data_dir=${TENANTRY_DATA_DIR:-./.tenantry}
port=${TENANTRY_EMBEDDED_PG_PORT:-54329}
secret_file="$data_dir/pg-superuser.secret"

if [ ! -r "$secret_file" ]; then
  echo "psql.sh: cannot read $secret_file: is TENANTRY_DATA_DIR the directory 'npm start' uses (and are you its user)?" >&2
  exit 2
fi
if ! command -v psql >/dev/null 2>&1; then
  echo "psql.sh: psql is not installed (Debian/Ubuntu: apt-get install postgresql-client)" >&2
  exit 2
fi

umask 077
passfile=$(mktemp "${TMPDIR:-/tmp}/tenantry-pgpass.XXXXXX")
trap 'rm -f "$passfile"' EXIT
# Ctrl-C belongs to psql (it cancels the query); a TERM or HUP still removes the file.
trap '' INT
trap 'exit 143' TERM HUP
# host:port:database:user:password; the secret is base64url (no ':' or '\' to escape).
printf '127.0.0.1:%s:*:postgres:%s\n' "$port" "$(head -n 1 "$secret_file")" >"$passfile"

# Not exec: the trap removes the password file when psql exits.
status=0
PGPASSFILE=$passfile PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=${PGDATABASE:-tenantry} \
  psql "$@" || status=$?
exit "$status"
