package fakemta

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisPrefix starts every key the fake MTA writes in Redis.
const redisPrefix = "greyharness:"

// redisStore keeps the greylist in Redis: records as hashes under
// greyharness:r:KEY, whitelist counters under greyharness:w:KEY; a
// tenant's under greyharness:t:NAME:r:KEY and greyharness:t:NAME:w:KEY, so
// that tenants stay apart and every fake MTA on the Redis shares each
// tenant's state. Every check is one Lua script, so concurrent sessions
// (of one or several fake MTAs) never lose an update.
type redisStore struct {
	c      *redis.Client
	prefix string // redisPrefix, or a tenant's redisPrefix+"t:NAME:"
	tenant bool   // a tenant's view: the server owns the client
}

// forTenant is the store of tenant name, on the same client.
func (r *redisStore) forTenant(name string) *redisStore {
	return &redisStore{c: r.c, prefix: redisPrefix + "t:" + name + ":", tenant: true}
}

// openRedisStore connects to a redis://HOST:PORT/DB URL and pings it.
func openRedisStore(url string) (*redisStore, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("greylist store %q: %w", url, err)
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = time.Second, time.Second, time.Second
	opt.MaxRetries = 1
	// One connection per running check at most; no identity handshake noise.
	opt.DisableIdentity = true
	c := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), greyStoreTimeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("greylist store %s: %w", url, err)
	}
	return &redisStore{c: c, prefix: redisPrefix}, nil
}

func (r *redisStore) replays() bool { return false }

func (r *redisStore) close() error {
	if r.tenant {
		return nil
	}
	return r.c.Close()
}

// greyScript is greylistState.check in Lua (see there for the rules).
// Times are microseconds: Redis's Lua numbers are doubles.
var greyScript = redis.NewScript(`
local now, delay, retry, maxage = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local awl, awlEvery, origin = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local hasBody, wlv, ttl, wlPrefix = ARGV[8] == '1', ARGV[9], tonumber(ARGV[10]), ARGV[11]
local function load(k)
  local v = redis.call('HMGET', k, 'first', 'last', 'passed', 'passes', 'origin')
  if not v[1] then return nil end
  return {first = tonumber(v[1]), last = tonumber(v[2]), passed = tonumber(v[3]), passes = tonumber(v[4]), origin = v[5] or ''}
end
local function expired(r)
  return (r.passed > 0 and maxage > 0 and now - r.last > maxage) or (r.passed == 0 and retry > 0 and now - r.first > retry)
end
local function save(k, r, subnet, sender, rcpt, extra)
  redis.call('HSET', k, 'first', r.first, 'last', r.last, 'passed', r.passed, 'passes', r.passes, 'origin', r.origin)
  if subnet then redis.call('HSET', k, 'subnet', subnet, 'sender', sender, 'recipient', rcpt, 'extra', extra) end
  if ttl > 0 then redis.call('PEXPIRE', k, ttl) end
end
local function pass(k, r)
  local first = r.passed == 0
  if first then r.passed = now end
  r.last = now
  r.passes = r.passes + 1
  save(k, r)
  if not first then return end
  local wl = wlv
  if origin then wl = r.origin end
  if wl == '' or awl <= 0 then return end
  local wk = wlPrefix .. wl
  local last = redis.call('HGET', wk, 'last')
  if last and awlEvery > 0 and now - tonumber(last) < awlEvery then return end
  redis.call('HINCRBY', wk, 'count', 1)
  redis.call('HSET', wk, 'last', now)
  if ttl > 0 then redis.call('PEXPIRE', wk, ttl) end
end
if wlv ~= '' and awl > 0 then
  local c = tonumber(redis.call('HGET', wlPrefix .. wlv, 'count') or '0')
  if c >= awl then
    local r = load(KEYS[1])
    if r then r.last = now; save(KEYS[1], r) end
    return {'whitelisted', 0}
  end
end
local body = nil
if hasBody then
  body = load(KEYS[2])
  if body and expired(body) then redis.call('DEL', KEYS[2]); body = nil end
  if body and now - body.first >= delay then
    pass(KEYS[2], body)
    local r = load(KEYS[1])
    if r and not expired(r) then r.last = now; save(KEYS[1], r) end
    return {'passed', 0}
  end
end
local r = load(KEYS[1])
if (not r) or expired(r) then
  if body then return {'deferred', body.first + delay - now} end
  redis.call('DEL', KEYS[1])
  save(KEYS[1], {first = now, last = now, passed = 0, passes = 0, origin = wlv}, ARGV[12], ARGV[13], ARGV[14], ARGV[15])
  if hasBody then
    redis.call('DEL', KEYS[2])
    save(KEYS[2], {first = now, last = now, passed = 0, passes = 0, origin = wlv}, '', '', '', 'body ' .. ARGV[16])
  end
  return {'deferred', delay}
end
if r.passed > 0 then
  r.last = now
  r.passes = r.passes + 1
  save(KEYS[1], r)
  return {'passed', 0}
end
local wait = r.first + delay - now
if wait > 0 then
  r.last = now
  save(KEYS[1], r)
  return {'deferred', wait}
end
pass(KEYS[1], r)
if body then body.last = now; save(KEYS[2], body) end
return {'passed', 0}
`)

func us(d time.Duration) int64 { return d.Microseconds() }

func b01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func (r *redisStore) check(ctx context.Context, gl *Greylist, k greyKey, now time.Time) (string, time.Duration, error) {
	body := k.Body
	if body == "" {
		body = k.ID // unused by the script; Redis wants a key name
	}
	// Records outlive their last use by the longer of retry window and max
	// age; past that they are expired anyway, so Redis may drop them.
	ttl := max(gl.RetryWindow, gl.MaxAge)
	if ttl > 0 {
		ttl += time.Hour
	}
	res, err := greyScript.Run(ctx, r.c, []string{r.prefix + "r:" + k.ID, r.prefix + "r:" + body},
		now.UnixMicro(), us(gl.Delay), us(gl.RetryWindow), us(gl.MaxAge),
		gl.AutoWhitelistAfter, us(gl.whitelistEvery), b01(gl.whitelistOrigin),
		b01(k.Body != ""), k.Whitelist, ttl.Milliseconds(), r.prefix+"w:",
		k.Subnet, k.Sender, k.Recipient, k.Extra, k.Body).Slice()
	if err != nil {
		return "", 0, err
	}
	if len(res) != 2 {
		return "", 0, fmt.Errorf("greylist store: unexpected answer %v", res)
	}
	outcome, _ := res[0].(string)
	left, _ := res[1].(int64)
	switch outcome {
	case greyDeferred, greyPassed, greyWhitelisted:
	default:
		return "", 0, fmt.Errorf("greylist store: unexpected outcome %v", res[0])
	}
	return outcome, time.Duration(left) * time.Microsecond, nil
}

func (r *redisStore) entries(ctx context.Context) ([]GreylistEntry, error) {
	var out []GreylistEntry
	iter := r.c.Scan(ctx, 0, r.prefix+"r:*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		h, err := r.c.HGetAll(ctx, key).Result()
		if err != nil {
			return nil, err
		}
		if len(h) == 0 {
			continue // gone meanwhile
		}
		t := func(f string) time.Time {
			n, _ := strconv.ParseInt(h[f], 10, 64)
			if n == 0 {
				return time.Time{}
			}
			return time.UnixMicro(n).UTC()
		}
		passes, _ := strconv.Atoi(h["passes"])
		out = append(out, GreylistEntry{Key: strings.TrimPrefix(key, r.prefix+"r:"), Subnet: h["subnet"], Sender: h["sender"],
			Recipient: h["recipient"], Extra: h["extra"], FirstSeen: t("first"), LastSeen: t("last"), PassedAt: t("passed"), Passes: passes})
	}
	if err := iter.Err(); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].FirstSeen.Equal(out[j].FirstSeen) {
			return out[i].FirstSeen.Before(out[j].FirstSeen)
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

// wipe forgets the store's records: a tenant's own, or, for the server's
// store, every record on the Redis (its own and every tenant's, as
// WipeGreylist and --wipe-state mean).
func (r *redisStore) wipe(ctx context.Context) error {
	iter := r.c.Scan(ctx, 0, r.prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return err
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := r.c.Del(ctx, keys[:n]...).Err(); err != nil {
			return err
		}
		keys = keys[n:]
	}
	return nil
}
