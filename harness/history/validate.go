package history

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Decode parses a saved history.json (file names it in errors) and checks it
// with Validate. JSON errors read "file:line:col: message"; every problem
// Validate finds reads "file: field: message".
func Decode(file string, data []byte) (*History, error) {
	var h History
	if err := json.Unmarshal(data, &h); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			line, col := position(data, se.Offset)
			return nil, fmt.Errorf("%s:%d:%d: %v", file, line, col, err)
		case errors.As(err, &te):
			line, col := position(data, te.Offset)
			return nil, fmt.Errorf("%s:%d:%d: %v", file, line, col, err)
		}
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	if errs := Validate(&h); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = fmt.Sprintf("%s: %v", file, e)
		}
		return nil, fmt.Errorf("%s\n(not a history a run wrote: refusing to judge it)", strings.Join(msgs, "\n"))
	}
	return &h, nil
}

// position turns the byte offset after which encoding/json stopped into a
// 1-based line and column of the offending byte.
func position(data []byte, off int64) (line, col int) {
	if off > 0 {
		off-- // json reports the offset after the byte it choked on
	}
	line, col = 1, 1
	for i := int64(0); i < off && i < int64(len(data)); i++ {
		if data[i] == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

// Validate checks what the ledger relies on in a loaded history, so that a
// damaged or hand-edited file is refused instead of judged wrongly (an empty
// history passes, a repeated submission counts as lost twice):
//   - scenario is set; timing.retry_max and timing.queue_lifetime are > 0;
//     started is set and ended is not before it;
//   - submissions is present (a run with nothing submitted writes []), and
//     each has a harness_id, a message_id, recipients and submitted_at;
//   - harness ids are unique (a resubmission gets a new one), and a repeated
//     message_id is marked resubmission.
//
// It returns every problem found, in file order (nil when none).
func Validate(h *History) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if h.Scenario == "" {
		bad("scenario: missing")
	}
	if h.Timing.RetryMax <= 0 {
		bad("timing.retry_max: missing or not > 0")
	}
	if h.Timing.QueueLifetime <= 0 {
		bad("timing.queue_lifetime: missing or not > 0")
	}
	if h.Started.IsZero() {
		bad("started: missing")
	} else if !h.Ended.IsZero() && h.Ended.Before(h.Started) {
		bad("ended: %s is before started %s", h.Ended, h.Started)
	}
	if h.Submissions == nil {
		bad("submissions: missing or null (a run that submitted nothing writes [])")
	}
	byHID := map[string]int{}
	byMID := map[string]int{}
	for i, s := range h.Submissions {
		at := fmt.Sprintf("submissions[%d]", i)
		switch j, seen := byHID[s.HarnessID]; {
		case s.HarnessID == "":
			bad("%s: harness_id is missing", at)
		case seen:
			bad("%s: harness_id %q repeats submissions[%d] (every submission, a resubmission too, has its own)", at, s.HarnessID, j)
		default:
			byHID[s.HarnessID] = i
		}
		switch j, seen := byMID[s.MessageID]; {
		case s.MessageID == "":
			bad("%s: message_id is missing", at)
		case seen && !s.Resubmission:
			bad("%s: message_id %q repeats submissions[%d] and is not marked resubmission", at, s.MessageID, j)
		case !seen:
			byMID[s.MessageID] = i
		}
		if len(s.RcptTo) == 0 {
			bad("%s: rcpt_to is empty", at)
		}
		if s.SubmittedAt.IsZero() {
			bad("%s: submitted_at is missing", at)
		}
	}
	return errs
}
