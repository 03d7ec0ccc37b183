package core

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
)

func TestClientIPMatrix(t *testing.T) {
	const (
		xff  = "X-Forwarded-For"
		xoff = "X-Original-Forwarded-For"
	)
	loopback := []string{"127.0.0.0/8"}
	for _, tc := range []struct {
		name    string
		cfg     config.ClientIP
		env     map[string]string
		peer    string
		header  string   // the header the request carries
		values  []string // its lines, in order
		want    string
		wantWhy string
	}{
		{name: "none: the peer, whatever the header says", cfg: config.ClientIP{Preset: "none"},
			peer: "127.0.0.1", header: xff, values: []string{"203.0.113.7"}, want: "127.0.0.1"},
		{name: "trusted peer names the client", cfg: config.ClientIP{Preset: "none", TrustedProxies: loopback},
			peer: "127.0.0.1", header: xff, values: []string{"203.0.113.7"}, want: "203.0.113.7"},
		{name: "untrusted peer is ignored", cfg: config.ClientIP{Preset: "none", TrustedProxies: loopback},
			peer: "198.51.100.4", header: xff, values: []string{"203.0.113.7"}, want: "198.51.100.4"},
		{name: "spoofed leftmost entry is not the client", cfg: config.ClientIP{Preset: "none", TrustedProxies: loopback},
			peer: "127.0.0.1", header: xff, values: []string{"1.2.3.4, 203.0.113.7"}, want: "203.0.113.7"},
		{name: "trusted hops are skipped from the right", cfg: config.ClientIP{Preset: "none", TrustedProxies: []string{"127.0.0.0/8", "10.0.0.0/8"}},
			peer: "127.0.0.1", header: xff, values: []string{"198.51.100.1, 203.0.113.7, 10.0.0.5"}, want: "203.0.113.7"},
		{name: "only trusted hops: the leftmost", cfg: config.ClientIP{Preset: "none", TrustedProxies: []string{"127.0.0.0/8", "10.0.0.0/8"}},
			peer: "127.0.0.1", header: xff, values: []string{"10.0.0.1, 10.0.0.2"}, want: "10.0.0.1"},
		{name: "garbage stops at the hop that wrote it", cfg: config.ClientIP{Preset: "none", TrustedProxies: []string{"127.0.0.0/8", "10.0.0.0/8"}},
			peer: "127.0.0.1", header: xff, values: []string{"203.0.113.7, not-an-ip, 10.0.0.5"}, want: "10.0.0.5"},
		{name: "garbage from the peer: the peer", cfg: config.ClientIP{Preset: "none", TrustedProxies: loopback},
			peer: "127.0.0.1", header: xff, values: []string{"203.0.113.7, unknown"}, want: "127.0.0.1"},
		{name: "no header: the peer", cfg: config.ClientIP{Preset: "none", TrustedProxies: loopback},
			peer: "127.0.0.1", want: "127.0.0.1"},
		{name: "repeated header lines join, the last is rightmost", cfg: config.ClientIP{Preset: "none", TrustedProxies: loopback},
			peer: "127.0.0.1", header: xff, values: []string{"1.2.3.4", "203.0.113.7"}, want: "203.0.113.7"},
		{name: "ports and brackets", cfg: config.ClientIP{Preset: "none", TrustedProxies: loopback},
			peer: "127.0.0.1", header: xff, values: []string{"[2001:db8::1]:443"}, want: "2001:db8::1"},
		{name: "address with port", cfg: config.ClientIP{Preset: "none", TrustedProxies: loopback},
			peer: "127.0.0.1", header: xff, values: []string{"203.0.113.7:5000"}, want: "203.0.113.7"},
		{name: "IPv4-mapped entries are IPv4", cfg: config.ClientIP{Preset: "none", TrustedProxies: loopback},
			peer: "127.0.0.1", header: xff, values: []string{"::ffff:203.0.113.7"}, want: "203.0.113.7"},
		{name: "custom header", cfg: config.ClientIP{Preset: "none", TrustedProxies: loopback, Header: "X-Real-IP"},
			peer: "127.0.0.1", header: "X-Real-IP", values: []string{"203.0.113.7"}, want: "203.0.113.7"},
		{name: "custom header: X-Forwarded-For no longer read", cfg: config.ClientIP{Preset: "none", TrustedProxies: loopback, Header: "X-Real-IP"},
			peer: "127.0.0.1", header: xff, values: []string{"203.0.113.7"}, want: "127.0.0.1"},
		{name: "cloud_run: any peer, rightmost entry", cfg: config.ClientIP{Preset: "cloud_run"},
			peer: "169.254.8.129", header: xff, values: []string{"6.6.6.6, 203.0.113.7"}, want: "203.0.113.7"},
		{name: "cloud_run ignores X-Original-Forwarded-For", cfg: config.ClientIP{Preset: "cloud_run"},
			peer: "169.254.8.129", header: xoff, values: []string{"203.0.113.7"}, want: "169.254.8.129"},
		{name: "cloud_run behind a load balancer of your own", cfg: config.ClientIP{Preset: "cloud_run", TrustedProxies: []string{"34.120.0.1"}},
			peer: "169.254.8.129", header: xff, values: []string{"6.6.6.6, 203.0.113.7, 34.120.0.1"}, want: "203.0.113.7"},
		{name: "wechat_cloud_hosting reads X-Original-Forwarded-For", cfg: config.ClientIP{Preset: "wechat_cloud_hosting"},
			peer: "10.8.0.3", header: xoff, values: []string{"2001:db8:aa::7"}, want: "2001:db8:aa::7"},
		{name: "wechat_cloud_hosting ignores X-Forwarded-For", cfg: config.ClientIP{Preset: "wechat_cloud_hosting"},
			peer: "10.8.0.3", header: xff, values: []string{"203.0.113.7"}, want: "10.8.0.3"},
		{name: "auto on Cloud Run", cfg: config.ClientIP{Preset: "auto"}, env: map[string]string{"K_SERVICE": "relay"},
			peer: "169.254.8.129", header: xff, values: []string{"203.0.113.7"}, want: "203.0.113.7", wantWhy: "auto: K_SERVICE is set"},
		{name: "auto on WeChat Cloud Hosting", cfg: config.ClientIP{Preset: "auto"}, env: map[string]string{"CBR_ENV_ID": "prod-1a2b"},
			peer: "10.8.0.3", header: xoff, values: []string{"203.0.113.7"}, want: "203.0.113.7", wantWhy: "auto: CBR_ENV_ID is set"},
		{name: "auto elsewhere: the peer", cfg: config.ClientIP{Preset: "auto"},
			peer: "127.0.0.1", header: xff, values: []string{"203.0.113.7"}, want: "127.0.0.1", wantWhy: "auto: no platform found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ips, why := newClientIPs(tc.cfg, func(k string) string { return tc.env[k] })
			if tc.wantWhy != "" && why != tc.wantWhy {
				t.Errorf("why %q, want %q", why, tc.wantWhy)
			}
			var values [][]byte
			if strings.EqualFold(tc.header, ips.header) {
				for _, v := range tc.values {
					values = append(values, []byte(v))
				}
			}
			got := ips.resolve(netip.MustParseAddr(tc.peer), values)
			if got.String() != tc.want {
				t.Fatalf("client %s, want %s (preset %s, header %q)", got, tc.want, ips.preset, ips.header)
			}
		})
	}
}

// xffRelay starts a relay that trusts loopback peers to name their client
// in X-Forwarded-For.
func xffRelay(t *testing.T, mutate func(*config.Config)) *testRelay {
	return startRelay(t, func(c *config.Config) {
		c.ClientIP.TrustedProxies = []string{"127.0.0.0/8"}
		mutate(c)
	})
}

func from(ip string) http.Header { return http.Header{"X-Forwarded-For": {ip}} }

// refusedWith checks an HTTP refusal and its Retry-After.
func refusedWith(t *testing.T, c *client, err error, status int, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("upgraded, want %d %s", status, code)
	}
	if ra := c.resp.Header.Get("Retry-After"); ra == "" {
		t.Errorf("%d %s without Retry-After", status, code)
	} else if n, err := strconv.Atoi(ra); err != nil || n < 1 {
		t.Errorf("Retry-After %q, want whole seconds ≥ 1", ra)
	}
	checkJSONError(t, c.resp, status, code)
}

func TestPerIPConnectionRate(t *testing.T) {
	r := xffRelay(t, func(c *config.Config) {
		// Refills one upgrade in 1000 s: none within the test.
		c.Limits.ConnectionsPerSecondPerIP = 0.001
		c.Limits.ConnectionBurstPerIP = 3
	})
	for i := 0; i < 3; i++ {
		c := r.dial("token=rate&env=h5", from("203.0.113.7"))
		_ = c.conn.Close()
	}
	c, err := r.tryDial("token=rate&env=h5", from("203.0.113.7"))
	refusedWith(t, c, err, http.StatusTooManyRequests, "too_many_requests")
	// A forged leftmost entry does not make a new client.
	c, err = r.tryDial("token=rate&env=h5", from("198.51.100.1, 203.0.113.7"))
	refusedWith(t, c, err, http.StatusTooManyRequests, "too_many_requests")
	// Another client behind the same proxy has a bucket of its own.
	r.dial("token=rate&env=miniapp", from("203.0.113.8"))
	if n := counterValue(t, r, "relay_upgrades_refused_total", "too_many_requests"); n != 2 {
		t.Fatalf("relay_upgrades_refused_total{reason=too_many_requests} = %v, want 2", n)
	}
}

func TestPerIPRateIgnoresHeadersFromUntrustedPeers(t *testing.T) {
	sink := &logSink{}
	r := startRelayLog(t, slog.New(slog.NewJSONHandler(sink, nil)), func(c *config.Config) {
		c.ClientIP.Preset = config.ClientIPNone
		c.Limits.ConnectionsPerSecondPerIP = 0.001
		c.Limits.ConnectionBurstPerIP = 2
	})
	r.t = t
	// Each request claims another address; none is believed.
	for i := 0; i < 2; i++ {
		r.dial("token=spoof&env=h5", from(fmt.Sprintf("203.0.113.%d", i+1)))
	}
	c, err := r.tryDial("token=spoof&env=h5", from("203.0.113.99"))
	refusedWith(t, c, err, http.StatusTooManyRequests, "too_many_requests")
	// The operator hears of it once: a proxy of theirs is probably missing
	// from trusted_proxies.
	if n := strings.Count(sink.String(), "client_ip.trusted_proxies"); n != 1 {
		t.Fatalf("the untrusted forwarded header was logged %d times, want once; log:\n%s", n, sink)
	}
}

func TestPerIPConcurrentConnections(t *testing.T) {
	r := xffRelay(t, func(c *config.Config) { c.Limits.MaxConnectionsPerIP = 2 })
	a := r.dial("token=conc-a&env=h5", from("203.0.113.7"))
	r.dial("token=conc-b&env=h5", from("203.0.113.7"))
	c, err := r.tryDial("token=conc-c&env=h5", from("203.0.113.7"))
	refusedWith(t, c, err, http.StatusTooManyRequests, "too_many_connections")
	// IPv6 clients count by their /64.
	r.dial("token=v6-a&env=h5", from("2001:db8:1:2::a"))
	r.dial("token=v6-b&env=h5", from("2001:db8:1:2::b"))
	c, err = r.tryDial("token=v6-c&env=h5", from("2001:db8:1:2:ffff::c"))
	refusedWith(t, c, err, http.StatusTooManyRequests, "too_many_connections")
	r.dial("token=v6-d&env=h5", from("2001:db8:1:3::d"))
	// Once one closes, the address may connect again.
	_ = a.conn.Close()
	eventually(t, "a freed place", func() bool {
		c, err := r.tryDial("token=conc-d&env=h5", from("203.0.113.7"))
		if err == nil {
			_ = c.conn.Close()
		}
		return err == nil
	})
}

func TestGlobalUpgradeRate(t *testing.T) {
	r := xffRelay(t, func(c *config.Config) {
		c.Limits.ConnectionsPerSecondPerIP = 0
		c.Limits.UpgradesPerSecond = 0.001
		c.Limits.UpgradeBurst = 3
	})
	for i := 0; i < 3; i++ {
		r.dial("token=global&env=h5", from(fmt.Sprintf("203.0.113.%d", i+1)))
	}
	c, err := r.tryDial("token=global&env=h5", from("203.0.113.50"))
	refusedWith(t, c, err, http.StatusServiceUnavailable, "server_busy")
	if n := counterValue(t, r, "relay_upgrades_refused_total", "server_busy"); n != 1 {
		t.Fatalf("relay_upgrades_refused_total{reason=server_busy} = %v, want 1", n)
	}
}

// The per-address rate is checked first: one address's flood cannot spend
// the global budget of everyone else.
func TestPerIPRateShieldsTheGlobalRate(t *testing.T) {
	r := xffRelay(t, func(c *config.Config) {
		c.Limits.ConnectionsPerSecondPerIP = 0.001
		c.Limits.ConnectionBurstPerIP = 2
		c.Limits.UpgradesPerSecond = 0.001
		c.Limits.UpgradeBurst = 4
	})
	for i := 0; i < 20; i++ {
		c, err := r.tryDial("token=flood&env=h5", from("203.0.113.66"))
		if err == nil {
			_ = c.conn.Close()
		}
	}
	r.dial("token=other&env=h5", from("203.0.113.1"))
	r.dial("token=other&env=miniapp", from("203.0.113.2"))
}

func TestAuthSeesTheClientAddress(t *testing.T) {
	b := startConnectBackend(t)
	r := startAuthRelay(t, func(c *config.Config) {
		c.ClientIP.TrustedProxies = []string{"127.0.0.0/8"}
		c.Auth = config.Auth{Provider: config.AuthWebhook, Webhook: config.WebhookAuth{
			URL: b.url, Timeout: 2 * time.Second, CacheTTL: time.Hour, Secret: hookSecret}}
	})
	r.srv.hub.SetPipeline(pipelineFrom(t, "routes: [{match: {type: who}, handlers: [{handler: test-claims}]}]"))
	r.secrets = append(r.secrets, "ticket-a", "ticket-b")
	h5, _ := r.admit(t, tokenQuery("ticket-a", "h5"), from("198.51.100.1, 203.0.113.7"))
	mp, _ := r.admit(t, tokenQuery("ticket-b", "miniapp"), nil)
	h5.readType("relay.presence")
	h5.send(`{"type":"who"}`)
	if data, _ := json.Marshal(mp.readType("who")["data"]); string(data) != `{"ip":"203.0.113.7","user":"u-a"}` {
		t.Fatalf("the auth backend saw %s, want the client address 203.0.113.7", data)
	}
}

// TestAutoPresetFromTheEnvironment: with K_SERVICE set (as on Cloud Run)
// relay reads X-Forwarded-For from any peer, with CBR_ENV_ID (WeChat Cloud
// Hosting) X-Original-Forwarded-For.
func TestAutoPresetFromTheEnvironment(t *testing.T) {
	for _, tc := range []struct{ env, header string }{
		{"K_SERVICE", "X-Forwarded-For"},
		{"CBR_ENV_ID", "X-Original-Forwarded-For"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, "relay-test")
			r := startRelay(t, func(c *config.Config) { c.Limits.MaxConnectionsPerIP = 1 })
			hdr := func(ip string) http.Header { return http.Header{tc.header: {ip}} }
			r.dial("token=auto-a&env=h5", hdr("203.0.113.7"))
			c, err := r.tryDial("token=auto-b&env=h5", hdr("203.0.113.7"))
			refusedWith(t, c, err, http.StatusTooManyRequests, "too_many_connections")
			r.dial("token=auto-c&env=h5", hdr("203.0.113.8"))
		})
	}
}

func TestRateBucketsStayBounded(t *testing.T) {
	b := newRateBuckets(1, 5, 128)
	t0 := time.Now()
	for i := 0; i < 10000; i++ {
		addr := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if ok, _ := b.take(addr, t0); !ok {
			t.Fatalf("a new address was refused")
		}
	}
	if n := b.size(); n > 128 {
		t.Fatalf("%d addresses held, cap 128", n)
	}
	// An address that spent its burst stays limited, and says for how long.
	one := netip.MustParseAddr("192.0.2.1")
	for i := 0; i < 5; i++ {
		b.take(one, t0)
	}
	if ok, wait := b.take(one, t0); ok || wait <= 0 || wait > time.Second {
		t.Fatalf("sixth take: ok %v, wait %v; want refused for up to 1s", ok, wait)
	}
	if ok, _ := b.take(one, t0.Add(time.Second)); !ok {
		t.Fatalf("refused after a token refilled")
	}
	// Once full again, every address is forgotten.
	b.sweep(t0.Add(6 * time.Second))
	if n := b.size(); n != 0 {
		t.Fatalf("%d addresses held after all buckets filled up again", n)
	}
}

// rawConn opens a TCP connection to the relay that speaks no WebSocket.
func rawConn(t *testing.T, r *testRelay) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(r.http, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedWithin reads until c is closed by the relay (EOF or reset) and
// returns how long that took; it fails after wait.
func closedWithin(t *testing.T, c net.Conn, wait time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(wait))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the relay kept the connection open for %v", wait)
		}
		return time.Since(start)
	}
}

const upgradeRequest = "GET /socket?token=slow&env=h5 HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Padding: " +
	"................................................................................................\r\n\r\n"

func TestSilentConnectionIsClosedAfterTheHeaderTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	r := startRelay(t, func(c *config.Config) { c.Limits.HeaderTimeout = timeout })
	start := time.Now()
	c := rawConn(t, r)
	closedWithin(t, c, 20*time.Second)
	if took := time.Since(start); took < timeout {
		t.Fatalf("closed after %v, before the %v header timeout", took, timeout)
	}
	eventually(t, "the timeout counted", func() bool {
		return counterValue(t, r, "relay_pending_timeouts_total", "header") == 1
	})
	if p := r.srv.adm.pending.Load(); p != 0 {
		t.Fatalf("%d connections still counted as pending", p)
	}
}

// TestSlowlorisIsClosedAfterTheHeaderTimeout: a request trickled a byte at
// a time is cut at the header timeout, however steadily it progresses.
func TestSlowlorisIsClosedAfterTheHeaderTimeout(t *testing.T) {
	const timeout = 500 * time.Millisecond
	r := startRelay(t, func(c *config.Config) { c.Limits.HeaderTimeout = timeout })
	c := rawConn(t, r)
	sent := make(chan int, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		n := 0
		defer func() { sent <- n }()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for ; n < len(upgradeRequest); n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := c.Write([]byte{upgradeRequest[n]}); err != nil {
				return
			}
		}
	}()
	closedWithin(t, c, 20*time.Second)
	_ = c.Close()
	// The request needs 5 s at this pace; closed at 0.5 s, it was never whole.
	if n := <-sent; n >= len(upgradeRequest) {
		t.Fatalf("the whole request (%d bytes) was sent before the relay closed", n)
	}
	eventually(t, "the timeout counted", func() bool {
		return counterValue(t, r, "relay_pending_timeouts_total", "header") == 1
	})
}

func TestIdleKeepAliveIsClosedAfterTheIdleTimeout(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.Limits.IdleTimeout = 200 * time.Millisecond })
	c := rawConn(t, r)
	br := bufio.NewReader(c)
	for i := 0; i < 2; i++ { // kept alive between requests
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	closedWithin(t, c, 20*time.Second)
	eventually(t, "the timeout counted", func() bool {
		return counterValue(t, r, "relay_pending_timeouts_total", "idle") == 1
	})
}

// TestSessionOutlivesThePreUpgradeTimeouts: the header and idle timeouts
// end with the upgrade. A pair idle for many times those timeouts (the
// heartbeat keeps it alive) still exchanges messages.
func TestSessionOutlivesThePreUpgradeTimeouts(t *testing.T) {
	r := startRelay(t, func(c *config.Config) {
		c.Limits.HeaderTimeout = 100 * time.Millisecond
		c.Limits.IdleTimeout = 100 * time.Millisecond
		c.Heartbeat.Interval = 50 * time.Millisecond
		c.Heartbeat.Timeout = time.Minute
	})
	a, _ := r.v1("idle", "h5")
	b, _ := r.v1("idle", "miniapp")
	a.readType("relay.presence")
	time.Sleep(1500 * time.Millisecond) // 15 header timeouts
	if p := r.srv.adm.pending.Load(); p != 0 {
		t.Fatalf("%d upgraded connections still counted as pending", p)
	}
	a.send(`{"type":"still-here","data":1}`)
	b.readType("still-here")
	b.send(`{"type":"me-too","data":2}`)
	a.readType("me-too")
	for _, timeout := range []string{"header", "idle"} {
		if n := counterValue(t, r, "relay_pending_timeouts_total", timeout); n != 0 {
			t.Fatalf("relay_pending_timeouts_total{timeout=%s} = %v for upgraded sessions", timeout, n)
		}
	}
}

// TestPendingConnectionsCountTowardMaxConnections: connections that have
// not upgraded hold places of limits.max_connections; past it new ones are
// refused at the accept, and the places come back when the header timeout
// closes them.
func TestPendingConnectionsCountTowardMaxConnections(t *testing.T) {
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MaxConnections = 3
		c.Limits.HeaderTimeout = time.Second
	})
	for i := 0; i < 3; i++ {
		rawConn(t, r)
	}
	eventually(t, "3 connections accepted", func() bool { return r.srv.adm.conns.Load() == 3 })
	if p := r.srv.adm.pending.Load(); p != 3 {
		t.Fatalf("%d pending, want 3", p)
	}
	c, err := r.tryDial("token=full&env=h5")
	if err == nil {
		t.Fatal("upgraded past max_connections")
	}
	if c.resp != nil && c.resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("refused with %d, want 503 (or a closed connection)", c.resp.StatusCode)
	}
	if n := counterValue(t, r, "relay_upgrades_refused_total", "server_full"); n != 1 {
		t.Fatalf("relay_upgrades_refused_total{reason=server_full} = %v, want 1", n)
	}
	// The silent ones time out and make room.
	eventually(t, "places freed by the header timeout", func() bool { return r.srv.adm.conns.Load() == 0 })
	r.dial("token=full&env=h5")
}

// TestPerPeerConnectionsCountFromTheAccept: a peer that is the client
// itself cannot hold more than max_connections_per_ip connections, upgraded
// or not.
func TestPerPeerConnectionsCountFromTheAccept(t *testing.T) {
	r := startRelay(t, func(c *config.Config) {
		c.ClientIP.Preset = config.ClientIPNone
		c.Limits.MaxConnectionsPerIP = 2
	})
	rawConn(t, r)
	rawConn(t, r)
	eventually(t, "2 connections accepted", func() bool { return r.srv.adm.conns.Load() == 2 })
	c, err := r.tryDial("token=peer&env=h5")
	if err == nil {
		t.Fatal("a third connection from the address upgraded")
	}
	if c.resp != nil && c.resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("refused with %d, want 429 (or a closed connection)", c.resp.StatusCode)
	}
	if n := counterValue(t, r, "relay_upgrades_refused_total", "too_many_connections"); n != 1 {
		t.Fatalf("relay_upgrades_refused_total{reason=too_many_connections} = %v, want 1", n)
	}
}

// TestDefaultsAdmitABurstOfClients: the built-in limits let a few hundred
// clients of one address connect at once (a NAT reconnecting together).
func TestDefaultsAdmitABurstOfClients(t *testing.T) {
	r := startRelay(t)
	d := fws.Dialer{HandshakeTimeout: 10 * time.Second}
	for i := 0; i < 150; i++ {
		c, _, err := d.Dial(r.dialURL(fmt.Sprintf("token=burst-%d&env=h5", i)), nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
	}
}
