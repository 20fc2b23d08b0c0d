#!/usr/bin/env bash
# Private OpenSMTPD for greyharness: Debian's opensmtpd extracted into a
# private folder (it conflicts with Postfix as a package, so it is never
# installed) and run on loopback as a relay under test. Its spool
# (/var/spool/smtpd), control socket (/run/smtpd.sock) and chroot
# (/var/lib/opensmtpd/empty) are compiled in, so every command that touches
# the instance runs in a private mount namespace (unshare -m) where WORK's
# folders are bind-mounted over those paths.
#
#   opensmtpd.sh install   download + extract OpenSMTPD when missing; create its users (idempotent)
#   opensmtpd.sh setup     install, then write smtpd.conf and an EMPTY spool
#   opensmtpd.sh start     smtpd -d (foreground) in the private namespace, its log through the retry forcer
#   opensmtpd.sh ready     exit 0 when the daemon's port answers 220
#   opensmtpd.sh flush     smtpctl schedule all (every envelope now)
#   opensmtpd.sh queue     smtpctl show queue (in a session of its own: see below)
#   opensmtpd.sh teardown  remove the work dir (the extracted OpenSMTPD stays cached)
#
# Retries. OpenSMTPD's backoff is compiled in: the n-th retry is due at
# creation + 400s * n^2 (first retry 400s after arrival, measured). No
# smtpd.conf option shortens it; only `smtpctl schedule` forces an attempt.
# So `start` runs a forcer beside smtpd: it reads smtpd's log and schedules
# each envelope RETRY_AFTER seconds after smtpd logged it deferred (the whole
# queue at once when more than FORCE_BULK are due together). The retry
# timing the harness judges is therefore this forcer's (a fixed RETRY_AFTER
# backoff), not OpenSMTPD's own; what is
# OpenSMTPD's own: after a connection error it disables the route for 15s
# ("route ... disabled"), and no forced schedule overrides that.
#
# Environment:
#   GREYHARNESS_WORK   work dir (default /tmp/greyharness-opensmtpd)
#   GREYHARNESS_CACHE  where OpenSMTPD is extracted (default /tmp/greyharness-opensmtpd-root)
#   SUBMIT_PORT        listener on 127.0.0.1 (default 2545)
#   NEXT_HOP_PORT      everything is relayed to 127.0.0.1:PORT (default 2546)
#   RETRY_AFTER        force a retry this many seconds after an envelope went pending (default 2; 0 = no forcer)
#   FORCE_POLL         how often the forcer looks for due envelopes, in seconds (default 0.5)
#   FORCE_BULK         more due envelopes than this at once: one `smtpctl schedule all` (default 8)
#
# Run as root (CI: sudo): smtpd starts as root and drops to opensmtpd/opensmtpq.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SELF=$HERE/$(basename "$0")
WORK=${GREYHARNESS_WORK:-/tmp/greyharness-opensmtpd}
ROOT=${GREYHARNESS_CACHE:-/tmp/greyharness-opensmtpd-root}
SUBMIT_PORT=${SUBMIT_PORT:-2545}
NEXT_HOP_PORT=${NEXT_HOP_PORT:-2546}
RETRY_AFTER=${RETRY_AFTER:-2}
FORCE_POLL=${FORCE_POLL:-0.5}
FORCE_BULK=${FORCE_BULK:-8}
POLL_MS=$(awk -v s="$FORCE_POLL" 'BEGIN { printf "%d", s * 1000 }')
SMTPD=$ROOT/usr/sbin/smtpd
SMTPCTL=$ROOT/usr/sbin/smtpctl
CONF=$WORK/smtpd.conf
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export GREYHARNESS_WORK=$WORK GREYHARNESS_CACHE=$ROOT

die() { echo "opensmtpd.sh: $*" >&2; exit 1; }

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else die "need root for: $*"; fi
}

apt_install() {
	if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
		as_root apt-get update
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
	fi
}

sys_user() { # name: a system user with its own group, no home, no shell
	getent group "$1" >/dev/null || as_root groupadd --system "$1"
	getent passwd "$1" >/dev/null ||
		as_root useradd --system --gid "$1" --no-create-home --home-dir /var/lib/opensmtpd/empty --shell /usr/sbin/nologin "$1"
}

install_opensmtpd() {
	sys_user opensmtpd
	sys_user opensmtpq
	command -v unshare >/dev/null || die "unshare (util-linux) is missing"
	if [ -x "$SMTPD" ] && [ -x "$SMTPCTL" ] && { "$SMTPD" -h 2>&1 || true; } | grep -q "version: OpenSMTPD"; then
		smtpctl_mode
		return 0
	fi
	echo "opensmtpd.sh: extracting OpenSMTPD from Debian's package into $ROOT" >&2
	local dl
	dl=$(mktemp -d)
	chmod 755 "$dl"
	if ! (cd "$dl" && apt-get download opensmtpd); then
		as_root apt-get update
		(cd "$dl" && apt-get download opensmtpd)
	fi
	mkdir -p "$ROOT"
	for deb in "$dl"/*.deb; do dpkg -x "$deb" "$ROOT"; done
	rm -rf "$dl"
	[ -x "$SMTPD" ] || die "no $SMTPD after extraction"
	# Shared libraries (libevent, libdb, ...) a minimal system may lack.
	local missing
	missing=$(ldd "$SMTPD" "$SMTPCTL" | awk '/not found/{print $1}' | sort -u)
	if [ -n "$missing" ]; then
		echo "opensmtpd.sh: missing libraries: $missing" >&2
		# the package's library Depends (Debian 12)
		apt_install libc6 libcrypt1 libdb5.3 libevent-2.1-7 libpam0g libssl3 zlib1g
		missing=$(ldd "$SMTPD" "$SMTPCTL" | awk '/not found/{print $1}')
		[ -z "$missing" ] || die "OpenSMTPD needs libraries that are not installed: $missing"
	fi
	smtpctl_mode
}

# smtpctl refuses to run unless setgid opensmtpq (as Debian installs it);
# dpkg -x does not keep that.
smtpctl_mode() {
	if [ "$(stat -c %G:%a "$SMTPCTL")" != opensmtpq:2555 ]; then
		as_root chgrp opensmtpq "$SMTPCTL"
		as_root chmod 2555 "$SMTPCTL"
	fi
}

# in_ns CMD...: run CMD in a private mount + UTS namespace where WORK's
# folders replace OpenSMTPD's compiled-in paths. The control socket is a file
# in WORK/run, so every such namespace reaches the same daemon.
in_ns() {
	exec unshare -m -u "$SELF" __ns "$@"
}

ns_inner() {
	hostname relay.greyharness.test
	mount --make-rprivate /
	mount --bind "$WORK/spool" /var/spool
	mount --bind "$WORK/run" /run
	mount --bind "$WORK/lib" /var/lib
	exec "$@"
}

setup() {
	install_opensmtpd
	case "$WORK" in /|/tmp|/tmp/|"") die "refusing work dir '$WORK'" ;; esac
	rm -rf "$WORK/spool" "$WORK/run" "$WORK/lib"
	mkdir -p "$WORK/spool/smtpd" "$WORK/run" "$WORK/lib/opensmtpd/empty"
	chmod 711 "$WORK/spool/smtpd"
	chmod 755 "$WORK" "$WORK/run" "$WORK/lib" "$WORK/lib/opensmtpd" "$WORK/lib/opensmtpd/empty"
	: >"$WORK/smtpd.log"
	: >"$WORK/forcer.log"
	cat >"$CONF" <<EOF
# greyharness private OpenSMTPD: relay on 127.0.0.1:${SUBMIT_PORT} -> 127.0.0.1:${NEXT_HOP_PORT}
queue ttl 60s
bounce warn-interval 15s
# Connection pacing (limits.c defaults; undocumented in smtpd.conf(5) 6.8,
# "mta limit KEY N" in parse.y): a new connection on a route waits 5s after
# the last one (reconn-delay-route); lifted here. Not liftable: a session
# quits after 10 messages that all failed ("mta host-rejects-all-mails",
# MAX_TRYBEFOREDISABLE 10 in mta_session.c; `mta limit
# max-failures-per-session` is accepted but changed nothing: 22 such quits in
# one load-500 run), so a greylisting next hop gets 10 messages per session.
mta limit reconn-delay-route 0
mta limit conn-delay-relay 0
listen on 127.0.0.1 port ${SUBMIT_PORT} hostname relay.greyharness.test
action "relay" relay host smtp://127.0.0.1:${NEXT_HOP_PORT}
match from any for any action "relay"
match from local for any action "relay"
EOF
	chmod 644 "$CONF"
	"$SMTPD" -n -f "$CONF" >/dev/null || die "config check failed: $SMTPD -n -f $CONF"
	echo "opensmtpd.sh: instance ready in $WORK (listener 127.0.0.1:${SUBMIT_PORT}, next hop 127.0.0.1:${NEXT_HOP_PORT})" >&2
}

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

# forcer: reads smtpd's log on stdin, passes every line on (to the harness),
# and forces the retries OpenSMTPD would schedule 400s x n^2 later: each
# envelope smtpd logs as deferred (`mta delivery evpid=... result="TempFail"`)
# is scheduled (`smtpctl schedule EVPID`) RETRY_AFTER seconds after that line;
# when more than FORCE_BULK are due in one pass (a load scenario), one
# `smtpctl schedule all` forces the whole queue. Envelopes a restarted smtpd
# loads from its spool get one `schedule all` RETRY_AFTER seconds after start.
# It follows the log, not `smtpctl show queue`: listing every poll (with one
# smtpctl per envelope: retry gaps up to 99s in load-500; with one `schedule
# all` when many were due: 403 of 500 still undelivered) did not keep up.
forcer() {
	local line evp now next=0 code
	local -A due=()
	local sweep=$(($(now_ms) + RETRY_AFTER * 1000))
	while :; do
		if IFS= read -r -t "$FORCE_POLL" line; then
			printf '%s\n' "$line"
			case $line in
			*" mta delivery evpid="*'result="TempFail"'*)
				evp=${line#* evpid=}
				due[${evp%% *}]=$(($(now_ms) + RETRY_AFTER * 1000))
				;;
			esac
		else
			code=$?
			((code > 128)) || break # end of the log: smtpd is gone
		fi
		now=$(now_ms)
		((now >= next)) || continue
		next=$((now + POLL_MS))
		if ((sweep > 0 && now >= sweep)) && "$SMTPCTL" schedule all >/dev/null 2>&1; then
			sweep=0
			echo "$(date -u +%FT%T.%3NZ) forced all (start)" >>"$WORK/forcer.log"
		fi
		local ready=()
		for evp in "${!due[@]}"; do
			if ((now >= due[$evp])); then ready+=("$evp"); fi
		done
		((${#ready[@]} > 0)) || continue
		for evp in "${ready[@]}"; do unset "due[$evp]"; done
		if ((${#ready[@]} > FORCE_BULK)); then
			if "$SMTPCTL" schedule all >/dev/null 2>&1; then
				echo "$(date -u +%FT%T.%3NZ) forced all (${#ready[@]} due)" >>"$WORK/forcer.log"
			fi
		else
			for evp in "${ready[@]}"; do
				if "$SMTPCTL" schedule "$evp" >/dev/null 2>&1; then
					echo "$(date -u +%FT%T.%3NZ) forced $evp" >>"$WORK/forcer.log"
				fi
			done
		fi
	done
}

ns_start() {
	if [ "$RETRY_AFTER" = 0 ]; then
		exec "$SMTPD" -d -f "$CONF"
	fi
	# smtpd's log goes through the forcer on its way to the harness.
	"$SMTPD" -d -f "$CONF" 2>&1 | forcer
}

ready() {
	exec 3<>"/dev/tcp/127.0.0.1/${SUBMIT_PORT}" || return 1
	local line=""
	read -r -t 2 line <&3 || true
	printf 'QUIT\r\n' >&3 || true
	exec 3>&-
	case "$line" in 220*) return 0 ;; *) return 1 ;; esac
}

cmd=${1:-}
case "$cmd" in
install) install_opensmtpd ;;
setup) setup ;;
start)
	[ -f "$CONF" ] || die "no instance in $WORK: run setup first"
	in_ns __start
	;;
ready) ready 2>/dev/null ;;
flush) in_ns "$SMTPCTL" schedule all ;;
queue)
	# `smtpctl show queue` reads every envelope: with hundreds queued on a
	# loaded machine it outlasts the harness's 10s listing timeout, and
	# smtpd's control process dies ("control -> client: imsg_read:
	# Connection reset by peer", "control: exiting": the whole smtpd exits)
	# when smtpctl is killed mid-reply. So smtpctl runs in a session of its
	# own, out of reach of the kill, one listing at a time (flock, waiting
	# at most 60s); a listing whose caller is gone is not started, and one
	# that hangs is ended after 120s.
	mkdir -p "$WORK/listings"
	out=$WORK/listings/$$
	setsid flock -w 60 "$WORK/listings/lock" "$SELF" __queue "$out" $$ </dev/null &
	if wait $!; then cat "$out"; rc=0; else rc=$?; cat "$out" 2>/dev/null || true; fi
	rm -f "$out"
	exit $rc
	;;
__queue) # OUT CALLER: list into OUT unless CALLER has gone
	kill -0 "$3" 2>/dev/null || { rm -f "$2"; exit 0; }
	out=$2
	# a listing that hangs (smtpd gone mid-reply) must not hold the lock forever
	(in_ns timeout 120 "$SMTPCTL" show queue) >"$out.tmp" 2>&1 && mv "$out.tmp" "$out" || { rc=$?; mv "$out.tmp" "$out"; exit $rc; }
	kill -0 "$3" 2>/dev/null || rm -f "$out"
	;;
teardown)
	case "$WORK" in /|/tmp|/tmp/|"") die "refusing work dir '$WORK'" ;; esac
	rm -rf "$WORK"
	;;
__ns)
	shift
	if [ "${1:-}" = __start ]; then ns_inner "$SELF" __start2; else ns_inner "$@"; fi
	;;
__start2) ns_start ;;
*) die "usage: opensmtpd.sh install|setup|start|ready|flush|queue|teardown" ;;
esac
