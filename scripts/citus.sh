#!/usr/bin/env bash
# Citus for tenantry's scale-out tests (issue 15): builds Citus from a source
# directory or tarball against the installed PostgreSQL's headers, without
# changing the installed server packages, and runs a coordinator and two
# workers on loopback ports as the `postgres` user.
#
#   scripts/citus.sh build <citus source dir or .tar.gz>   # ~2 min on 2 cores
#   scripts/citus.sh start                                 # prints DATABASE_URL of the coordinator
#   scripts/citus.sh url                                   # the coordinator's URL again
#   scripts/citus.sh stop
#
# Citus is not in Debian's archive. Its source is never part of this
# repository: get it yourself (git clone https://github.com/citusdata/citus,
# tag v13.2.2, the last release for PostgreSQL 15).
#
# How (docs/scale-out.md):
# - headers matching the installed server exactly: `apt-get download` of
#   postgresql-server-dev-<major> at the installed version (and the headers
#   of gssapi, zstd and lz4, which the server's pg_config.h names), unpacked
#   with dpkg -x:
#   installing them would pull newer libraries PostgreSQL loads;
# - a private copy of the PostgreSQL installation (real copies: postgres finds
#   its share directory relative to its own binary) into which Citus installs;
# - a pg_config wrapper that points the build at those two places.
#
# Everything lives under $CITUS_HOME (default /var/tmp/tenantry-citus), which
# the postgres user must be able to read. Ports: $CITUS_PORT (coordinator,
# default 9700) and the two after it.
set -euo pipefail

HOME_DIR=${CITUS_HOME:-/var/tmp/tenantry-citus}
PORT=${CITUS_PORT:-9700}
MAJOR=$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
PGLIB=/usr/lib/postgresql/$MAJOR
PGSHARE=/usr/share/postgresql/$MAJOR
PRIV=$HOME_DIR/pg
BIN=$PRIV/lib/postgresql/$MAJOR/bin
CLUSTER=$HOME_DIR/cluster
SOCK=$CLUSTER/sock

die() { echo "citus.sh: $*" >&2; exit 1; }
as_postgres() { runuser -u postgres -- "$@"; }

build() {
    local src=${1:-}
    [ -n "$src" ] || die "build needs a Citus source directory or tarball"
    mkdir -p "$HOME_DIR"
    if [ -f "$src" ]; then
        rm -rf "$HOME_DIR/src" && mkdir -p "$HOME_DIR/src"
        tar -xzf "$src" -C "$HOME_DIR/src" --strip-components=1
        src=$HOME_DIR/src
    fi
    [ -x "$src/configure" ] || die "$src has no configure script"

    # Headers of exactly the installed server (and gssapi's), unpacked only.
    local version debs=$HOME_DIR/debs
    version=$(dpkg-query -W -f='${Version}' "postgresql-$MAJOR")
    mkdir -p "$debs" && chmod 777 "$debs"
    # The server's pg_config.h names gssapi, zstd and lz4 (PostgreSQL was built
    # with them): their headers, at the versions of the installed libraries.
    # Each at the installed library's version when the archive still has it
    # (headers only: nothing is installed).
    fetch() {
        local pkg=$1 lib=$2 v
        v=$(dpkg-query -W -f='${Version}' "$lib" 2>/dev/null || true)
        (cd "$debs" && { [ -n "$v" ] && apt-get download -q "$pkg=$v" >/dev/null 2>&1; } \
            || apt-get download -q "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
    }
    rm -f "$debs"/*.deb
    (cd "$debs" && apt-get download -q "postgresql-server-dev-$MAJOR=$version" >/dev/null 2>&1) \
        || die "apt-get download postgresql-server-dev-$MAJOR=$version failed"
    fetch libkrb5-dev libkrb5-3
    fetch krb5-multidev libkrb5-3
    fetch comerr-dev libcom-err2
    fetch libzstd-dev libzstd1
    fetch liblz4-dev liblz4-1
    rm -rf "$HOME_DIR/root" && mkdir -p "$HOME_DIR/root"
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$HOME_DIR/root"; done
    # libpq's headers (libpq-dev, installed) beside them: one include root.
    cp -rn /usr/include/postgresql/. "$HOME_DIR/root/usr/include/postgresql/"

    # A private copy of the server installation for Citus to install into.
    rm -rf "$PRIV" && mkdir -p "$PRIV/lib/postgresql" "$PRIV/share/postgresql"
    cp -rL "$PGLIB" "$PRIV/lib/postgresql/$MAJOR"
    cp -rL "$PGSHARE" "$PRIV/share/postgresql/$MAJOR"

    # pg_config as the installed one says, with the unpacked headers and the
    # private installation in place of the real ones.
    cat >"$HOME_DIR/pg_config" <<EOF
#!/bin/sh
/usr/bin/pg_config "\$@" | sed \\
    -e 's#/usr/include/postgresql#$HOME_DIR/root/usr/include/postgresql#g' \\
    -e 's#$PGLIB/lib#$PRIV/lib/postgresql/$MAJOR/lib#g' \\
    -e 's#$PGLIB/bin#$BIN#g' \\
    -e 's#$PGSHARE#$PRIV/share/postgresql/$MAJOR#g'
EOF
    chmod +x "$HOME_DIR/pg_config"
    # PGXS names the server's paths as they were when PostgreSQL was built.
    sed -i \
        -e "s#/usr/include/postgresql#$HOME_DIR/root/usr/include/postgresql#g" \
        -e "s#$PGLIB/lib#$PRIV/lib/postgresql/$MAJOR/lib#g" \
        -e "s#$PGLIB/bin#$BIN#g" \
        -e "s#$PGSHARE#$PRIV/share/postgresql/$MAJOR#g" \
        "$PRIV/lib/postgresql/$MAJOR/lib/pgxs/src/Makefile.global"

    cd "$src"
    local headers="-I$HOME_DIR/root/usr/include -I$HOME_DIR/root/usr/include/mit-krb5"
    ./configure PG_CONFIG="$HOME_DIR/pg_config" --without-libcurl --without-lz4 --without-zstd \
        CPPFLAGS="$headers" >/dev/null
    make -s with_llvm=no CPPFLAGS="$headers" -j"$(nproc)" >/dev/null
    make -s with_llvm=no CPPFLAGS="$headers" install >/dev/null
    chmod -R a+rX "$HOME_DIR"
    echo "citus.sh: Citus built into $PRIV"
}

url() {
    echo "postgres://postgres@localhost:$PORT/postgres?host=$SOCK"
}

start() {
    [ -f "$PRIV/lib/postgresql/$MAJOR/lib/citus.so" ] || die "no Citus build in $PRIV: run scripts/citus.sh build <source> first"
    mkdir -p "$CLUSTER" "$SOCK"
    chown postgres "$CLUSTER" "$SOCK"
    local i=0
    for node in coordinator worker1 worker2; do
        local dir=$CLUSTER/$node port=$((PORT + i))
        if [ ! -f "$dir/PG_VERSION" ]; then
            as_postgres "$BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
            cat >>"$dir/postgresql.conf" <<EOF
shared_preload_libraries = 'citus'
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
max_connections = 200
max_prepared_transactions = 200
# One Citus maintenance daemon per database that has the extension, and
# each test makes its own databases.
max_worker_processes = 64
EOF
        fi
        if ! as_postgres "$BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
            as_postgres "$BIN/pg_ctl" -D "$dir" -l "$dir/log" -w start >/dev/null
        fi
        as_postgres "$BIN/psql" -h "$SOCK" -p "$port" -U postgres -d postgres -qAtc \
            "CREATE EXTENSION IF NOT EXISTS citus" >/dev/null
        i=$((i + 1))
    done
    as_postgres "$BIN/psql" -h "$SOCK" -p "$PORT" -U postgres -d postgres -qAt >/dev/null <<EOF
SELECT citus_set_coordinator_host('127.0.0.1', $PORT);
SELECT citus_add_node('127.0.0.1', $((PORT + 1))) WHERE NOT EXISTS (SELECT 1 FROM pg_dist_node WHERE nodeport = $((PORT + 1)));
SELECT citus_add_node('127.0.0.1', $((PORT + 2))) WHERE NOT EXISTS (SELECT 1 FROM pg_dist_node WHERE nodeport = $((PORT + 2)));
EOF
    url
}

stop() {
    for node in coordinator worker1 worker2; do
        [ -f "$CLUSTER/$node/PG_VERSION" ] && as_postgres "$BIN/pg_ctl" -D "$CLUSTER/$node" -m fast stop >/dev/null 2>&1 || true
    done
}

case "${1:-}" in
    build) build "${2:-}" ;;
    start) start ;;
    url) url ;;
    stop) stop ;;
    *) die "usage: scripts/citus.sh build <source> | start | url | stop" ;;
esac
