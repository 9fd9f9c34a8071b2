# Sourced by scripts/policy-cost.sh and scripts/context-cost.sh: a throwaway
# cluster, migrated, whose backend they run in single-user mode under
# callgrind. Needs the PostgreSQL server binaries, valgrind and a built
# target/release/tenantry. Takes a name for the temporary directory; sets
# root, tenantry, bindir, work, as_pg (runs a command as the postgres user
# when this is root) and port, defines psql() (the superuser, stopping at the
# first error), and removes the cluster on exit.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tenantry=$root/target/release/tenantry
bindir=${TENANTRY_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$tenantry" ] || { echo "build it first: cargo build --release" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }

work=$(mktemp -d "/tmp/tenantry-$1.XXXXXX")
as_pg=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$work"
    as_pg=(runuser -u postgres --)
fi
port=$((20000 + RANDOM % 20000))
cleanup() {
    "${as_pg[@]}" "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"${as_pg[@]}" "$bindir/initdb" -D "$work/data" -U postgres -A trust >/dev/null
"${as_pg[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/log" -w \
    -o "-p $port -k $work -c listen_addresses=''" start >/dev/null
DATABASE_URL="postgres://postgres@%2F${work//\//%2F}:$port/postgres" "$tenantry" migrate >/dev/null
psql() { command psql -h "$work" -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
