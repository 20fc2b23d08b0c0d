#!/usr/bin/env bash
# Private Exim 4 for greyharness: Debian's exim4-daemon-light extracted into a
# private folder (it conflicts with Postfix as a package, so it is never
# installed), run on loopback as a relay under test.
#
#   exim.sh install   download + extract Exim when missing (idempotent, non-interactive)
#   exim.sh setup     install, then write the config and an EMPTY spool
#   exim.sh start     exec exim -bdf -q1s (foreground daemon, 1-second queue runs)
#   exim.sh ready     exit 0 when the daemon's port answers 220
#   exim.sh stop      SIGTERM the daemon (harmless when not running)
#   exim.sh flush     exim -qff (deliver everything now, frozen included)
#   exim.sh queue     exim -bp, then each deferral in the messages' own logs
#                     (spool/msglog/ID) as "msglog ID: LINE" (queue format exim)
#   exim.sh teardown  stop, then remove the work dir (the extracted Exim stays cached)
#
# Environment:
#   GREYHARNESS_WORK   work dir (default /tmp/greyharness-exim)
#   GREYHARNESS_CACHE  where Exim is extracted (default /tmp/greyharness-exim-root)
#   SUBMIT_PORT        daemon port on 127.0.0.1 (default 2535)
#   NEXT_HOP_PORT      every non-local domain goes to HOST::PORT (default 2536)
#   NEXT_HOP_HOSTS     the manualroute host list, tried in that order on PORT (default 127.0.0.1;
#                      relay.yaml sets "127.0.0.2 127.0.0.3": two MX hosts)
#   LANE_HOSTS         the lanes' hosts on PORT, lane 1 first (default none; relay.yaml sets
#                      "127.0.0.11 127.0.0.12 127.0.0.13"): route_list sends a domain
#                      starting "lN-" to lane N only (docs/relays.md, "Lanes")
#
# Run as root (CI: sudo): the daemon starts as root and delivers as Debian-exim.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

relay_env exim 2535 2536
# route_list's host list: "h1::PORT : h2::PORT" (a doubled colon is a port
# inside a colon-separated list); manualroute keeps the order (no randomize).
ROUTE_HOSTS=$(next_hops '%s::%s' ' : ')
# Lanes go first in route_list, one item each: "^lN- HOST::PORT ;" (a regex
# domain pattern; no "$" in it, which Exim would expand).
LANE_ROUTES=$(lanes '^l%s- "%s::%s" ; ')
EXIM=$ROOT/usr/sbin/exim4
CONF=$WORK/exim.conf
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

install_exim() {
	if ! getent group Debian-exim >/dev/null; then as_root groupadd --system Debian-exim; fi
	if ! getent passwd Debian-exim >/dev/null; then
		as_root useradd --system --gid Debian-exim --no-create-home --home-dir /var/spool/exim4 \
			--shell /usr/sbin/nologin Debian-exim
	fi
	if [ -x "$EXIM" ] && "$EXIM" -C /dev/null -bV >/dev/null 2>&1; then
		return 0
	fi
	echo "exim.sh: extracting Exim from Debian packages into $ROOT" >&2
	dpkg -s libidn12 >/dev/null 2>&1 || apt_install libidn12
	deb_extract "$ROOT" exim4-daemon-light exim4-base exim4-config
	[ -x "$EXIM" ] || die "no $EXIM after extraction"
	# Shared libraries the light daemon needs but a minimal system may lack.
	local missing
	missing=$(missing_libs "$EXIM")
	if [ -n "$missing" ]; then
		echo "exim.sh: missing libraries: $missing" >&2
		apt_install $(for l in $missing; do dpkg -S "$l" 2>/dev/null | cut -d: -f1; done) || true
		missing=$(missing_libs "$EXIM")
		[ -z "$missing" ] || die "Exim needs libraries that are not installed: $missing"
	fi
	"$EXIM" -C /dev/null -bV >/dev/null || die "$EXIM does not run"
}

pid_of() { [ -f "$WORK/exim.pid" ] && cat "$WORK/exim.pid" 2>/dev/null || true; }

stop_daemon() {
	local pid
	pid=$(pid_of)
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
}

setup() {
	install_exim
	check_work
	stop_daemon
	rm -rf "$WORK/spool" "$WORK/log"
	mkdir -p "$WORK/spool" "$WORK/log"
	chown Debian-exim:Debian-exim "$WORK/spool" "$WORK/log"
	chmod 750 "$WORK/spool"
	cat >"$CONF" <<EOF
# greyharness private Exim: relay on 127.0.0.1:${SUBMIT_PORT} -> ${ROUTE_HOSTS}
exim_path = $EXIM
exim_user = Debian-exim
exim_group = Debian-exim
spool_directory = $WORK/spool
log_file_path = $WORK/log/%slog
pid_file_path = $WORK/exim.pid
primary_hostname = relay.greyharness.test
qualify_domain = greyharness.test
local_interfaces = 127.0.0.1
daemon_smtp_ports = ${SUBMIT_PORT}
domainlist local_domains =
domainlist relay_to_domains =
hostlist relay_from_hosts = 127.0.0.1
acl_smtp_rcpt = acl_check_rcpt
acl_smtp_data = acl_check_data
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
never_users = root
keep_environment =
smtp_accept_queue_per_connection = 0
# Each received message's immediate delivery runs in a fork of the receiving
# process instead of a re-exec of exim -Mc (which only regains root): every
# delivery here is remote SMTP, run as Debian-exim either way. load-500
# (2026-12-02): 573 exim execs -> 21, submission of the 500 messages
# 28.3-33.4s -> 21.8-29.7s at a load average up to 9 (docs/relays.md).
deliver_drop_privilege
# Queue runners walk the spool oldest first, not in random order: a random
# walk leaves some of 500 deferred messages to the end of every runner's pass
# (load-500's longest retry gap 33.5-36.7s in 5 runs at a load average of
# 0.6-8.7); in order, a message waits at most about one pass: 19.5-24.2s in 4
# runs at 1.1-9.2, 41.6s at 9-11 (2026-12-02, docs/relays.md).
queue_run_in_order
delay_warning = 15s
# Bounces that cannot be delivered are dropped after a while instead of being
# frozen for a week; frozen messages time out too.
ignore_bounce_errors_after = 30s
timeout_frozen_after = 2m
log_selector = +smtp_confirmation +queue_time +deliver_time +received_recipients

begin acl
acl_check_rcpt:
  accept  hosts = +relay_from_hosts
  deny    message = relay not permitted
acl_check_data:
  accept

begin routers
to_next_hop:
  driver = manualroute
  domains = ! +local_domains
  transport = remote_smtp
  route_list = ${LANE_ROUTES}* "${ROUTE_HOSTS}"
  self = send
  no_more

begin transports
remote_smtp:
  driver = smtp
  allow_localhost
  hosts_try_chunking = :
  hosts_avoid_tls = *
  connect_timeout = 5s

begin retry
*  *  F,2m,2s

begin rewrite
EOF
	chmod 644 "$CONF"
	"$EXIM" -C "$CONF" -bV >/dev/null || die "config check failed: $EXIM -C $CONF -bV"
	echo "exim.sh: instance ready in $WORK (daemon 127.0.0.1:${SUBMIT_PORT}, next hops ${ROUTE_HOSTS})" >&2
}

# msglog_deferrals: every deferral Exim wrote in a queued message's own log
# (spool/msglog/ID, removed with the message), one "msglog ID: LINE" each,
# LINE as Exim wrote it: "DATE TIME rcpt R=router T=transport defer (ERRNO)...: why".
# One grep over the folder: cheap even with 500 queued messages.
msglog_deferrals() {
	local dir=$WORK/spool/msglog
	[ -d "$dir" ] || return 0
	# grep exits 1 when nothing matches: an empty answer, not an error. A
	# message delivered while grep walks the folder takes its log with it
	# ("No such file or directory", status 2: seen in load-500): -s, and 2 is
	# no error either (exim -bp, just before, read the same spool).
	(cd "$dir" && { grep -r -s -F -e ' defer (' . || [ $? -le 2 ]; }) | sed 's|^\./\([^:]*\):|msglog \1: |'
}

ready() {
	local pid
	pid=$(pid_of)
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
	smtp_ready
}

cmd=${1:-}
case "$cmd" in
install) install_exim ;;
setup) setup ;;
start)
	need_setup "$CONF"
	exec "$EXIM" -C "$CONF" -bdf -q1s
	;;
ready) ready 2>/dev/null ;;
stop) stop_daemon ;;
flush) exec "$EXIM" -C "$CONF" -qff ;;
queue)
	"$EXIM" -C "$CONF" -bp
	msglog_deferrals
	;;
teardown)
	stop_daemon
	remove_work
	;;
*) die "usage: exim.sh install|setup|start|ready|stop|flush|queue|teardown" ;;
esac
