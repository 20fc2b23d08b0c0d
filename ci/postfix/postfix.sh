#!/usr/bin/env bash
# Private Postfix instance for greyharness: a relay under test on loopback.
#
#   postfix.sh install   install Debian's postfix when missing (idempotent, non-interactive)
#   postfix.sh setup     install, then build the private instance with an EMPTY queue
#   postfix.sh start     run the instance in the foreground (exec postfix start-fg)
#   postfix.sh ready     exit 0 when the smtpd port accepts and `postfix status` is ok
#   postfix.sh stop      stop the instance (postfix stop; harmless when not running)
#   postfix.sh flush     postqueue -f
#   postfix.sh queue     postqueue -j (one JSON object per line)
#   postfix.sh teardown  stop, then remove the work dir
#
# Environment:
#   GREYHARNESS_WORK  work dir (default /tmp/greyharness-postfix)
#   SUBMIT_PORT       smtpd listener on 127.0.0.1 (default 2525)
#   NEXT_HOP_PORT     relayhost [HOST]:PORT, the fake MTA (default 2526)
#   NEXT_HOP_HOSTS    the relayhost's MX hosts, tried in that order on PORT (default 127.0.0.1;
#                     relay.yaml sets "127.0.0.2 127.0.0.3": two MX hosts, Postfix >= 3.5)
#   LANE_HOSTS        the lanes' hosts on PORT, lane 1 first (default none; relay.yaml sets
#                     "127.0.0.11 127.0.0.12 127.0.0.13"): transport_maps = regexp:etc/lanes
#                     sends a recipient whose domain starts "lN-" to lane N (docs/relays.md)
#   POSTFIX_MAIN_CF   optional overlay: a file of main.cf lines (NAME = VALUE;
#                     # comments and blank lines ignored) set with postconf -e
#                     after the CI settings below, so it wins (a relative path
#                     is taken from the current folder: the profile's folder).
#                     ci/postfix-realtimers/main.cf puts Debian's timers back.
#
# Postfix's master runs as root: run this as root (CI: sudo).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

relay_env postfix 2525 2526
# relayhost = [h1]:PORT, [h2]:PORT: Postfix 3.5+ tries a list of next hops in order.
RELAYHOST=$(next_hops '[%s]:%s' ', ')
CONF=$WORK/etc
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

install_postfix() {
	if command -v postfix >/dev/null && command -v postqueue >/dev/null && [ -x /usr/lib/postfix/sbin/master ]; then
		return 0
	fi
	echo "postfix.sh: installing postfix from Debian" >&2
	echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
	apt_install postfix
	command -v postfix >/dev/null || die "postfix still missing after apt-get install"
}

running() { postfix -c "$CONF" status >/dev/null 2>&1; }

stop_instance() {
	[ -f "$CONF/main.cf" ] || return 0
	if running; then
		postfix -c "$CONF" stop >/dev/null 2>&1 || true
		for _ in $(seq 1 100); do running || return 0; sleep 0.1; done
		postfix -c "$CONF" abort >/dev/null 2>&1 || true
	fi
}

setup() {
	install_postfix
	check_work
	stop_instance
	rm -rf "$WORK/spool" "$WORK/data" "$CONF"
	mkdir -p "$CONF" "$WORK/spool" "$WORK/data"
	chown root:root "$WORK/spool"
	chown postfix "$WORK/data"
	local master=/etc/postfix/master.cf
	[ -f "$master" ] || master=/usr/share/postfix/master.cf.dist
	# The smtpd listener moves from "smtp inet" to 127.0.0.1:SUBMIT_PORT.
	sed -E "s/^smtp([[:space:]]+)inet([[:space:]])/127.0.0.1:${SUBMIT_PORT}\\1inet\\2/" "$master" >"$CONF/master.cf"
	grep -q "^127.0.0.1:${SUBMIT_PORT}[[:space:]]" "$CONF/master.cf" || die "could not rewrite the smtp inet line of $master"
	: >"$CONF/main.cf"
	# Timers (see docs/relays.md):
	# - minimal_backoff_time = maximal_backoff_time = 3s. qmgr feeds a deferred
	#   file whose mtime is up to 1s in the future (qmgr_active_feed), in whole
	#   seconds, so a 1s backoff means "retry at the next scan": a retry inside
	#   a 1s greylist delay, and a scan that can reach the file while the smtp
	#   process that deferred it still holds its lock - qmgr then logs
	#   "skipped, still being delivered" and parks the file for 60s. With 3s the
	#   retry is due 1-2s after the deferral and the next scan (queue_run_delay
	#   1s) starts it: retry_max 3s.
	# - smtp_destination_concurrency_limit = 20 (Postfix's default): every TLS
	#   session to the fake MTA is a fresh connection (~50ms of handshake), so
	#   with 4 agents 500 greylisted messages took ~7s per queue pass.
	postconf -c "$CONF" -e \
		"compatibility_level = 3.6" \
		"queue_directory = $WORK/spool" \
		"data_directory = $WORK/data" \
		"maillog_file_prefixes = $WORK" \
		"maillog_file = $WORK/maillog" \
		"meta_directory = /etc/postfix" \
		"myhostname = relay.greyharness.test" \
		"mydomain = greyharness.test" \
		"myorigin = \$myhostname" \
		"mydestination =" \
		"relay_domains =" \
		"local_recipient_maps =" \
		"alias_maps =" \
		"alias_database =" \
		"inet_interfaces = 127.0.0.1" \
		"inet_protocols = ipv4" \
		"smtp_bind_address = 127.0.0.1" \
		"mynetworks = 127.0.0.0/8" \
		"smtpd_relay_restrictions = permit_mynetworks, reject" \
		"smtpd_peername_lookup = no" \
		"relayhost = ${RELAYHOST}" \
		"smtp_dns_support_level = disabled" \
		"smtp_tls_security_level = may" \
		"queue_run_delay = 1s" \
		"minimal_backoff_time = 3s" \
		"maximal_backoff_time = 3s" \
		"bounce_queue_lifetime = 45s" \
		"maximal_queue_lifetime = 45s" \
		"delay_warning_time = 15s" \
		"smtp_destination_concurrency_limit = 20" \
		"default_process_limit = 20" \
		"smtp_connect_timeout = 5s" \
		"biff = no"
	# Lanes: a regexp table is matched against the whole recipient address
	# (transport(5)), DSNs' recipients (the tagged senders) included.
	lanes '/@l%s-[^@]*$/ smtp:[%s]:%s\n' >"$CONF/lanes"
	if [ -s "$CONF/lanes" ]; then
		postconf -c "$CONF" -e "transport_maps = regexp:$CONF/lanes"
	fi
	if [ -n "${POSTFIX_MAIN_CF:-}" ]; then
		apply_overlay "$POSTFIX_MAIN_CF"
	fi
	# Debian's master.cf chroots most services: the private instance has no chroot.
	postconf -c "$CONF" -F '*/*/chroot = n'
	postfix -c "$CONF" check >/dev/null 2>&1 || postfix -c "$CONF" check
	echo "postfix.sh: instance ready in $WORK (smtpd 127.0.0.1:${SUBMIT_PORT}, relayhost ${RELAYHOST}${LANE_HOSTS:+, lanes ${LANE_HOSTS}})" >&2
}

# apply_overlay FILE: set every NAME = VALUE line of FILE in the instance's
# main.cf. A line that is not NAME = VALUE is an error, never skipped.
apply_overlay() {
	local file=$1 line n=0 name
	local -a settings=()
	[ -f "$file" ] || die "POSTFIX_MAIN_CF: no such file: $file"
	while IFS= read -r line || [ -n "$line" ]; do
		n=$((n + 1))
		line=${line%%#*}
		line=$(printf '%s' "$line" | sed -E 's/^[[:space:]]+//; s/[[:space:]]+$//')
		[ -z "$line" ] && continue
		name=${line%%=*}
		[[ "$line" == *=* && "$name" =~ ^[a-z0-9_]+[[:space:]]*$ ]] || die "$file:$n: want NAME = VALUE, got: $line"
		settings+=("$line")
	done <"$file"
	[ ${#settings[@]} -gt 0 ] || die "$file: no NAME = VALUE line"
	postconf -c "$CONF" -e "${settings[@]}"
	echo "postfix.sh: main.cf overlay $file: ${settings[*]}" >&2
}

ready() {
	(exec 3<>"/dev/tcp/127.0.0.1/${SUBMIT_PORT}") 2>/dev/null || return 1
	running
}

cmd=${1:-}
case "$cmd" in
install) install_postfix ;;
setup) setup ;;
start)
	need_setup "$CONF/main.cf"
	# setup ran `postfix check` (the queue directories made, permissions
	# checked): a start skips repeating it, as Postfix's own quick-stop and
	# start do (postfix-script: the quick-start file). Those checks took 4-8 s
	# of every start and restart on a loaded 2-core machine, 1-2 s without.
	touch "$WORK/spool/quick-start"
	exec postfix -c "$CONF" start-fg
	;;
ready) ready ;;
stop) stop_instance ;;
flush) exec postqueue -c "$CONF" -f ;;
queue) exec postqueue -c "$CONF" -j ;;
teardown)
	stop_instance
	remove_work
	;;
*) die "usage: postfix.sh install|setup|start|ready|stop|flush|queue|teardown" ;;
esac
