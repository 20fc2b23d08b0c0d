package fakemta

import (
	"fmt"
	"strings"
	"testing"
)

var wireReplies = []string{
	"250 2.0.0 OK\r\n", "250 OK\r\n", "250\r\n", "25\r\n", "", "\r\n", "221 2.0.0 Bye", "354 Go ahead\r\n",
	"250 2.1.5\r\n", "250 2.1.5 \r\n", "250  2.1.5 x\r\n", "550 5.1.1 No such user\r\r\n", "451 4.7.1 a b c\n",
	"250-fakemta\r\n250-PIPELINING\r\n250 8BITMIME\r\n", "250-a\r\n250 2.0.0 b\r\n", "2x0 odd\r\n", "+12 plus\r\n",
	"250 ok\rmid\r\n", "250 \xff\xfe bytes\r\n", "250-x\n\n", "\n250 x\r\n",
}

func TestParseWireReplyFastPath(t *testing.T) {
	for _, w := range wireReplies {
		if got, want := parseWireReply([]byte(w)), parseMultiLineReply([]byte(w)); got != want {
			t.Errorf("%q: got %+v, want %+v", w, got, want)
		}
	}
}

func FuzzParseWireReply(f *testing.F) {
	for _, w := range wireReplies {
		f.Add([]byte(w))
	}
	f.Fuzz(func(t *testing.T, w []byte) {
		if got, want := parseWireReply(w), parseMultiLineReply(w); got != want {
			t.Fatalf("%q: got %+v, want %+v", w, got, want)
		}
	})
}

func TestFormatReplyMatchesSprintf(t *testing.T) {
	for _, r := range []Reply{{Code: 250, Enhanced: "2.0.0", Text: "OK"}, {Code: 250, Text: "OK"}, {Code: 451}, {Code: -1, Enhanced: "x", Text: "y z"}, {Code: 1000, Text: "%d \xff"}} {
		want := fmt.Sprintf("%d %s\r\n", r.Code, r.Text)
		if r.Enhanced != "" {
			want = fmt.Sprintf("%d %s %s\r\n", r.Code, r.Enhanced, r.Text)
		}
		if got := string(formatReply(r)); got != want {
			t.Errorf("%+v: got %q, want %q", r, got, want)
		}
	}
}

func TestCommandVerbMatchesToUpper(t *testing.T) {
	for _, cmd := range []string{"MAIL FROM:<a>", "mail from:<a>", "Rcpt TO:<b>", "data", "STARTTLS", "starttls x", "ſtarttls", "EHLO", "ehlo x",
		"XCLIENT a", "", " ", "quit", "QUIT", "noop", "Help", "auth plain", "vrfy x", "bdat 10 LAST", "lhlo", "helo", "rset", "verylongverb x", "\xff\xfe"} {
		verb, _, _ := strings.Cut(cmd, " ")
		want := strings.ToUpper(verb)
		if !knownVerbs[want] {
			want = "other"
		}
		if got := commandVerb(cmd); got != want {
			t.Errorf("%q: got %q, want %q", cmd, got, want)
		}
	}
}
