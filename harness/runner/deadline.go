package runner

import (
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/scenarios"
)

// PerMessage is what a wait's deadline allows for each message it still
// waits for: a relay works through a large queue one message at a time.
const PerMessage = 20 * time.Millisecond

// WaitDeadline derives a wait's timeout from the profile's timing, the
// policy's greylist delay and the number of messages still waited for. The
// suite takes its spec timeouts from it too, so the two never disagree.
func WaitDeadline(t history.Timing, w *scenarios.Wait, greylistDelay time.Duration, pending int) time.Duration {
	grace := t.RestartGrace.D()
	if w.Timeout > 0 {
		return w.Timeout.D()
	}
	factor := w.Factor
	if factor == 0 {
		factor = 3
	}
	if w.TimeoutFrom != "" {
		var base time.Duration
		switch w.TimeoutFrom {
		case "retry_max":
			base = t.RetryMax.D()
		case "queue_lifetime":
			base = t.QueueLifetime.D()
		case "delay_warning":
			base = t.DelayWarning.D()
		}
		return time.Duration(float64(base)*factor) + grace
	}
	load := time.Duration(pending) * PerMessage
	retries := time.Duration(float64(t.RetryMax.D()) * factor)
	switch w.For {
	case "deferred":
		return retries + grace + load
	case "attempts":
		return time.Duration(w.Attempts)*t.RetryMax.D()*2 + greylistDelay + grace + load
	case "dsn":
		if w.Action == "delayed" {
			return t.DelayWarning.D() + retries + grace + load
		}
		return t.QueueLifetime.D() + retries + grace + load
	default: // delivered, drained
		return greylistDelay + retries + grace + load
	}
}

// RestartDeadline bounds a restart step: the wait for its moment (when:
// after-deferral or during-data), then each restart.
func RestartDeadline(t history.Timing, rs *scenarios.Restart) time.Duration {
	var d time.Duration
	if rs.When == "after-deferral" || rs.When == "during-data" {
		d = t.RetryMax.D()*3 + t.RestartGrace.D()
	}
	return d + time.Duration(max(rs.Times, 1))*restartTimeout(t)
}

// restartTimeout bounds one relay restart.
func restartTimeout(t history.Timing) time.Duration { return 2*t.RestartGrace.D() + 10*time.Second }
