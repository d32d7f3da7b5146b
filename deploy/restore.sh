#!/bin/sh
# Restore a dump made by deploy/backup.sh into an empty database, in one transaction: it
# is restored whole or not at all. Usage: deploy/restore.sh <dump file>
#
# The database: $VPNBOT_DATABASE__DSN, else $VPNBOT_DSN_FILE (by default
# /etc/vpnbot/credentials/database.dsn). Create it empty first (createdb -O vpnbot
# vpnbot); a database that has vpnbot's tables already is refused. Set PG_RESTORE and PSQL
# to pick the client tools' version, as PG_DUMP for backup.sh.
set -eu
dump="${1:?usage: restore.sh <dump file>}"
[ -r "$dump" ] || { echo "restore.sh: cannot read $dump" >&2; exit 2; }
dsn="${VPNBOT_DATABASE__DSN:-}"
if [ -z "$dsn" ]; then
    dsn_file="${VPNBOT_DSN_FILE:-/etc/vpnbot/credentials/database.dsn}"
    [ -r "$dsn_file" ] || { echo "restore.sh: no VPNBOT_DATABASE__DSN and cannot read $dsn_file" >&2; exit 2; }
    dsn="$(cat "$dsn_file")"
fi
existing="$("${PSQL:-psql}" --no-psqlrc --quiet --tuples-only --no-align --dbname="$dsn" \
    --command="select count(*) from pg_tables where schemaname = 'public'")"
if [ "$existing" != "0" ]; then
    echo "restore.sh: the target database has $existing tables already; restore into an empty one" >&2
    exit 3
fi
"${PG_RESTORE:-pg_restore}" --exit-on-error --single-transaction --no-owner --no-privileges \
    --dbname="$dsn" "$dump"
echo "restore.sh: restored $dump"
