#!/bin/sh
# Make the example database with the host's sqlite3 into DIR/data/test.db (default build/sqlite-root),
# then pack DIR as an initrd: build/db.cpio. Run from the repository root.
set -e
DIR=${1:-build/sqlite-root}
OUT=${2:-build/db.cpio}
UNIREALM=${UNIREALM:-.venv/bin/unirealm}
if ! command -v sqlite3 >/dev/null 2>&1; then
    echo "installing Debian's sqlite3 (host)"; ${SUDO:-} apt-get install -y -qq sqlite3
fi
rm -rf "$DIR" && mkdir -p "$DIR/data"
sqlite3 "$DIR/data/test.db" < examples/sqlite/schema.sql
"$UNIREALM" initrd "$DIR" -o "$OUT"
