# shellcheck shell=bash
# ci/lib.sh: what the relay scripts ci/NAME/NAME.sh share. Not run on its
# own: a script sources it right after `set -euo pipefail`, by its own path
# (the harness runs `./NAME.sh` from the profile's folder, ci/postfix-realtimers
# runs ../postfix/postfix.sh):
#
#   . "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
#
# Sourcing only defines functions and GH_SCRIPT; the functions read the
# script's variables (WORK, SUBMIT_PORT) when they are called.

# GH_SCRIPT: the sourcing script's file name (postfix.sh), the prefix of its messages.
GH_SCRIPT=$(basename "${BASH_SOURCE[1]:-$0}")

# die MSG...: "SCRIPT: MSG" on stderr, then exit 1.
die() {
	echo "$GH_SCRIPT: $*" >&2
	exit 1
}

# relay_env NAME SUBMIT NEXT_HOP: the environment every relay script reads,
# with NAME's defaults (each script's header lists them):
#   WORK           GREYHARNESS_WORK, else /tmp/greyharness-NAME (the instance: config, queue, logs)
#   ROOT           GREYHARNESS_CACHE, else /tmp/greyharness-NAME-root (the installed relay, kept)
#   SUBMIT_PORT    the relay's listener on 127.0.0.1, else SUBMIT
#   NEXT_HOP_PORT  the fake MTA's port the relay delivers to, else NEXT_HOP
relay_env() {
	WORK=${GREYHARNESS_WORK:-/tmp/greyharness-$1}
	ROOT=${GREYHARNESS_CACHE:-/tmp/greyharness-$1-root}
	SUBMIT_PORT=${SUBMIT_PORT:-$2}
	NEXT_HOP_PORT=${NEXT_HOP_PORT:-$3}
}

# next_hops FORMAT SEP: the fake MTA's hosts in the relay's own list syntax:
# each host of NEXT_HOP_HOSTS (default 127.0.0.1; in order: MX 1, MX 2, ...)
# as printf FORMAT HOST NEXT_HOP_PORT, joined by SEP. An empty list is
# 127.0.0.1.
next_hops() {
	local fmt=$1 sep=$2 h list=
	# shellcheck disable=SC2059 # the format is the caller's
	for h in ${NEXT_HOP_HOSTS:-127.0.0.1}; do list="${list:+$list$sep}$(printf "$fmt" "$h" "$NEXT_HOP_PORT")"; done
	# shellcheck disable=SC2059
	[ -n "$list" ] || list=$(printf "$fmt" 127.0.0.1 "$NEXT_HOP_PORT")
	printf '%s\n' "$list"
}

# lanes FORMAT: one line per host of LANE_HOSTS (none when unset; in order:
# lane 1, lane 2, ...) as printf FORMAT N HOST NEXT_HOP_PORT. The harness
# gives the tenants of a scenario holding lane N labels starting "lN-"
# (recipient and sender domains: carol@l2-t7-4a5923.rcpt.test); the relay
# must route those addresses to lane N's HOST:NEXT_HOP_PORT only
# (docs/relays.md, "Lanes"). The relay profile lists the same addresses
# under lanes:.
lanes() {
	local fmt=$1 h n=0
	for h in ${LANE_HOSTS:-}; do
		n=$((n + 1))
		# shellcheck disable=SC2059 # the format is the caller's
		printf "$fmt" "$n" "$h" "$NEXT_HOP_PORT"
	done
}

# need_setup FILE: die unless FILE (the instance's config) exists, as when start
# comes before setup.
need_setup() {
	[ -f "$1" ] || die "no instance in $WORK: run setup first"
}

# as_root CMD...: CMD as root: directly when root, else through sudo -n.
as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else die "need root for: $*"; fi
}

# apt_install PKG...: install Debian packages non-interactively, without
# recommends; when that fails (stale package lists), apt-get update and try
# once more.
apt_install() {
	if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
		as_root apt-get update
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
	fi
}

# deb_extract DEST PKG...: download Debian packages (apt-get download; after
# an apt-get update when that fails) and unpack each into DEST (dpkg -x).
# Nothing is installed: for relays that conflict with Postfix as packages.
deb_extract() {
	local dest=$1 dl deb
	shift
	dl=$(mktemp -d)
	chmod 755 "$dl"
	if ! (cd "$dl" && apt-get download "$@"); then
		as_root apt-get update
		(cd "$dl" && apt-get download "$@")
	fi
	mkdir -p "$dest"
	for deb in "$dl"/*.deb; do dpkg -x "$deb" "$dest"; done
	rm -rf "$dl"
}

# missing_libs FILE...: the shared libraries FILEs need that the loader does
# not find (ldd's "not found"), one a line, sorted, each once.
missing_libs() {
	ldd "$@" | awk '/not found/{print $1}' | sort -u
}

# check_work: die unless WORK is a folder of its own (not /, /tmp or
# empty): setup and teardown remove what is in it.
check_work() {
	case "$WORK" in /|/tmp|/tmp/|"") die "refusing work dir '$WORK'" ;; esac
}

# remove_work: check_work, then remove WORK.
remove_work() {
	check_work
	rm -rf "$WORK"
}

# smtp_ready: status 0 when 127.0.0.1:SUBMIT_PORT accepts a connection and
# greets with 220 within 2s; it then says QUIT and closes. Callers send its
# stderr (bash's "connection refused") to /dev/null.
smtp_ready() {
	exec 3<>"/dev/tcp/127.0.0.1/${SUBMIT_PORT}" || return 1
	local line=""
	read -r -t 2 line <&3 || true
	printf 'QUIT\r\n' >&3 || true
	exec 3>&-
	case "$line" in 220*) return 0 ;; *) return 1 ;; esac
}

# tar_found FIND-ARGS...: a tar stream on stdout of the files
# `find FIND-ARGS...` names, NUL-terminated (-printf '%P\0' or '%p\0'),
# relative to the current folder: the queue listing of a relay that has no
# listing command. A file that leaves while tar reads the folder (delivered,
# renamed, moved) is not an error: tar's status 1 counts as success.
tar_found() {
	find "$@" |
		tar -cf - --null -T - --ignore-failed-read --warning=no-file-removed \
			--warning=no-file-changed --warning=no-failed-read || [ $? = 1 ]
}
