package core

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"
	"golang.org/x/time/rate"

	"github.com/pairrelay/relay/config"
)

// Admission control: which address a request's client is, how fast one
// address and everyone together may upgrade, how many connections one
// address may hold, and how long a connection may stay before its upgrade.
// The listener (guardListener) counts every accepted connection toward
// limits.max_connections from its accept on, so that connections that never
// finish a request cannot pile up uncounted.

// admission is the server's admission state.
type admission struct {
	log     *slog.Logger
	warned  atomic.Bool // the forwarded-header warning was logged
	limits  *config.Limits
	ips     *clientIPs
	metrics *Metrics

	perIP  *rateBuckets  // nil: no per-address rate
	global *rate.Limiter // nil: no global upgrade rate
	gmu    sync.Mutex    // global: Allow and Tokens in one step
	now    func() time.Time

	conns   atomic.Int64 // accepted and not yet closed: pending and upgraded
	pending atomic.Int64 // accepted, neither upgraded nor closed

	// Connections per client address: from the accept when the peer is the
	// client itself (peers), from the upgrade for the resolved client
	// (clients). Each entry stands for at least one open connection, so the
	// maps are bounded by max_connections.
	mu      sync.Mutex
	peers   map[netip.Addr]int
	clients map[netip.Addr]int
}

func newAdmission(log *slog.Logger, limits *config.Limits, ips *clientIPs, metrics *Metrics) *admission {
	a := &admission{log: log, limits: limits, ips: ips, metrics: metrics, now: time.Now,
		peers: map[netip.Addr]int{}, clients: map[netip.Addr]int{}}
	if limits.ConnectionsPerSecondPerIP > 0 {
		a.perIP = newRateBuckets(limits.ConnectionsPerSecondPerIP, limits.ConnectionBurstPerIP, maxRateAddresses)
	}
	if limits.UpgradesPerSecond > 0 {
		a.global = rate.NewLimiter(rate.Limit(limits.UpgradesPerSecond), limits.UpgradeBurst)
	}
	return a
}

// limitKey is the key an address is counted under: IPv6 clients by their
// /64, the block one subscriber gets, so that a client cannot escape the
// limits by cycling through the addresses it owns.
func limitKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// addrOf returns the IP address of a network address (zero when it has none).
func addrOf(addr net.Addr) netip.Addr {
	if ta, ok := addr.(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// accept decides whether a new connection may stay. It returns nil after
// refusing (and closing) c.
func (a *admission) accept(c net.Conn) *frameConn {
	n := a.conns.Add(1)
	if max := a.limits.MaxConnections; max > 0 && n > int64(max) {
		a.conns.Add(-1)
		a.refuseConn(c, "server_full", fiber.StatusServiceUnavailable, "relay has no room for more connections")
		return nil
	}
	fc := &frameConn{Conn: c, adm: a}
	if max := a.limits.MaxConnectionsPerIP; max > 0 {
		// Behind a trusted proxy the peer is the proxy, shared by every
		// client: only the upgrade, which knows the client, counts then.
		if peer := addrOf(c.RemoteAddr()); !a.ips.peerTrusted(peer) {
			key := limitKey(peer)
			a.mu.Lock()
			if a.peers[key] >= max {
				a.mu.Unlock()
				a.conns.Add(-1)
				a.refuseConn(c, "too_many_connections", fiber.StatusTooManyRequests, "too many connections from this address")
				return nil
			}
			a.peers[key]++
			a.mu.Unlock()
			fc.peerKey, fc.peerCounted = key, true
		}
	}
	a.pending.Add(1)
	_ = c.SetReadDeadline(a.now().Add(a.limits.HeaderTimeout))
	return fc
}

// refuseConn answers a connection refused at its accept with a fixed
// response, without reading its request, and closes it. The write goes to
// an empty socket buffer, so it does not block the accept loop.
func (a *admission) refuseConn(c net.Conn, code string, status int, message string) {
	a.metrics.rejected.WithLabelValues(code).Inc()
	body := `{"error":"` + code + `","message":"` + message + `"}`
	resp := "HTTP/1.1 " + strconv.Itoa(status) + " " + utils.StatusMessage(status) + "\r\n" +
		"Content-Type: application/json\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
	_ = c.SetWriteDeadline(a.now().Add(100 * time.Millisecond))
	_, _ = c.Write([]byte(resp))
	_ = c.Close()
}

// released is called once when a connection the listener accepted closes.
func (a *admission) released(fc *frameConn) {
	a.conns.Add(-1)
	if fc.upgraded.CompareAndSwap(false, true) {
		a.pending.Add(-1)
	}
	if fc.peerCounted {
		a.mu.Lock()
		if a.peers[fc.peerKey]--; a.peers[fc.peerKey] <= 0 {
			delete(a.peers, fc.peerKey)
		}
		a.mu.Unlock()
	}
}

// upgraded is called when a connection becomes a session: it is no longer
// pending.
func (a *admission) upgraded(fc *frameConn) {
	if fc.upgraded.CompareAndSwap(false, true) {
		a.pending.Add(-1)
	}
}

// clientIP returns the client address of an upgrade request.
func (a *admission) clientIP(c *fiber.Ctx) netip.Addr {
	peer := addrOf(c.Context().RemoteAddr())
	if !a.ips.peerTrusted(peer) {
		if !a.warned.Load() && len(c.Request().Header.Peek(fiber.HeaderXForwardedFor)) > 0 && a.warned.CompareAndSwap(false, true) {
			// Most likely a proxy of the operator's own that client_ip does
			// not name: every client behind it would share its limits.
			a.log.Warn("a request carries X-Forwarded-For from a peer that is not a trusted proxy: it is ignored, and the peer counts as the client; if relay runs behind a proxy, list it in client_ip.trusted_proxies (logged once)",
				"peer", peer.String(), "preset", a.ips.preset)
		}
		return peer
	}
	return a.ips.resolve(peer, c.Request().Header.PeekAll(a.ips.header))
}

// limitRate takes one upgrade from the client's bucket and then from the
// global one. A refusal says its status, code, message and Retry-After.
func (a *admission) limitRate(client netip.Addr) (status int, code, message, retryAfter string) {
	now := a.now()
	if a.perIP != nil {
		if ok, wait := a.perIP.take(limitKey(client), now); !ok {
			return fiber.StatusTooManyRequests, "too_many_requests",
				"too many connection attempts from this address: retry later", retrySeconds(wait)
		}
	}
	if a.global != nil {
		a.gmu.Lock()
		ok := a.global.AllowN(now, 1)
		var wait time.Duration
		if !ok {
			wait = time.Duration((1 - a.global.TokensAt(now)) / float64(a.global.Limit()) * float64(time.Second))
		}
		a.gmu.Unlock()
		if !ok {
			return fiber.StatusServiceUnavailable, "server_busy",
				"relay is taking too many new connections: retry later", retrySeconds(wait)
		}
	}
	return 0, "", "", ""
}

// retrySeconds is a Retry-After value: whole seconds, at least 1.
func retrySeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// acquireClient counts a connection of client toward
// limits.max_connections_per_ip.
func (a *admission) acquireClient(key netip.Addr) bool {
	max := a.limits.MaxConnectionsPerIP
	if max <= 0 {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.clients[key] >= max {
		return false
	}
	a.clients[key]++
	return true
}

func (a *admission) releaseClient(key netip.Addr) {
	if a.limits.MaxConnectionsPerIP <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.clients[key]--; a.clients[key] <= 0 {
		delete(a.clients, key)
	}
}

// sweep forgets, every interval until ctx ends, the addresses whose bucket
// is full again: they are as good as new.
func (a *admission) sweep(ctx context.Context, interval time.Duration) {
	if a.perIP == nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.perIP.sweep(a.now())
		}
	}
}

// maxRateAddresses bounds the addresses whose connection rate is tracked at
// once (about 64 bytes each).
const maxRateAddresses = 1 << 16

const rateShards = 64

// rateBuckets is a token bucket per address, in a bounded map. An address
// whose bucket has filled up again is dropped (a new one starts full), so
// only addresses that connected within the last burst/rate seconds take
// room; when the map is full nonetheless (many addresses at once), an
// arbitrary entry makes way, which at worst gives one address a fresh burst.
type rateBuckets struct {
	perSecond float64
	burst     float64
	fill      time.Duration // time an empty bucket takes to fill
	shardCap  int
	shards    [rateShards]rateShard
}

type rateShard struct {
	mu      sync.Mutex
	buckets map[netip.Addr]tokenBucket
}

type tokenBucket struct {
	tokens float64
	at     time.Time
}

func newRateBuckets(perSecond float64, burst, maxAddresses int) *rateBuckets {
	b := &rateBuckets{perSecond: perSecond, burst: float64(burst),
		fill:     time.Duration(float64(burst) / perSecond * float64(time.Second)),
		shardCap: max(1, maxAddresses/rateShards)}
	for i := range b.shards {
		b.shards[i].buckets = map[netip.Addr]tokenBucket{}
	}
	return b
}

func (b *rateBuckets) shard(key netip.Addr) *rateShard {
	s := key.As16()
	h := uint32(2166136261)
	for _, c := range s {
		h = (h ^ uint32(c)) * 16777619
	}
	return &b.shards[h%rateShards]
}

// take spends one token of key's bucket; without one it says how long
// until there is one.
func (b *rateBuckets) take(key netip.Addr, now time.Time) (bool, time.Duration) {
	s := b.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	tb, found := s.buckets[key]
	if found {
		tb.tokens = min(b.burst, tb.tokens+now.Sub(tb.at).Seconds()*b.perSecond)
	} else {
		tb.tokens = b.burst
		if len(s.buckets) >= b.shardCap {
			s.makeRoom(b, now)
		}
	}
	tb.at = now
	ok := tb.tokens >= 1
	if ok {
		tb.tokens--
	}
	s.buckets[key] = tb
	if ok {
		return true, 0
	}
	return false, time.Duration((1 - tb.tokens) / b.perSecond * float64(time.Second))
}

// makeRoom drops the full buckets of a full shard, or one arbitrary entry
// when none is full.
func (s *rateShard) makeRoom(b *rateBuckets, now time.Time) {
	for key, tb := range s.buckets {
		if now.Sub(tb.at) >= b.fill {
			delete(s.buckets, key)
		}
	}
	for key := range s.buckets {
		if len(s.buckets) < b.shardCap {
			break
		}
		delete(s.buckets, key)
	}
}

func (b *rateBuckets) sweep(now time.Time) {
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		for key, tb := range s.buckets {
			if now.Sub(tb.at) >= b.fill {
				delete(s.buckets, key)
			}
		}
		s.mu.Unlock()
	}
}

// size is the number of addresses held (tests).
func (b *rateBuckets) size() int {
	n := 0
	for i := range b.shards {
		b.shards[i].mu.Lock()
		n += len(b.shards[i].buckets)
		b.shards[i].mu.Unlock()
	}
	return n
}

// clientIPs finds the client address of a request.
type clientIPs struct {
	preset   string // none, cloud_run or wechat_cloud_hosting (auto resolved)
	why      string // how the preset was chosen
	header   string // the header that names the client; "" when none is read
	trustAll bool   // every peer may set header: a platform's front end is the only way in
	trusted  []netip.Prefix
}

// newClientIPs applies a client_ip config; auto looks at the environment
// through getenv. why says how the preset was chosen, for the log.
func newClientIPs(cfg config.ClientIP, getenv func(string) string) (ips *clientIPs, why string) {
	ips = &clientIPs{preset: cfg.Preset}
	if ips.preset == config.ClientIPAuto {
		switch {
		case getenv("K_SERVICE") != "":
			ips.preset, why = config.ClientIPCloudRun, "auto: K_SERVICE is set"
		case getenv("CBR_ENV_ID") != "":
			ips.preset, why = config.ClientIPWeChat, "auto: CBR_ENV_ID is set"
		default:
			ips.preset, why = config.ClientIPNone, "auto: no platform found"
		}
	} else {
		why = "configured"
	}
	for _, p := range cfg.TrustedProxies {
		if prefix, ok := config.ParsePrefix(p); ok {
			ips.trusted = append(ips.trusted, prefix)
		}
	}
	switch ips.preset {
	case config.ClientIPCloudRun:
		ips.header, ips.trustAll = "X-Forwarded-For", true
	case config.ClientIPWeChat:
		ips.header, ips.trustAll = "X-Original-Forwarded-For", true
	default:
		if len(ips.trusted) > 0 {
			ips.header = "X-Forwarded-For"
		}
	}
	if cfg.Header != "" && (ips.trustAll || len(ips.trusted) > 0) {
		ips.header = cfg.Header
	}
	return ips, why
}

func (r *clientIPs) isTrusted(a netip.Addr) bool {
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// peerTrusted reports whether a connection from peer may name its client
// in the header.
func (r *clientIPs) peerTrusted(peer netip.Addr) bool {
	return r.header != "" && (r.trustAll || r.isTrusted(peer))
}

// resolve reads the header's values (in the order they came) from the
// right: the first address that is not a trusted proxy is the client. An
// entry that is no address ends the walk at the hop that wrote it; a header
// of trusted proxies only yields its leftmost one. A peer that may not set
// the header is the client itself.
func (r *clientIPs) resolve(peer netip.Addr, values [][]byte) netip.Addr {
	if !r.peerTrusted(peer) {
		return peer
	}
	client := peer
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for len(v) > 0 {
			var entry []byte
			if j := bytes.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				entry, v = v, nil
			}
			entry = bytes.TrimSpace(entry)
			if len(entry) == 0 {
				continue
			}
			a, ok := parseForwardedAddr(entry)
			if !ok {
				return client
			}
			client = a
			if !r.isTrusted(a) {
				return a
			}
		}
	}
	return client
}

// parseForwardedAddr reads one X-Forwarded-For entry: an address, with or
// without a port ("203.0.113.7:4711", "[2001:db8::1]:4711").
func parseForwardedAddr(b []byte) (netip.Addr, bool) {
	s := string(b)
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() && a.Zone() == "" {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}
