#!/bin/sh
# Dump vpnbot's database into one file, in PostgreSQL's custom format (compressed; restore
# it with deploy/restore.sh). Usage: deploy/backup.sh <dump file>
#
# The database: $VPNBOT_DATABASE__DSN, else the credential file the service reads
# ($VPNBOT_DSN_FILE, by default /etc/vpnbot/credentials/database.dsn). pg_dump must be of
# the server's major version or newer: set PG_DUMP to pick one (PG_DUMP=/usr/lib/postgresql/16/bin/pg_dump).
# The dump is written beside the target and renamed into place once complete, so a
# failed run never leaves a truncated file under the dump's name.
set -eu
out="${1:?usage: backup.sh <dump file>}"
dsn="${VPNBOT_DATABASE__DSN:-}"
if [ -z "$dsn" ]; then
    dsn_file="${VPNBOT_DSN_FILE:-/etc/vpnbot/credentials/database.dsn}"
    [ -r "$dsn_file" ] || { echo "backup.sh: no VPNBOT_DATABASE__DSN and cannot read $dsn_file" >&2; exit 2; }
    dsn="$(cat "$dsn_file")"
fi
partial="$out.partial"
trap 'rm -f "$partial"' EXIT
"${PG_DUMP:-pg_dump}" --format=custom --no-owner --no-privileges --file="$partial" --dbname="$dsn"
mv "$partial" "$out"
trap - EXIT
echo "backup.sh: wrote $out"
