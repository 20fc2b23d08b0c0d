#!/usr/bin/perl
# Retry forcer for greyharness's private OpenSMTPD 6.8 (see opensmtpd.sh).
#
#   forcer.pl SOCKET RETRY_AFTER POLL GIVEUP LOG <EVENTS
#
# EVENTS: lines "RESULT EVPID MS" (opensmtpd.sh's log_reader writes one for
# every `mta delivery evpid=EVPID ... result="RESULT"` line of smtpd's log; MS
# is when it was logged, Unix milliseconds). Every envelope whose last result
# is TempFail is scheduled RETRY_AFTER seconds after its line: OpenSMTPD's own
# next try would come 400s x n^2 after the message arrived (BACKOFF_TRANSFER in
# scheduler_ramqueue.c), which no smtpd.conf option shortens.
#
# Scheduling speaks smtpctl's protocol on smtpd's control socket (as root):
# one imsg IMSG_CTL_SCHEDULE with the envelope id, answered IMSG_CTL_OK or
# IMSG_CTL_FAIL, pipelined over one connection. An `smtpctl schedule EVPID`
# exec per envelope managed about 3 a second on a loaded 2-core machine,
# far behind load-500's thousand deferrals. IMSG_CTL_FAIL (smtpctl prints "0
# envelope scheduled" and still exits 0) means the scheduler still counts the
# envelope in flight (its TempFail reaches the scheduler through the queue
# process, after the log line; scheduler_ram_schedule refuses an
# RQ_EVPSTATE_INFLIGHT envelope) or it is gone: it is tried again every POLL
# seconds until GIVEUP seconds have passed or a later line settles it. A
# missed schedule would leave the envelope to OpenSMTPD's own 400 s.
#
# Every schedule and every give-up is written to LOG.
use strict;
use warnings;
no warnings 'portable'; # hex() of 64-bit envelope ids
use IO::Socket::UNIX;
use IO::Select;
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time);
use POSIX qw(strftime);

# OpenSMTPD 6.8's smtpd.h: enum imsg_type counts IMSG_NONE 0, IMSG_CTL_OK 1,
# IMSG_CTL_FAIL 2, ..., IMSG_CTL_REMOVE 26, IMSG_CTL_SCHEDULE 27, and a client
# puts IMSG_VERSION (16) in the peerid field; the control process answers
# IMSG_CTL_FAIL to any other version (control.c), so another OpenSMTPD
# never takes these bytes for another command. The imsg header is type u32,
# len u16, flags u16, peerid u32, pid u32 (imsg.h), host byte order. What
# smtpctl 6.8.0p2 sends for `schedule 1234567890abcdef` (strace):
# 1b000000 1800 0000 10000000 <pid> efcdab9078563412.
use constant { IMSG_CTL_OK => 1, IMSG_CTL_FAIL => 2, IMSG_CTL_SCHEDULE => 27, IMSG_VERSION => 16, HDR => 16 };

my ($sockpath, $retry_after, $poll, $giveup, $logpath) = @ARGV;
die "usage: forcer.pl SOCKET RETRY_AFTER POLL GIVEUP LOG\n" unless defined $logpath;

open(my $log, '>>', $logpath) or die "forcer.pl: $logpath: $!\n";
$log->autoflush(1);

sub flog {
	my $t = time;
	print $log strftime('%Y-%m-%dT%H:%M:%S', gmtime($t)), sprintf('.%03dZ ', ($t - int($t)) * 1000), @_, "\n";
}

my $ctl;
my $ctl_err = '';

sub ctl {
	return $ctl if $ctl;
	$ctl = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sockpath);
	if (!$ctl) {
		my $e = "$!";
		flog("control socket $sockpath: $e") if $e ne $ctl_err;
		$ctl_err = $e;
	}
	return $ctl;
}

# schedule(EVPID...): a hash evpid => 1 (scheduled) or 0 (refused); empty
# when the control socket is not there (smtpd starting or gone).
sub schedule {
	my $c = ctl() or return ();
	my $req = join('', map { pack('LSSLLQ', IMSG_CTL_SCHEDULE, HDR + 8, 0, IMSG_VERSION, $$, hex($_)) } @_);
	my %r;
	if (!defined syswrite($c, $req)) {
		undef $ctl;
		return ();
	}
	for my $evp (@_) {
		my $hdr = '';
		while (length($hdr) < HDR) {
			my $n = sysread($c, $hdr, HDR - length($hdr), length($hdr));
			if (!$n) { undef $ctl; return %r; }
		}
		my ($type, $len) = unpack('LS', $hdr);
		if ($len != HDR || ($type != IMSG_CTL_OK && $type != IMSG_CTL_FAIL)) {
			flog("unexpected reply from smtpd: type $type len $len (not OpenSMTPD 6.8's control protocol?)");
			undef $ctl;
			return %r;
		}
		$r{$evp} = $type == IMSG_CTL_OK ? 1 : 0;
	}
	return %r;
}

my (%due, %since);
my $in = IO::Select->new(\*STDIN);
my $buf = '';
my $next = 0;
while (1) {
	if ($in->can_read($poll)) {
		my $n = sysread(STDIN, $buf, 65536, length($buf));
		last unless $n; # the log ended: smtpd is gone
		while ($buf =~ s/^([^\n]*)\n//) {
			my ($res, $evp, $ms) = split(' ', $1);
			next unless defined $ms;
			if ($res eq 'TempFail') {
				$due{$evp} = $since{$evp} = $ms / 1000 + $retry_after;
			} else {
				delete $due{$evp};
				delete $since{$evp};
			}
		}
	}
	my $now = time;
	next if $now < $next;
	$next = $now + $poll;
	my @ready = grep { $due{$_} <= $now } keys %due;
	while (my @batch = splice(@ready, 0, 100)) {
		my %r = schedule(@batch);
		for my $evp (@batch) {
			if ($r{$evp}) {
				flog("forced $evp");
				delete $due{$evp};
				delete $since{$evp};
			} elsif ($now - $since{$evp} >= $giveup) {
				flog('gave up ', $evp, exists $r{$evp} ? ': refused (in flight or gone)' : ': no control socket');
				delete $due{$evp};
				delete $since{$evp};
			} else {
				$due{$evp} = $now + $poll;
			}
		}
	}
}
