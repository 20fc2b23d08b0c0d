#!/usr/bin/env bash
# Private nullmailer for greyharness: Debian's nullmailer 2.2 extracted into a
# private folder (it conflicts with Postfix as a package, so it is never
# installed) and run on loopback in the foreground as a relay under test.
#
#   nullmailer.sh install   download + extract nullmailer when missing; socat (idempotent)
#   nullmailer.sh setup     install, then write the config and an EMPTY queue
#   nullmailer.sh start     socat listener (one nullmailer-smtpd per connection) + exec nullmailer-send
#   nullmailer.sh ready     exit 0 when the listener answers 220
#   nullmailer.sh flush     write to the trigger FIFO: nullmailer-send runs the queue now
#   nullmailer.sh queue     a tar stream of the queue folder (queue_format nullmailer)
#   nullmailer.sh teardown  remove the work dir (the extracted nullmailer stays cached)
#
# A private instance: NULLMAILER_TEST_PREFIX=P makes every nullmailer program
# use P/conf, P/queue/{queue,tmp,failed,trigger}, P/bin, P/sbin and
# P/protocols instead of /etc/nullmailer, /var/spool/nullmailer and so on. The
# setuid programs ignore it, so the cache keeps copies without the setuid bit.
# nullmailer has no SMTP listener: nullmailer-smtpd speaks SMTP on stdin and
# stdout (inetd style) and hands each message to nullmailer-queue, so `start`
# runs socat on 127.0.0.1:SUBMIT_PORT, one nullmailer-smtpd per connection,
# beside nullmailer-send (the queue runner), both in the harness's process
# group.
#
# Timers: after a run that left messages in the queue nullmailer-send waits
# pausetime seconds, doubling up to maxpause (both PAUSE, 2s here: a retry
# every 2s); every new message (the trigger FIFO) starts a run at once, which
# retries every queued message too. queuelifetime QUEUE_LIFETIME (120s): a
# message older than that which fails again is moved to failed/ with a
# bounce. 120s, not less: a run is serial (one nullmailer-smtp process and
# connection per message), and with 500 messages queued the first attempt of
# the last one came 70s after its submission on this machine; at 45s those
# messages were given up at their first (greylisted) attempt.
#
# Environment:
#   GREYHARNESS_WORK   work dir (default /tmp/greyharness-nullmailer)
#   GREYHARNESS_CACHE  where nullmailer is extracted (default /tmp/greyharness-nullmailer-root)
#   SUBMIT_PORT        listener on 127.0.0.1 (default 2595)
#   NEXT_HOP_PORT      everything is relayed to 127.0.0.1:PORT (default 2596)
#   PAUSE              pausetime = maxpause in seconds (default 2)
#   QUEUE_LIFETIME     queuelifetime in seconds (default 120)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

relay_env nullmailer 2595 2596
PAUSE=${PAUSE:-2}
QUEUE_LIFETIME=${QUEUE_LIFETIME:-120}
P=$WORK/p
LAYOUT=$ROOT/layout
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export NULLMAILER_TEST_PREFIX=$P

install_nullmailer() {
	command -v socat >/dev/null || apt_install socat
	if [ ! -x "$LAYOUT/sbin/nullmailer-send" ] || [ ! -x "$LAYOUT/protocols/smtp" ]; then
		echo "nullmailer.sh: extracting nullmailer from Debian's package into $ROOT" >&2
		deb_extract "$ROOT/pkg" nullmailer
		[ -x "$ROOT/pkg/usr/sbin/nullmailer-send" ] || die "no nullmailer-send after extraction"
		# the layout NULLMAILER_TEST_PREFIX expects; install -m 755 drops
		# the setuid bit of nullmailer-queue and mailq
		rm -rf "$LAYOUT"
		mkdir -p "$LAYOUT/bin" "$LAYOUT/sbin" "$LAYOUT/protocols"
		local f
		for f in "$ROOT"/pkg/usr/bin/nullmailer-* "$ROOT"/pkg/usr/bin/mailq; do install -m 755 "$f" "$LAYOUT/bin/"; done
		for f in "$ROOT"/pkg/usr/sbin/*; do install -m 755 "$f" "$LAYOUT/sbin/"; install -m 755 "$f" "$LAYOUT/bin/"; done
		for f in "$ROOT"/pkg/usr/lib/nullmailer/*; do install -m 755 "$f" "$LAYOUT/protocols/"; done
	fi
	local missing
	missing=$(missing_libs "$LAYOUT"/sbin/* "$LAYOUT"/protocols/smtp)
	if [ -n "$missing" ]; then
		echo "nullmailer.sh: missing libraries: $missing" >&2
		apt_install libgnutls30 libstdc++6 libgcc-s1
		missing=$(missing_libs "$LAYOUT"/sbin/* "$LAYOUT"/protocols/smtp)
		[ -z "$missing" ] || die "nullmailer needs libraries that are not installed: $missing"
	fi
}

setup() {
	install_nullmailer
	remove_work
	mkdir -p "$P/conf" "$P/queue/queue" "$P/queue/tmp" "$P/queue/failed"
	mkfifo "$P/queue/trigger"
	ln -s "$LAYOUT/bin" "$P/bin"
	ln -s "$LAYOUT/sbin" "$P/sbin"
	ln -s "$LAYOUT/protocols" "$P/protocols"
	echo relay.greyharness.test >"$P/mailname"
	echo relay.greyharness.test >"$P/conf/me"
	echo relay.greyharness.test >"$P/conf/defaulthost"
	echo greyharness.test >"$P/conf/defaultdomain"
	echo "127.0.0.1 smtp --port=${NEXT_HOP_PORT}" >"$P/conf/remotes"
	echo "$PAUSE" >"$P/conf/pausetime"
	echo "$PAUSE" >"$P/conf/maxpause"
	echo "$QUEUE_LIFETIME" >"$P/conf/queuelifetime"
	echo "nullmailer.sh: instance ready in $WORK (listener 127.0.0.1:${SUBMIT_PORT}, next hop 127.0.0.1:${NEXT_HOP_PORT})" >&2
}

cmd=${1:-}
case "$cmd" in
install) install_nullmailer ;;
setup) setup ;;
start)
	need_setup "$P/conf/remotes"
	# The listener and the queue runner share the harness's process group:
	# its SIGTERM stops both. socat's own children (one nullmailer-smtpd
	# per connection) inherit the prefix from this environment.
	socat -lf "$WORK/socat.log" "TCP-LISTEN:${SUBMIT_PORT},bind=127.0.0.1,reuseaddr,fork" "EXEC:$P/bin/nullmailer-smtpd" &
	cd "$P/queue"
	exec "$P/sbin/nullmailer-send"
	;;
ready) smtp_ready 2>/dev/null ;;
flush)
	# nullmailer-send holds the FIFO open for reading; a write wakes it
	timeout 5 sh -c 'printf 1 >"$1"' sh "$P/queue/trigger"
	;;
queue)
	# queue/ only: failed/ holds messages nullmailer gave up on (bounced).
	# A file that leaves while tar reads the folder (delivered, or moved to
	# failed/) is not an error.
	cd "$P/queue"
	tar_found queue -maxdepth 1 -type f -printf '%p\0'
	;;
teardown) remove_work ;;
*) die "usage: nullmailer.sh install|setup|start|ready|flush|queue|teardown" ;;
esac
