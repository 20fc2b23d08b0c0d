package history

import (
	"strings"
	"testing"
	"time"
)

func valid() *History {
	at := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	sub := func(hid, mid string) Submission {
		return Submission{HarnessID: hid, MessageID: mid, RcptTo: []string{"a@b.test"}, SubmittedAt: at, Accepted: true}
	}
	return &History{Scenario: "s", Timing: Timing{RetryMax: Duration(time.Second), QueueLifetime: Duration(time.Minute)},
		Started: at, Ended: at.Add(time.Minute), Submissions: []Submission{sub("gh-1", "m1"), sub("gh-2", "m2")}}
}

func TestValidate(t *testing.T) {
	if errs := Validate(valid()); errs != nil {
		t.Fatalf("valid history: %v", errs)
	}
	// A resubmission repeats the Message-ID under its own harness id.
	h := valid()
	h.Submissions[1].MessageID, h.Submissions[1].Resubmission = "m1", true
	if errs := Validate(h); errs != nil {
		t.Errorf("marked resubmission refused: %v", errs)
	}
	h = valid()
	h.Submissions[1].HarnessID, h.Submissions[1].MessageID = "gh-1", "m1"
	h.Ended = h.Started.Add(-time.Second)
	var msgs []string
	for _, e := range Validate(h) {
		msgs = append(msgs, e.Error())
	}
	want := []string{
		"ended: 2026-01-01 09:59:59 +0000 UTC is before started 2026-01-01 10:00:00 +0000 UTC",
		`submissions[1]: harness_id "gh-1" repeats submissions[0] (every submission, a resubmission too, has its own)`,
		`submissions[1]: message_id "m1" repeats submissions[0] and is not marked resubmission`,
	}
	if strings.Join(msgs, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(msgs, "\n"), strings.Join(want, "\n"))
	}
}

func TestDecodePositions(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{"{\n  \"scenario\": 1\n}", "h.json:2:15: json: cannot unmarshal number"},
		{"{}\nx", "h.json:2:1: invalid character 'x' after top-level value"},
		{"{\"submissions\": null}", "h.json: submissions: missing or null"},
	} {
		_, err := Decode("h.json", []byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%q) = %v, want %q", tc.data, err, tc.want)
		}
	}
}
