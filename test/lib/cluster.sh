# test/lib/cluster.sh -- shared by test/run, test/demo and test/bench/*: install
# what is missing, build and install the extension, and run a throw-away
# PostgreSQL cluster as an unprivileged user on a free loopback port.
#
# Source it, then:
#   ensure_packages pkg...     apt-get install whatever of pkg... is missing
#   build_install              make && make install (as root)
#   cluster_start DIR [conf]   initdb (if needed) and start a cluster in DIR;
#                              extra postgresql.conf lines in "conf".  Exports
#                              PGHOST, PGPORT, PGUSER, PGDATABASE, PGDATA.
#   cluster_stop DIR           stop it (no-op when not running)
#   as_pg CMD...               run CMD as the cluster's OS user
#   private_installation DIR   when PG_CONFIG is the system's installation,
#                              use a copy of it in DIR from now on (a
#                              benchmark's peer extensions go there, never
#                              into /usr)

PG_MAJOR=${PG_MAJOR:-15}
# PG_CONFIG may name another (relocated) installation, for instance a private
# copy a developer builds into while another tree is installed system-wide
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
PG_BIN=$(dirname "$PG_CONFIG")
PG_OS_USER=${PG_OS_USER:-postgres}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

ensure_packages()
{
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "== installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

build_install()
{
	echo "== building and installing pg_notifier"
	make -C "$REPO_ROOT" -s PG_CONFIG="$PG_CONFIG" >/dev/null
	make -C "$REPO_ROOT" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}

as_pg()
{
	runuser -u "$PG_OS_USER" -- "$@"
}

free_port()
{
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# PostgreSQL finds its files relative to its binaries: a copy of bin, lib,
# share and the server headers under another prefix is an installation of
# its own (PGXS builds against it, CREATE EXTENSION reads its share dir).
# A relocated PG_CONFIG (not under /usr) is used as it is.
private_installation()
{
	local dir=$1 tree
	case $PG_CONFIG in /usr/*) ;; *) return 0 ;; esac
	for tree in "$(cd "$PG_BIN/.." && pwd)" "$("$PG_CONFIG" --sharedir)" \
		"$(dirname "$("$PG_CONFIG" --includedir-server)")"; do
		mkdir -p "$dir$(dirname "$tree")"
		cp -a "$tree" "$dir$tree"
	done
	export PG_CONFIG=$dir$PG_CONFIG
	PG_BIN=$(dirname "$PG_CONFIG")
}

cluster_start()
{
	local dir=$1 conf=${2:-}
	mkdir -p "$dir"
	chown "$PG_OS_USER" "$dir"
	chmod 700 "$dir"
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		as_pg "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
			{ cat "$dir/initdb.log"; return 1; }
	fi
	cluster_stop "$dir"
	local port
	port=$(free_port)
	cat >"$dir/data/postgresql.auto.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_notifier'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 50
max_prepared_transactions = 4
log_min_messages = warning
$conf
CONF
	chown "$PG_OS_USER" "$dir/data/postgresql.auto.conf"
	# A worker in database postgres only: the regression suite's database
	# has none, so that its outbox and deliveries stay as the tests leave
	# them (the default, '*', is tested on clusters of their own).  In
	# postgresql.conf, where ALTER SYSTEM RESET falls back to it.
	grep -q "^pg_notifier.databases" "$dir/data/postgresql.conf" ||
		echo "pg_notifier.databases = 'postgres'" >>"$dir/data/postgresql.conf"
	as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
		{ tail -n 30 "$dir/server.log"; return 1; }
	export PGHOST=$dir PGPORT=$port PGUSER=postgres PGDATABASE=postgres PGDATA=$dir/data
}

cluster_stop()
{
	local dir=$1
	[ -f "$dir/data/postmaster.pid" ] || return 0
	as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}
