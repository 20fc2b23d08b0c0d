#!/usr/bin/env bash
# Private sendmail for greyharness: Debian's sendmail 8.17 (sendmail-bin,
# sendmail-cf, sendmail-base) extracted into a private folder (it conflicts
# with Postfix as a package, so it is never installed) and run on loopback
# in the foreground as a relay under test.
#
#   sendmail.sh install   download + extract sendmail when missing; m4 and libraries (idempotent)
#   sendmail.sh setup     install, then build sendmail.cf (m4) and an EMPTY queue
#   sendmail.sh start     exec sendmail -bD -q1s (foreground daemon, a queue run every second)
#   sendmail.sh ready     exit 0 when the daemon's port answers 220
#   sendmail.sh flush     sendmail -q (one queue run now)
#   sendmail.sh queue     sendmail -bp -v (queue_format sendmail)
#   sendmail.sh teardown  remove the work dir (the extracted sendmail stays cached)
#
# Host name: sendmail wants a dotted host name; without one every start and
# every -bp sleeps 60s ("unable to qualify my own domain name ... sleeping for
# retry"). Each command therefore runs in its own UTS namespace (unshare -u)
# named relay.greyharness.test. Name lookups: a private service switch with
# `hosts files` (DNS lookups of the loopback next hop stalled 5s each).
#
# Loopback only: FEATURE(no_default_msa), else sendmail also listens on
# 0.0.0.0:587 (the default MSA daemon of the m4 config). Load: sendmail
# queues instead of delivering above QueueLA and refuses connections above
# RefuseLA ("rejecting connections on daemon MSA: load average: 24", seen on
# this loaded 2-core machine); both are set out of reach (1000), since what
# is judged is the retry logic, not the load guard.
#
# Timers (the fastest sendmail truly allows): a queue run every second
# (-q1s) with MinQueueAge MIN_QUEUE_AGE (2s: a message is not retried until
# 2s after its last attempt, so never inside a 1s greylist delay; sendmail
# keeps that time in whole seconds), Timeout.queuewarn 15s,
# Timeout.queuereturn 45s. A queue run is serial: with hundreds of deferred
# messages one run takes seconds, and that is the real retry gap.
#
# Environment:
#   GREYHARNESS_WORK   work dir (default /tmp/greyharness-sendmail)
#   GREYHARNESS_CACHE  where sendmail is extracted (default /tmp/greyharness-sendmail-root)
#   SUBMIT_PORT        listener on 127.0.0.1 (default 2575)
#   NEXT_HOP_PORT      everything is relayed to 127.0.0.1:PORT (default 2576)
#   MIN_QUEUE_AGE      MinQueueAge (default 2s)
#
# Run as root (CI: sudo): the daemon binds its port and runs the queue as root.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

relay_env sendmail 2575 2576
MIN_QUEUE_AGE=${MIN_QUEUE_AGE:-2s}
HOST=relay.greyharness.test
# a copy of the binary without its setgid bit: the dynamic loader ignores
# LD_LIBRARY_PATH for setgid programs
SENDMAIL=$ROOT/bin/sendmail
CONF=$WORK/sendmail.cf
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

install_sendmail() {
	command -v unshare >/dev/null || die "unshare (util-linux) is missing"
	command -v m4 >/dev/null || apt_install m4
	if [ ! -x "$ROOT/usr/libexec/sendmail/sendmail" ] || [ ! -f "$ROOT/usr/share/sendmail/cf/m4/cf.m4" ]; then
		echo "sendmail.sh: extracting sendmail from Debian's packages into $ROOT" >&2
		deb_extract "$ROOT" sendmail-bin sendmail-cf sendmail-base
		[ -x "$ROOT/usr/libexec/sendmail/sendmail" ] || die "no sendmail after extraction"
	fi
	mkdir -p "$ROOT/bin"
	if [ ! -x "$SENDMAIL" ]; then
		install -m 755 "$ROOT/usr/libexec/sendmail/sendmail" "$SENDMAIL"
	fi
	if [ -n "$(missing_libs "$SENDMAIL")" ]; then
		echo "sendmail.sh: missing libraries: $(missing_libs "$SENDMAIL" | tr '\n' ' ')" >&2
		# the package's library Depends (Debian 12 sendmail-bin)
		apt_install libdb5.3 libldap-2.5-0 liblockfile1 libnsl2 libsasl2-2 libssl3 libwrap0
		[ -z "$(missing_libs "$SENDMAIL")" ] || die "sendmail needs libraries that are not installed: $(missing_libs "$SENDMAIL" | tr '\n' ' ')"
	fi
	local v
	v=$("$SENDMAIL" -d0.1 -bt </dev/null 2>/dev/null | head -1) || true
	case "$v" in "Version 8."*) ;; *) die "$SENDMAIL does not run" ;; esac
}

# in_uts CMD...: CMD in a private UTS namespace with a dotted host name.
in_uts() {
	exec unshare -u sh -c 'hostname "$0" && exec "$@"' "$HOST" "$@"
}

setup() {
	install_sendmail
	remove_work
	mkdir -p "$WORK/mqueue"
	chmod 700 "$WORK/mqueue"
	printf 'hosts\tfiles\naliases\tfiles\n' >"$WORK/service.switch"
	: >"$WORK/aliases"
	: >"$WORK/statistics"
	cat >"$WORK/sendmail.mc" <<EOF
divert(-1)
# greyharness private sendmail: relay on 127.0.0.1:${SUBMIT_PORT} -> 127.0.0.1:${NEXT_HOP_PORT}
divert(0)dnl
OSTYPE(\`linux')dnl
define(\`confDOMAIN_NAME', \`$HOST')dnl
define(\`SMART_HOST', \`[127.0.0.1]')dnl
define(\`RELAY_MAILER_ARGS', \`TCP \$h ${NEXT_HOP_PORT}')dnl
define(\`ESMTP_MAILER_ARGS', \`TCP \$h ${NEXT_HOP_PORT}')dnl
define(\`SMTP_MAILER_ARGS', \`TCP \$h ${NEXT_HOP_PORT}')dnl
define(\`confSERVICE_SWITCH_FILE', \`$WORK/service.switch')dnl
define(\`ALIAS_FILE', \`$WORK/aliases')dnl
define(\`QUEUE_DIR', \`$WORK/mqueue')dnl
define(\`STATUS_FILE', \`$WORK/statistics')dnl
define(\`confPID_FILE', \`$WORK/sendmail.pid')dnl
define(\`confHOST_STATUS_DIRECTORY', \`')dnl
define(\`confTO_QUEUEWARN', \`15s')dnl
define(\`confTO_QUEUERETURN', \`45s')dnl
define(\`confMIN_QUEUE_AGE', \`${MIN_QUEUE_AGE}')dnl
define(\`confDONT_PROBE_INTERFACES', \`True')dnl
define(\`confBIND_OPTS', \`-DNSRCH -DEFNAMES')dnl
define(\`confLOG_LEVEL', \`14')dnl
define(\`confDELIVERY_MODE', \`background')dnl
define(\`confQUEUE_LA', \`1000')dnl
define(\`confREFUSE_LA', \`1000')dnl
define(\`confDELAY_LA', \`0')dnl
FEATURE(\`no_default_msa')dnl
FEATURE(\`nocanonify')dnl
FEATURE(\`promiscuous_relay')dnl
FEATURE(\`accept_unresolvable_domains')dnl
DAEMON_OPTIONS(\`Port=${SUBMIT_PORT}, Addr=127.0.0.1, Name=MTA')dnl
MAILER(\`local')dnl
MAILER(\`smtp')dnl
EOF
	m4 -D_CF_DIR_="$ROOT/usr/share/sendmail/cf/" "$ROOT/usr/share/sendmail/cf/m4/cf.m4" "$WORK/sendmail.mc" >"$CONF" 2>"$WORK/m4.err" ||
		die "m4 failed: $(cat "$WORK/m4.err")"
	echo "sendmail.sh: instance ready in $WORK (listener 127.0.0.1:${SUBMIT_PORT}, next hop 127.0.0.1:${NEXT_HOP_PORT})" >&2
}

cmd=${1:-}
case "$cmd" in
install) install_sendmail ;;
setup) setup ;;
start)
	need_setup "$CONF"
	# -bD: daemon in the foreground; -q1s: a queue run every second.
	in_uts "$SENDMAIL" -C "$CONF" -bD -q1s
	;;
ready) smtp_ready 2>/dev/null ;;
flush) in_uts "$SENDMAIL" -C "$CONF" -q ;;
queue) in_uts "$SENDMAIL" -C "$CONF" -bp -v ;;
teardown) remove_work ;;
*) die "usage: sendmail.sh install|setup|start|ready|flush|queue|teardown" ;;
esac
