package fakemta

import (
	"strings"
	"testing"
)

func TestPolicyErrorsArePositioned(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown key", "rules:\n  - match: {stage: rcpt}\n    reply: \"451 4.7.1 x\"\n    colour: red\n",
			`p.yaml:4:5: unknown key "colour" in rule (known: match, reply, drop, close, delay, tls, accept)`},
		{"unknown match key", "rules:\n  - match: {stage: rcpt, recipient: x}\n    drop: true\n",
			`p.yaml:2:26: unknown key "recipient" in match (known: stage, attempt, connection, mx, client, helo, sender, rcpt, after, before)`},
		{"bad stage", "rules:\n  - match: {stage: rcpts}\n    reply: \"451 x\"\n",
			`p.yaml:2:20: unknown stage "rcpts" (connect, helo, starttls, mail, rcpt, data, eod, quit)`},
		{"bad reply code", "rules:\n  - match: {stage: rcpt}\n    reply: \"651 x\"\n",
			`p.yaml:3:12: reply: "651 x" does not start with a reply code 200-599`},
		{"enhanced class mismatch", "rules:\n  - match: {stage: rcpt}\n    reply: \"451 5.7.1 x\"\n",
			`p.yaml:3:12: reply: enhanced code 5.7.1 does not match reply class 4`},
		{"two actions", "rules:\n  - match: {stage: rcpt}\n    reply: \"451 x\"\n    drop: true\n",
			`p.yaml:2:5: rule has 2 actions (reply, drop): give exactly one`},
		{"no action", "rules:\n  - match: {stage: rcpt}\n",
			`p.yaml:2:5: rule has no action (one of: reply, drop, close, delay, tls, accept)`},
		{"tls without starttls", "rules:\n  - match: {stage: mail}\n    tls: fail\n",
			`p.yaml:2:5: tls: fail needs match.stage: starttls`},
		{"tls not fail", "rules:\n  - match: {stage: starttls}\n    tls: maybe\n",
			`p.yaml:3:10: tls action must be "fail", got "maybe"`},
		{"bad CIDR", "rules:\n  - match: {client: 10.0.0.0/33}\n    drop: true\n",
			`p.yaml:2:21: client: bad CIDR "10.0.0.0/33"`},
		{"bad duration", "rules:\n  - match: {after: 5 minutes}\n    drop: true\n",
			`p.yaml:2:20: after: invalid duration "5 minutes" (want e.g. 2s, 5m, 48h, 35d)`},
		{"bad attempt range", "rules:\n  - match: {attempt: \"3-1\"}\n    drop: true\n",
			`p.yaml:2:22: attempt: want N, N-M or N- with N ≤ M, got "3-1"`},
		{"attempt zero", "rules:\n  - match: {attempt: \"0\"}\n    drop: true\n",
			`p.yaml:2:22: attempt: want N, N-M or N- with N ≥ 1, got "0"`},
		{"attempt at mail", "rules:\n  - match: {stage: mail, attempt: \"2\"}\n    drop: true\n",
			`p.yaml:2:12: attempt counts recipients: it needs stage rcpt, data or eod (or no stage), not mail`},
		{"greylist reply not 4xx", "greylist:\n  reply: \"550 5.7.1 no\"\n",
			`p.yaml:2:10: greylist reply must be a 4xx reply, got 550`},
		{"retry_window < delay", "greylist:\n  delay: 10m\n  retry_window: 5m\n",
			`p.yaml:3:17: greylist retry_window (5m0s) is shorter than delay (10m0s): no retry could ever pass`},
		{"delay beyond default retry window", "greylist:\n  delay: 72h\n",
			`p.yaml:2:10: greylist retry_window (48h0m0s) is shorter than delay (72h0m0s): no retry could ever pass`},
		{"greylist stage", "greylist:\n  stage: data\n",
			`p.yaml:2:10: greylist stage must be rcpt or eod, got "data"`},
		{"subnet", "greylist:\n  subnet_v4: 33\n",
			`p.yaml:2:14: subnet_v4 must be a whole number from 0 to 32, got "33"`},
		{"2xx at connect", "rules:\n  - match: {stage: connect}\n    reply: \"250 hi\"\n",
			`p.yaml:2:5: a connect-stage reply must be 4xx or 5xx (the 220 greeting is the default)`},
		{"duplicate key", "rules:\n  - match: {stage: rcpt}\n    drop: true\n    match: {stage: mail}\n",
			`p.yaml:4:5: duplicate key "match" in rule (first at line 2)`},
		{"not a mapping", "- a\n", `p.yaml:1:1: policy must be a mapping of keys, got a list`},
		{"rules not a list", "rules: {a: b}\n", `p.yaml:1:8: rules must be a list`},
		{"yaml syntax", "greylist:\n  delay: 5m\n    stage: eod\n", `p.yaml:3:1: mapping values are not allowed in this context`},
		{"tab indent", "rules:\n\t- drop: true\n", `p.yaml:2:1: found character that cannot start any token`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicy("p.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error for\n%s", tc.yaml)
			}
			if err.Error() != tc.want {
				t.Fatalf("got  %s\nwant %s", err, tc.want)
			}
		})
	}
}

func TestPolicyReportsEveryError(t *testing.T) {
	y := `greylist:
  delay: 1x
  subnet_v6: -1
rules:
  - match: {stage: nope}
    reply: "999"
  - drop: true
    close: 421
  - match: {client: "not-an-ip", helo: "[x"}
    delay: 5s
`
	_, err := ParsePolicy("many.yaml", []byte(y))
	want := []string{
		`many.yaml:2:10: delay: invalid duration "1x" (want e.g. 2s, 5m, 48h, 35d)`,
		`many.yaml:3:14: subnet_v6 must be a whole number from 0 to 128, got "-1"`,
		`many.yaml:5:20: unknown stage "nope" (connect, helo, starttls, mail, rcpt, data, eod, quit)`,
		`many.yaml:6:12: reply: "999" does not start with a reply code 200-599`,
		`many.yaml:7:5: rule has 2 actions (drop, close): give exactly one`,
		`many.yaml:9:21: client: bad address "not-an-ip"`,
		`many.yaml:9:40: helo: bad glob "[x": syntax error in pattern`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Fatalf("got:\n%v\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

func TestValidPolicyParses(t *testing.T) {
	p := parseTestPolicy(t, `greylist:
  delay: 5m
  retry_window: 48h
  max_age: 35d
  subnet_v4: 24
  subnet_v6: 64
  auto_whitelist_after: 5
  reply: "450 4.7.1 later, %s s"
  stage: eod
rules:
  - match: {stage: connect, connection: "1-3", client: "192.0.2.0/24"}
    close: "421 4.3.2 busy"
  - match: {stage: rcpt, attempt: "4-", sender: "*@x.test", rcpt: "b*", after: 1m, before: 2h}
    reply: "550 5.1.1 gone"
  - match: {stage: starttls}
    tls: fail
  - match: {stage: eod}
    delay: 2s
  - match: {stage: quit}
    drop: true
  - match: {helo: "*.ok"}
    accept: true
`)
	if g := p.Greylist; g.MaxAge != 35*24*3600e9 || g.Stage != StageEOD || g.Reply != "450 4.7.1 later, %s s" {
		t.Fatalf("greylist %+v", g)
	}
	if len(p.Rules) != 6 || p.Rules[1].Match.Attempt.Min != 4 || p.Rules[1].Match.Attempt.Max != 0 ||
		p.Rules[0].Reply.Code != 421 || p.Rules[0].Reply.Enhanced != "4.3.2" || p.Rules[4].Action != ActionDrop {
		t.Fatalf("rules %+v", p.Rules)
	}
}
