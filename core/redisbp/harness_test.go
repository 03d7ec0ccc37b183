package redisbp_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
)

// node is one in-process relay instance on a loopback port with its own
// Redis backplane.
type node struct {
	name string
	srv  *core.Server
	bp   *redisbp.Backplane
	gate *gatedBackplane
	ln   *trackingListener
	url  string // ws://127.0.0.1:port/socket
}

// cluster starts n relay instances sharing the Redis at redis.
func cluster(t testing.TB, redis *redistest.Server, n int, opts redisbp.Options, mutate ...func(*config.Config)) []*node {
	t.Helper()
	prefix := newPrefix(t)
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = startNode(t, redis, prefix, string(rune('A'+i)), opts, mutate...)
	}
	return nodes
}

func startNode(t testing.TB, redis *redistest.Server, prefix, name string, opts redisbp.Options, mutate ...func(*config.Config)) *node {
	t.Helper()
	cfg := config.Default()
	cfg.Limits.MessagesPerSecond = 0
	cfg.Backplane = config.Backplane{Type: config.BackplaneRedis, URL: redis.URL(), Prefix: prefix}
	for _, m := range mutate {
		m(cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("RELAY_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(testWriter{t, name}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	opts.History = cfg.History
	opts.Log = log
	bp, err := redisbp.New(context.Background(), cfg.Backplane, opts)
	if err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &trackingListener{Listener: raw}
	gate := newGate(bp)
	srv := core.NewServer(cfg, log, gate)
	go func() { _ = srv.Serve(ln) }()
	nd := &node{name: name, srv: srv, bp: bp, gate: gate, ln: ln, url: "ws://" + raw.Addr().String() + cfg.Path}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = bp.Close()
	})
	return nd
}

// kill makes the instance vanish as a SIGKILL would, as far as clients and
// the other instances can tell: the backplane stops answering first (so
// nothing it holds is given up: no Leave, no more claim refreshes), then
// the listener and every connection are cut without a close handshake,
// then the backplane is closed. Calls into the backplane made meanwhile
// fail only after their connection is gone, so no client hears of them.
func (n *node) kill() {
	n.gate.freeze()
	_ = n.ln.Close()
	n.ln.cutAll()
	_ = n.bp.Close()
	n.gate.release()
}

type testWriter struct {
	t    testing.TB
	name string
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(w.name + ": " + strings.TrimSpace(string(p)))
	return len(p), nil
}

// trackingListener remembers the connections it accepted, so that a test
// can cut them as a dying process would.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackingListener) cutAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		if tcp, ok := c.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0) // reset, as the kernel does for a killed process
		}
		_ = c.Close()
	}
	l.conns = nil
}

var errDead = errors.New("instance killed")

// gatedBackplane passes calls through until frozen; frozen calls wait,
// and after release every call fails.
type gatedBackplane struct {
	core.Backplane
	mu     sync.Mutex
	frozen chan struct{} // closed on release
	dead   bool
}

func newGate(bp core.Backplane) *gatedBackplane { return &gatedBackplane{Backplane: bp} }

func (g *gatedBackplane) freeze() {
	g.mu.Lock()
	g.frozen = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedBackplane) release() {
	g.mu.Lock()
	g.dead = true
	close(g.frozen)
	g.mu.Unlock()
}

// pass reports whether a call may go through, waiting while frozen.
func (g *gatedBackplane) pass() bool {
	g.mu.Lock()
	frozen, dead := g.frozen, g.dead
	g.mu.Unlock()
	if dead {
		return false
	}
	if frozen != nil {
		<-frozen
		return false
	}
	return true
}

func (g *gatedBackplane) Publish(ctx context.Context, batch []*core.Message) (core.PublishResult, error) {
	if !g.pass() {
		return core.PublishResult{}, errDead
	}
	return g.Backplane.Publish(ctx, batch)
}

func (g *gatedBackplane) PublishBatches(ctx context.Context, batches [][]*core.Message, results []core.BatchResult) {
	if !g.pass() {
		for i := range results {
			results[i] = core.BatchResult{Err: errDead}
		}
		return
	}
	g.Backplane.(core.BatchPublisher).PublishBatches(ctx, batches, results)
}

func (g *gatedBackplane) Seen(ctx context.Context, token, from, id string) (uint64, bool, error) {
	if !g.pass() {
		return 0, false, errDead
	}
	return g.Backplane.Seen(ctx, token, from, id)
}

func (g *gatedBackplane) Subscribe(token string, d core.Deliverer) func() {
	g.mu.Lock()
	stopped := g.frozen != nil
	g.mu.Unlock()
	if stopped {
		return func() {}
	}
	return g.Backplane.Subscribe(token, d)
}

func (g *gatedBackplane) Join(ctx context.Context, req core.JoinRequest) (core.JoinResult, error) {
	if !g.pass() {
		return core.JoinResult{}, errDead
	}
	return g.Backplane.Join(ctx, req)
}

func (g *gatedBackplane) Leave(ctx context.Context, token, env, session string) error {
	if !g.pass() {
		return errDead
	}
	return g.Backplane.Leave(ctx, token, env, session)
}

func (g *gatedBackplane) History(ctx context.Context, token string, since uint64, limit int) (core.HistoryResult, error) {
	if !g.pass() {
		return core.HistoryResult{}, errDead
	}
	return g.Backplane.History(ctx, token, since, limit)
}

func (g *gatedBackplane) Close() error { return nil } // the node closes the real one

// wsClient is a WebSocket test client.
type wsClient struct {
	t    testing.TB
	conn *fws.Conn
}

func dial(t testing.TB, relayURL, query string) *wsClient {
	t.Helper()
	d := fws.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial(relayURL+"?"+query, nil)
	if err != nil {
		t.Fatalf("dial %s?%s: %v", relayURL, query, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &wsClient{t: t, conn: conn}
}

// v1 connects a wire-v1 client and returns it with its relay.hello data.
func v1(t testing.TB, n *node, token, env string) (*wsClient, map[string]any) {
	t.Helper()
	c := dial(t, n.url, "v=1&token="+url.QueryEscape(token)+"&env="+env)
	hello := c.readJSON()
	if hello["type"] != "relay.hello" {
		t.Fatalf("first frame %v, want relay.hello", hello)
	}
	return c, hello["data"].(map[string]any)
}

func (c *wsClient) send(text string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(fws.TextMessage, []byte(text)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *wsClient) tryRead(wait time.Duration) (string, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	_, b, err := c.conn.ReadMessage()
	return string(b), err
}

func (c *wsClient) readJSON() map[string]any {
	c.t.Helper()
	text, err := c.tryRead(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		c.t.Fatalf("frame %q: %v", text, err)
	}
	return m
}

// readType reads until a frame of type typ, failing on types not in skip.
func (c *wsClient) readType(typ string, skip ...string) map[string]any {
	c.t.Helper()
	for {
		m := c.readJSON()
		if m["type"] == typ {
			return m
		}
		ok := false
		for _, s := range skip {
			ok = ok || m["type"] == s
		}
		if !ok {
			c.t.Fatalf("got %v while waiting for %s", m, typ)
		}
	}
}

// expectClose reads until the connection closes with code.
func (c *wsClient) expectClose(code int) {
	c.t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.conn.ReadMessage()
		if err == nil {
			c.t.Logf("frame before close: %s", b)
			continue
		}
		var ce *fws.CloseError
		if !errors.As(err, &ce) || ce.Code != code {
			c.t.Fatalf("connection ended with %v, want close code %d", err, code)
		}
		return
	}
}

func data(m map[string]any) map[string]any {
	d, _ := m["data"].(map[string]any)
	return d
}

// Ready forwards the real backplane's readiness, as /readyz asks for it.
func (g *gatedBackplane) Ready() bool {
	r, ok := g.Backplane.(interface{ Ready() bool })
	return !ok || r.Ready()
}

// Describe and Collect forward the real backplane's series, as relay's
// server registers them.
func (g *gatedBackplane) Describe(ch chan<- *prometheus.Desc) {
	g.Backplane.(prometheus.Collector).Describe(ch)
}

func (g *gatedBackplane) Collect(ch chan<- prometheus.Metric) {
	g.Backplane.(prometheus.Collector).Collect(ch)
}
