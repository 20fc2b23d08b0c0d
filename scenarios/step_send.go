package scenarios

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/harness/traffic"
)

var sendKind = stepKind{
	key: "send",
	decode: func(l *loader, v *yaml.Node, _ int, st *scenarioState, step *Step) {
		step.Send = l.send(v, st)
	},
	action: func(step *Step) Action {
		if step.Send == nil {
			return nil
		}
		return step.Send
	},
}

// Describe says how many messages go to whom, and how.
func (s *Send) Describe() string {
	n := max(s.Count, 1)
	extra := ""
	if s.EHLOTwice {
		extra += ", EHLO twice"
	}
	if s.RsetBeforeMail {
		extra += ", RSET before MAIL"
	}
	if s.ResubmitSameMessageID {
		extra += ", same Message-ID again"
	}
	return fmt.Sprintf("send %d message(s) to %s%s", n, strings.Join(s.To, ", "), extra)
}

// Needs is empty: every relay takes submissions.
func (s *Send) Needs() []profile.Capability { return nil }

// Run submits the messages. It fails when the relay accepted none of them:
// there is nothing for the later steps to follow.
func (s *Send) Run(ctx context.Context, env Env) error {
	count := max(s.Count, 1)
	from := s.From
	if from == "" {
		from = "sender@client.greyharness.test"
	}
	group := s.Name
	if group == "" {
		group = "default"
	}
	tag := s.TagSender == nil || *s.TagSender
	var msgs []*traffic.Message
	if last := env.LastSubmitted(); s.ResubmitSameMessageID && len(last) > 0 {
		// Hand the relay the same messages again: same Message-ID, a new
		// harness id, as a client that did not see the first 250 would.
		for _, prev := range last {
			m := *prev
			m.HarnessID = traffic.NewID()
			if tag {
				m.From = traffic.TagSender(from, m.HarnessID)
			}
			msgs = append(msgs, &m)
		}
	} else {
		for range count {
			id := traffic.NewID()
			m := &traffic.Message{HarnessID: id, MessageID: id + "@harness.greyharness.test", Group: group, From: from,
				To: s.To, Size: s.Size, Headers: s.Headers, EHLOTwice: s.EHLOTwice, RsetBeforeMail: s.RsetBeforeMail}
			if tag {
				m.From = traffic.TagSender(from, id)
			}
			msgs = append(msgs, m)
		}
	}
	results := env.Submit(ctx, msgs, s.Concurrency)
	if len(results) == 0 {
		// The harness submitted nothing (the relay is down for good: the
		// runner names why).
		return fmt.Errorf("nothing submitted")
	}
	accepted, unknown, refusedRcpts := 0, 0, 0
	for _, res := range results {
		switch {
		case res.Accepted:
			accepted++
			refusedRcpts += len(res.RcptTo) - len(res.AcceptedRcpts())
		case res.Unknown:
			unknown++
		}
	}
	line := fmt.Sprintf("submitted %d, relay accepted %d", len(results), accepted)
	if refusedRcpts > 0 {
		line += fmt.Sprintf(" (refusing %d recipient(s))", refusedRcpts)
	}
	if unknown > 0 {
		line += fmt.Sprintf(", %d with no reply to the final dot (outcome unknown)", unknown)
	}
	env.Progress("%s", line)
	if accepted == 0 {
		first := results[0].Reply
		return fmt.Errorf("the relay accepted none of %d submissions (first reply: %s)", len(results), replyText(first))
	}
	return nil
}

func replyText(r fakemta.Reply) string {
	s := strings.TrimSpace(fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text))
	if r.Dropped {
		s = "line dropped without a reply: " + r.Text
	}
	return s
}

var sendKeys = []string{"name", "count", "from", "to", "size", "headers", "ehlo_twice", "rset_before_mail",
	"resubmit_same_message_id", "concurrency", "tag_sender"}

func (l *loader) send(v *yaml.Node, st *scenarioState) *Send {
	s := &Send{}
	kvs := l.mapping(v, "send", sendKeys)
	if v.Kind != yaml.MappingNode {
		return s
	}
	var toKey *yaml.Node
	for _, kv := range kvs {
		switch kv.key {
		case "name":
			s.Name, _ = l.name(kv.v, "send name")
		case "count":
			s.Count, _ = l.integer(kv.v, "count", 1, MaxCount)
		case "from":
			s.From, _ = l.address(kv.v, "from")
		case "to":
			toKey = kv.k
			var items []*yaml.Node
			if kv.v.Kind == yaml.ScalarNode && !isNull(kv.v) {
				items = []*yaml.Node{kv.v} // to: a@x.test
			} else {
				items = l.list(kv.v, "to")
			}
			if items != nil && len(items) == 0 {
				l.errorf(kv.v, "to must name at least one recipient")
			}
			for _, it := range items {
				if a, ok := l.address(it, "recipient"); ok {
					s.To = append(s.To, a)
				}
			}
		case "size":
			s.Size, _ = l.integer(kv.v, "size", 0, MaxSize)
		case "headers":
			s.Headers = l.headers(kv.v)
		case "ehlo_twice":
			s.EHLOTwice, _ = l.boolean(kv.v, kv.key)
		case "rset_before_mail":
			s.RsetBeforeMail, _ = l.boolean(kv.v, kv.key)
		case "resubmit_same_message_id":
			s.ResubmitSameMessageID, _ = l.boolean(kv.v, kv.key)
			if s.ResubmitSameMessageID && st.sends == 0 {
				l.errorf(kv.v, "resubmit_same_message_id needs an earlier send step whose messages it submits again")
			}
		case "concurrency":
			s.Concurrency, _ = l.integer(kv.v, "concurrency", 1, MaxConcurrency)
		case "tag_sender":
			if b, ok := l.boolean(kv.v, kv.key); ok {
				s.TagSender = &b
			}
		}
	}
	if toKey == nil && !s.ResubmitSameMessageID {
		l.errorf(v, "send has no recipients (to)")
	}
	group := s.Name
	if group == "" {
		group = "default"
	}
	st.groups[group] = true
	st.sends++
	return s
}

func (l *loader) headers(v *yaml.Node) map[string]string {
	if v.Kind != yaml.MappingNode {
		l.errorf(v, "headers must be a mapping of header name to value, got %s", kindName(v))
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], resolve(v.Content[i+1])
		if k.Kind != yaml.ScalarNode || !headerRE.MatchString(k.Value) {
			l.errorf(k, "header name %q must be printable ASCII without spaces or ':'", k.Value)
			continue
		}
		if slices.Contains(reservedHeaders, strings.ToLower(k.Value)) {
			l.errorf(k, "header %s is set by the harness for every message (the ledger follows messages by it)", k.Value)
			continue
		}
		for name := range out {
			if strings.EqualFold(name, k.Value) {
				l.errorf(k, "duplicate header %q", k.Value)
			}
		}
		s, ok := l.str(val, "header "+k.Value)
		if !ok {
			continue
		}
		if strings.ContainsAny(s, "\r\n") {
			l.errorf(val, "header %s must be one line", k.Value)
			continue
		}
		out[k.Value] = s
	}
	return out
}
