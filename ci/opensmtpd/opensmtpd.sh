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
#                          (the log lines get their UTC time in front; smtpd -d prints none)
#   opensmtpd.sh ready     exit 0 when the daemon's port answers 220
#   opensmtpd.sh flush     smtpctl schedule all (every envelope now)
#   opensmtpd.sh queue     smtpctl show queue (in a session of its own: see below)
#   opensmtpd.sh teardown  remove the work dir (the extracted OpenSMTPD stays cached)
#
# Retries. OpenSMTPD's backoff is compiled in: the n-th retry is due at
# creation + 400s * n^2 (first retry 400s after arrival, measured). No
# smtpd.conf option shortens it; only `smtpctl schedule` forces an attempt.
# So `start` runs a forcer beside smtpd (log_reader, forcer.pl): each envelope
# smtpd logs as deferred is scheduled RETRY_AFTER seconds later. The retry
# timing the harness judges is therefore this forcer's (a fixed RETRY_AFTER
# backoff), not OpenSMTPD's own; what is OpenSMTPD's own: after a
# connection error it disables the route for 15s ("Disabling route ... for
# 15s"), and no forced schedule overrides that.
#
# Environment:
#   GREYHARNESS_WORK   work dir (default /tmp/greyharness-opensmtpd)
#   GREYHARNESS_CACHE  where OpenSMTPD is extracted (default /tmp/greyharness-opensmtpd-root)
#   SUBMIT_PORT        listener on 127.0.0.1 (default 2545)
#   NEXT_HOP_PORT      everything is relayed to PORT on NEXT_HOP_HOSTS (default 2546)
#   NEXT_HOP_HOSTS     the next hop's addresses (default 127.0.0.1; relay.yaml sets
#                      "127.0.0.2 127.0.0.3": two MX hosts). `relay host` takes one
#                      host, so it names mx.greyharness.test, which the namespace's
#                      /etc/hosts gives these addresses, in order (see setup)
#   RETRY_AFTER        force a retry this many seconds after an envelope went pending (default 2; 0 = no forcer)
#   FORCE_POLL         how often the forcer looks for due envelopes, in seconds (default 0.5)
#   FORCE_GIVEUP       stop retrying a schedule smtpd refused after this many seconds (default 20)
#
# Run as root (CI: sudo): smtpd starts as root and drops to opensmtpd/opensmtpq.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
SELF=$HERE/$(basename "$0")
relay_env opensmtpd 2545 2546
NEXT_HOP_HOSTS=${NEXT_HOP_HOSTS:-127.0.0.1}
NEXT_HOP_NAME=mx.greyharness.test
RETRY_AFTER=${RETRY_AFTER:-2}
FORCE_POLL=${FORCE_POLL:-0.5}
FORCE_GIVEUP=${FORCE_GIVEUP:-20}
SMTPD=$ROOT/usr/sbin/smtpd
SMTPCTL=$ROOT/usr/sbin/smtpctl
CONF=$WORK/smtpd.conf
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export GREYHARNESS_WORK=$WORK GREYHARNESS_CACHE=$ROOT

sys_user() { # name: a system user with its own group, no home, no shell
	getent group "$1" >/dev/null || as_root groupadd --system "$1"
	getent passwd "$1" >/dev/null ||
		as_root useradd --system --gid "$1" --no-create-home --home-dir /var/lib/opensmtpd/empty --shell /usr/sbin/nologin "$1"
}

install_opensmtpd() {
	sys_user opensmtpd
	sys_user opensmtpq
	command -v unshare >/dev/null || die "unshare (util-linux) is missing"
	# the forcer (forcer.pl) needs Time::HiRes: Debian's perl, not perl-base
	perl -MTime::HiRes -e 1 2>/dev/null || apt_install perl
	if [ -x "$SMTPD" ] && [ -x "$SMTPCTL" ] && { "$SMTPD" -h 2>&1 || true; } | grep -q "version: OpenSMTPD"; then
		smtpctl_mode
		return 0
	fi
	echo "opensmtpd.sh: extracting OpenSMTPD from Debian's package into $ROOT" >&2
	deb_extract "$ROOT" opensmtpd
	[ -x "$SMTPD" ] || die "no $SMTPD after extraction"
	# Shared libraries (libevent, libdb, ...) a minimal system may lack.
	local missing
	missing=$(missing_libs "$SMTPD" "$SMTPCTL")
	if [ -n "$missing" ]; then
		echo "opensmtpd.sh: missing libraries: $missing" >&2
		# the package's library Depends (Debian 12)
		apt_install libc6 libcrypt1 libdb5.3 libevent-2.1-7 libpam0g libssl3 zlib1g
		missing=$(missing_libs "$SMTPD" "$SMTPCTL")
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
	# name resolution from WORK/etc only (before /run: a resolv.conf that
	# links into /run is covered either way, and asr then reads no DNS)
	if [ -f "$WORK/etc/hosts" ]; then
		mount --bind "$WORK/etc/hosts" /etc/hosts
		mount --bind "$WORK/etc/resolv.conf" /etc/resolv.conf
	fi
	mount --bind "$WORK/spool" /var/spool
	mount --bind "$WORK/run" /run
	mount --bind "$WORK/lib" /var/lib
	exec "$@"
}

setup() {
	install_opensmtpd
	check_work
	rm -rf "$WORK/spool" "$WORK/run" "$WORK/lib" "$WORK/etc"
	mkdir -p "$WORK/etc"
	# Name resolution inside the namespace: OpenSMTPD's bundled asr reads
	# /etc/resolv.conf ("lookup file": the hosts file only, no DNS server
	# on a loopback-only machine) and /etc/hosts, where the next hop's name
	# has one address per MX host, in order.
	echo "lookup file" >"$WORK/etc/resolv.conf"
	{
		echo "127.0.0.1 localhost relay.greyharness.test"
		for h in $NEXT_HOP_HOSTS; do echo "$h $NEXT_HOP_NAME"; done
	} >"$WORK/etc/hosts"
	chmod 644 "$WORK/etc/resolv.conf" "$WORK/etc/hosts"
	mkdir -p "$WORK/spool/smtpd" "$WORK/run" "$WORK/lib/opensmtpd/empty"
	chmod 711 "$WORK/spool/smtpd"
	chmod 755 "$WORK" "$WORK/run" "$WORK/lib" "$WORK/lib/opensmtpd" "$WORK/lib/opensmtpd/empty"
	: >"$WORK/forcer.log"
	cat >"$CONF" <<EOF
# greyharness private OpenSMTPD: relay on 127.0.0.1:${SUBMIT_PORT} -> ${NEXT_HOP_NAME}:${NEXT_HOP_PORT} (${NEXT_HOP_HOSTS})
# queue ttl: expiry-bounce waits 1.5 x this (OpenSMTPD sends no failure
# DSN, so its wait runs out), and load-500 must deliver within it: measured
# 16-40s from submission to the last delivery (see relay.yaml).
queue ttl 60s
# the delay notice comes at the first temporary failure: the next retry of
# OpenSMTPD's own schedule (400s) is past the interval (scheduler.c)
bounce warn-interval 15s
# Connection pacing: OpenSMTPD's "mta limit KEY N" (parse.y; limits.c has
# the keys and defaults; smtpd.conf(5) of 6.8 does not document them). By
# default a new connection on a route waits 5s after the last connect on it
# (conn-delay-route 5, mta.c mta_find_route) and 3s after the last disconnect
# (reconn-delay-route 3), and one on a relay 2s after the last (conn-delay-relay
# 2): with a greylisting next hop that paces delivery to about 2 messages a
# second (load-500: 40 connections in 4 minutes, 457 of 500 undelivered).
# Lifted here. Not liftable: a session quits after 10 messages in a row that
# all failed ("mta host-rejects-all-mails", MAX_TRYBEFOREDISABLE 10 in
# mta_session.c; max-failures-per-session is another counter), so a
# greylisting next hop gets 10 messages per session.
mta limit conn-delay-route 0
mta limit reconn-delay-route 0
mta limit conn-delay-relay 0
# The forcer and OpenSMTPD's hold queue: with task-hiwat (50) tasks for a
# relay, the mta tells the scheduler to hold further envelopes, and releases
# them to the pending queue at task-lowat (mta.c) "to be rescheduled
# immediately" -- at their own next try (scheduler_ram_release). For an
# envelope the forcer scheduled that is creation + 400s x n^2: it waits there
# for minutes, silently (load-500: 273 envelopes "scheduled", then never
# tried again). Without the forcer a released envelope is already due. So
# the mta keeps every task: the hold queue is never used.
mta limit task-hiwat 100000
listen on 127.0.0.1 port ${SUBMIT_PORT} hostname relay.greyharness.test
action "relay" relay host smtp://${NEXT_HOP_NAME}:${NEXT_HOP_PORT}
match from any for any action "relay"
match from local for any action "relay"
EOF
	chmod 644 "$CONF"
	"$SMTPD" -n -f "$CONF" >/dev/null || die "config check failed: $SMTPD -n -f $CONF"
	echo "opensmtpd.sh: instance ready in $WORK (listener 127.0.0.1:${SUBMIT_PORT}, next hop ${NEXT_HOP_NAME}:${NEXT_HOP_PORT} = ${NEXT_HOP_HOSTS})" >&2
}

# The forcer is two processes, so that forcing never holds up smtpd: smtpd -d
# writes its log to a pipe, and every smtpd process blocks when that pipe is
# full (a forcer that ran smtpctl between reading lines stalled smtpd on a
# loaded machine).
#
# log_reader: smtpd's log on stdin, every line passed on to the harness with
# its UTC time in front (smtpd -d prints none); each `mta delivery evpid=...
# result="R"` also appended to WORK/forcer.events as "R EVPID MS" (a regular
# file: appending never blocks).
log_reader() {
	set +e # never die: smtpd would lose its log pipe
	local line evp res t TZ=UTC
	while IFS= read -r line; do
		t=${EPOCHREALTIME/./}
		printf '%(%T)T.%s %s\n' "${t:0:-6}" "${t: -6:3}" "$line"
		case $line in
		*" mta delivery evpid="*' result="'*)
			evp=${line#* evpid=}
			res=${line#* result=\"}
			printf '%s %s %s\n' "${res%%\"*}" "${evp%% *}" "$((t / 1000))" >>"$WORK/forcer.events"
			;;
		esac
	done
}

# flog MSG: one forcer.log line with its UTC time (no fork)
flog() {
	local TZ=UTC t=${EPOCHREALTIME/./}
	printf '%(%FT%T)T.%sZ %s\n' "${t:0:-6}" "${t: -6:3}" "$1" >>"$WORK/forcer.log"
}

# start_sweep: envelopes a restarted smtpd loads from its spool are due at
# OpenSMTPD's own 400s x n^2; `smtpctl schedule all` forces them. smtpd loads
# its spool in the background after it starts: on a loaded machine a sweep
# 2.5s after "OpenSMTPD starting" scheduled "0 envelope" while a bounce sat
# in the spool, which then expired at `queue ttl` untried. So it sweeps every
# RETRY_AFTER seconds until a sweep schedules something, then once more
# (envelopes loaded late), 15 sweeps at most. TempFails from then on are the
# forcer's.
start_sweep() {
	local out i hit=0
	for ((i = 0; i < 15; i++)); do
		sleep "$RETRY_AFTER"
		out=$("$SMTPCTL" schedule all 2>&1) || continue
		flog "forced all (start): $out"
		if ((hit)); then return 0; fi
		case $out in "0 envelope"*) ;; *) hit=1 ;; esac
	done
}

ns_start() {
	if [ "$RETRY_AFTER" = 0 ]; then
		exec "$SMTPD" -d -f "$CONF"
	fi
	# smtpd's log goes through log_reader on its way to the harness; the
	# forcer follows the events it writes (tail ends with this shell).
	: >"$WORK/forcer.events"
	# A spool with envelopes in it: a restart. (On a first start a sweep
	# would only force a retry of the first deferrals too soon.)
	if [ -n "$(find "$WORK/spool/smtpd/queue" -type f -print -quit 2>/dev/null)" ]; then
		start_sweep &
	fi
	tail -n +1 -F --pid=$$ "$WORK/forcer.events" 2>/dev/null |
		perl "$HERE/forcer.pl" "$WORK/run/smtpd.sock" "$RETRY_AFTER" "$FORCE_POLL" "$FORCE_GIVEUP" "$WORK/forcer.log" &
	"$SMTPD" -d -f "$CONF" 2>&1 | log_reader
}

cmd=${1:-}
case "$cmd" in
install) install_opensmtpd ;;
setup) setup ;;
start)
	need_setup "$CONF"
	in_ns __start
	;;
ready) smtp_ready 2>/dev/null ;;
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
teardown) remove_work ;;
__ns)
	shift
	if [ "${1:-}" = __start ]; then ns_inner "$SELF" __start2; else ns_inner "$@"; fi
	;;
__start2) ns_start ;;
*) die "usage: opensmtpd.sh install|setup|start|ready|flush|queue|teardown" ;;
esac
