package fakemta

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Greylist flavours: each sets the real greylister's key, normalisation,
// stage, defaults and reply (docs/fakemta.md cites the sources).
const (
	FlavorGeneric        = "generic"
	FlavorPostgrey       = "postgrey"
	FlavorMilterGreylist = "milter-greylist"
	FlavorRspamd         = "rspamd"
	FlavorExim           = "exim"
)

// Flavors lists the greylist flavours.
var Flavors = []string{FlavorGeneric, FlavorPostgrey, FlavorMilterGreylist, FlavorRspamd, FlavorExim}

// Key parts a greylist record key is built from.
const (
	KeyClient           = "client"            // client address masked to subnet_v4 / subnet_v6
	KeySender           = "sender"            // envelope sender (normalised by sender_normalize)
	KeyRecipient        = "recipient"         // one recipient: one record per recipient
	KeyRecipients       = "recipients"        // all recipients as given (Exim's $recipients)
	KeyRecipientsSorted = "recipients_sorted" // all recipients sorted (rspamd)
	KeyMessageID        = "message_id"        // the Message-ID header
)

var defaultKey = []string{KeyClient, KeySender, KeyRecipient}

var keyParts = []string{KeyClient, KeySender, KeyRecipient, KeyRecipients, KeyRecipientsSorted, KeyMessageID}

// Auto-whitelist keys: what a client is whitelisted by.
const (
	WhitelistSubnet     = "subnet"      // client subnet (subnet_v4 / subnet_v6)
	WhitelistClient     = "client"      // full client address (postgrey)
	WhitelistClientHelo = "client_helo" // address and HELO name (Exim's known resenders)
)

// Defaults of the rspamd flavour's body key.
const rspamdMaxDataLen = 10240

// flavorGreylist returns a flavour's defaults; nil for an unknown name.
func flavorGreylist(name string) *Greylist {
	base := Greylist{Flavor: name, Delay: DefaultGreylistDelay, RetryWindow: DefaultGreylistRetryWindow, MaxAge: DefaultGreylistMaxAge,
		SubnetV4: 24, SubnetV6: 64, AutoWhitelistAfter: 5, AutoWhitelistBy: WhitelistSubnet, Reply: DefaultGreylistReply, Stage: StageRcpt,
		Key: []string{KeyClient, KeySender, KeyRecipient}}
	g := &base
	switch name {
	case FlavorGeneric:
	case FlavorPostgrey:
		// postgrey 1.37: --delay 300, --max-age 35 (days), --retry-window 2
		// (days), --auto-whitelist-clients 5 (by the full client address,
		// counted at most once an hour), --ipv4cidr 24, --ipv6cidr 64; the
		// sender is normalised (BATV, +extension, digit runs). Its text goes
		// to Postfix as "DEFER_IF_PERMIT 4.2.0 Greylisted, see …", which
		// Postfix answers with access_map_defer_code 450 and its
		// "<rcpt>: Recipient address rejected:" prefix.
		g.SenderNormalize = "postgrey"
		g.AutoWhitelistBy = WhitelistClient
		g.whitelistEvery = time.Hour
		g.Reply = "450 4.2.0 <%a>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/%r.html"
	case FlavorMilterGreylist:
		// milter-greylist: GLDELAY 1800 s, TIMEOUT 5 days (a pending tuple
		// is kept that long), AUTOWHITE_VALIDITY 1 day (a passed tuple
		// stays white that long after its last use), subnetmatch /32 and
		// /128 (the full address), no client whitelist; 451 4.7.1 and
		// "Greylisting in action, please come back in %R" (hh:mm:ss).
		g.Delay, g.RetryWindow, g.MaxAge = 30*time.Minute, 5*24*time.Hour, 24*time.Hour
		g.SubnetV4, g.SubnetV6, g.AutoWhitelistAfter = 32, 128, 0
		g.Reply = "451 4.7.1 Greylisting in action, please come back in %R"
	case FlavorRspamd:
		// rspamd's greylist module: after the final dot, a meta key of
		// from, the sorted recipients and the client /19 (/64), and a data
		// key of the first max_data_len (10240) bytes of the body; timeout
		// 300 s, expire 1 day (refreshed on a pass); a matured body passes
		// from any address. Its milter answers a soft reject with
		// 451 4.7.1 and the module's message "Try again later".
		g.Stage = StageEOD
		g.Key = []string{KeyClient, KeySender, KeyRecipientsSorted}
		g.SubnetV4, g.SubnetV6, g.AutoWhitelistAfter = 19, 64, 0
		g.RetryWindow, g.MaxAge = 24*time.Hour, 24*time.Hour
		g.BodyKey = rspamdMaxDataLen
		g.Reply = "451 4.7.1 Try again later"
	case FlavorExim:
		// Exim wiki SimpleGreylisting: in the DATA ACL, an identity hashed
		// from $sender_address, $recipients and the Message-ID header (no
		// client address), 300 s; a retried mail makes the host that first
		// sent it (address and HELO) a known resender, never greylisted
		// again; rows are tidied 14 days after they expire. Exim's defer
		// in the DATA ACL is a 451.
		g.Stage = StageEOD
		g.Key = []string{KeySender, KeyRecipients, KeyMessageID}
		g.RetryWindow, g.MaxAge = 14*24*time.Hour, 14*24*time.Hour
		g.AutoWhitelistAfter, g.AutoWhitelistBy, g.whitelistOrigin = 1, WhitelistClientHelo, true
		g.Reply = "451 Your mail was previously greylisted and the time has not yet expired. You should wait another %s seconds."
	default:
		return nil
	}
	return g
}

// perMessage reports whether the key covers the whole message (all
// recipients, the Message-ID or the body): then it is checked at eod.
func (gl *Greylist) perMessage() bool {
	if gl.BodyKey > 0 {
		return true
	}
	for _, p := range gl.Key {
		if p == KeyRecipients || p == KeyRecipientsSorted || p == KeyMessageID {
			return true
		}
	}
	return false
}

// greyInput is what a greylist key is made of.
type greyInput struct {
	mx        string // MX address when MX hosts keep split state
	client    string // ip:port
	helo      string
	sender    string
	rcpt      string   // per-recipient keys
	rcpts     []string // per-message keys
	messageID string
	body      []byte // first BodyKey bytes of the body (after the header)
}

// buildKey makes a greylist key from in by the policy's key parts.
func (gl *Greylist) buildKey(in greyInput) greyKey {
	subnet := subnetOf(in.client, gl.SubnetV4, gl.SubnetV6)
	sender := lower(in.sender)
	if gl.SenderNormalize == "postgrey" {
		sender = postgreySender(sender)
	}
	var k greyKey
	key := gl.Key
	if len(key) == 0 {
		key = defaultKey // a Greylist made in Go rather than parsed
	}
	parts := make([]string, 0, len(key)+1)
	if in.mx != "" {
		parts = append(parts, "mx="+in.mx)
	}
	for _, p := range key {
		switch p {
		case KeyClient:
			k.Subnet = subnet
			parts = append(parts, subnet)
		case KeySender:
			k.Sender = sender
			parts = append(parts, sender)
		case KeyRecipient:
			k.Recipient = lower(in.rcpt)
			parts = append(parts, k.Recipient)
		case KeyRecipients, KeyRecipientsSorted:
			rs := make([]string, len(in.rcpts))
			for i, r := range in.rcpts {
				rs[i] = lower(r)
			}
			if p == KeyRecipientsSorted {
				sort.Strings(rs)
			}
			k.Recipient = strings.Join(rs, ", ")
			parts = append(parts, k.Recipient)
		case KeyMessageID:
			k.Extra = "<" + in.messageID + ">"
			parts = append(parts, k.Extra)
		}
	}
	k.ID = strings.Join(parts, "|")
	if gl.BodyKey > 0 {
		body := in.body
		if len(body) > gl.BodyKey {
			body = body[:gl.BodyKey]
		}
		sum := sha256.Sum256(body)
		k.Body = "body=" + strings.ToLower(base32.StdEncoding.EncodeToString(sum[:])[:20])
		if in.mx != "" {
			k.Body = "mx=" + in.mx + "|" + k.Body
		}
	}
	if gl.AutoWhitelistAfter > 0 {
		switch gl.AutoWhitelistBy {
		case WhitelistClient:
			k.Whitelist = clientIP(in.client)
		case WhitelistClientHelo:
			k.Whitelist = clientIP(in.client) + " " + lower(in.helo)
		default:
			k.Whitelist = subnet
		}
		if in.mx != "" {
			k.Whitelist = "mx=" + in.mx + "|" + k.Whitelist
		}
	}
	return k
}

// clientIP is the address of a client ip:port.
func clientIP(client string) string {
	s := subnetOf(client, 32, 128)
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	return s
}

// postgreyDigits matches what postgrey's s/\b\d+\b/#/g replaces.
var postgreyDigits = regexp.MustCompile(`\b\d+\b`)

// postgreySender normalises a sender as postgrey's do_sender_substitutions
// does: a BATV prvs= tag is dropped, the +extension cut, and every run of
// digits standing as a word in the local part becomes '#'.
func postgreySender(addr string) string {
	user, domain, ok := strings.Cut(addr, "@")
	if !ok {
		return addr
	}
	if strings.HasPrefix(user, "prvs=") {
		if a := strings.Split(user, "="); len(a) == 3 {
			tag1, tag2 := batvTag(a[1]), batvTag(a[2])
			switch {
			case tag1 && !tag2:
				user = a[2]
			case tag2 && !tag1:
				user = a[1]
			default:
				user = a[2]
			}
		}
	}
	if i := strings.IndexByte(user, '+'); i >= 0 {
		user = user[:i]
	}
	user = postgreyDigits.ReplaceAllString(user, "#")
	return user + "@" + domain
}

// batvTag is postgrey's /^[0-9a-z]{10}/.
func batvTag(s string) bool {
	if len(s) < 10 {
		return false
	}
	for _, c := range s[:10] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// greylistReply renders the configured reply: %s the seconds left, %R the
// time left as hh:mm:ss (milter-greylist), %r the recipient's domain
// (postgrey), %a the recipient address.
func greylistReply(gl *Greylist, left time.Duration, rcpt string) Reply {
	r, err := ParseReply(expandReply(gl.Reply, left, rcpt))
	if err != nil {
		r, _ = ParseReply(expandReply(DefaultGreylistReply, left, rcpt))
	}
	return r
}

func expandReply(tmpl string, left time.Duration, rcpt string) string {
	secs := int((left + time.Second - 1) / time.Second)
	domain := rcpt
	if i := strings.LastIndexByte(rcpt, '@'); i >= 0 {
		domain = rcpt[i+1:]
	}
	return strings.NewReplacer("%s", strconv.Itoa(secs),
		"%R", fmt.Sprintf("%02d:%02d:%02d", secs/3600, secs/60%60, secs%60),
		"%r", domain, "%a", rcpt).Replace(tmpl)
}
