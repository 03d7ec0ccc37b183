package core

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
)

// testRelay is a real relay server on a loopback ephemeral port.
type testRelay struct {
	t    *testing.T
	srv  *Server
	url  string // ws://127.0.0.1:port/socket
	http string
}

func startRelay(t *testing.T, mutate ...func(*config.Config)) *testRelay {
	t.Helper()
	r := startRelayB(t, mutate...)
	r.t = t
	return r
}

// startRelayB starts a relay for a test or a benchmark.
func startRelayB(t testing.TB, mutate ...func(*config.Config)) *testRelay {
	t.Helper()
	return startRelayLog(t, nil, mutate...)
}

// startRelayLog starts a relay that logs to log (nil: nowhere, or the
// test's log with RELAY_TEST_LOG set).
func startRelayLog(t testing.TB, log *slog.Logger, mutate ...func(*config.Config)) *testRelay {
	t.Helper()
	cfg := config.Default()
	for _, m := range mutate {
		m(cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if os.Getenv("RELAY_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	bp := NewMemoryBackplane(cfg.History)
	srv := NewServer(cfg, log, bp)
	go func() { _ = srv.Serve(ln) }()
	r := &testRelay{srv: srv, url: "ws://" + ln.Addr().String() + cfg.Path, http: "http://" + ln.Addr().String()}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = bp.Close()
	})
	return r
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// client is a real WebSocket client.
type client struct {
	t    *testing.T
	conn *fws.Conn
	resp *http.Response
}

func (r *testRelay) dialURL(query string) string { return r.url + "?" + query }

func (r *testRelay) dial(query string, header ...http.Header) *client {
	r.t.Helper()
	c, err := r.tryDial(query, header...)
	if err != nil {
		r.t.Fatalf("dial %s: %v", query, err)
	}
	return c
}

func (r *testRelay) tryDial(query string, header ...http.Header) (*client, error) {
	var h http.Header
	if len(header) > 0 {
		h = header[0]
	}
	d := fws.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(r.dialURL(query), h)
	if err != nil {
		return &client{t: r.t, resp: resp}, err
	}
	c := &client{t: r.t, conn: conn, resp: resp}
	r.t.Cleanup(func() { _ = conn.Close() })
	return c, nil
}

// v1 dials a wire-v1 client and consumes its relay.hello.
func (r *testRelay) v1(token, env string) (*client, map[string]any) {
	r.t.Helper()
	c := r.dial("v=1&token=" + url.QueryEscape(token) + "&env=" + env)
	hello := c.readJSON()
	if hello["type"] != "relay.hello" {
		r.t.Fatalf("first frame is %v, want relay.hello", hello)
	}
	return c, hello["data"].(map[string]any)
}

func (c *client) send(text string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(fws.TextMessage, []byte(text)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *client) sendJSON(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.send(string(b))
}

// read returns the next text frame, failing the test after 5 s.
func (c *client) read() string {
	c.t.Helper()
	text, err := c.tryRead(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return text
}

func (c *client) tryRead(wait time.Duration) (string, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	typ, b, err := c.conn.ReadMessage()
	if err != nil {
		return "", err
	}
	if typ != fws.TextMessage {
		return "", errors.New("non-text frame")
	}
	return string(b), nil
}

func (c *client) readJSON() map[string]any {
	c.t.Helper()
	text := c.read()
	var m map[string]any
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		c.t.Fatalf("frame %q is not a JSON object: %v", text, err)
	}
	return m
}

// readType reads frames until one of type typ, failing on any other type
// not listed in skip.
func (c *client) readType(typ string, skip ...string) map[string]any {
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

// expectSilence fails if a frame arrives within wait. A read timeout
// leaves the connection unusable, so this is a connection's last read.
func (c *client) expectSilence(wait time.Duration) {
	c.t.Helper()
	if text, err := c.tryRead(wait); err == nil {
		c.t.Fatalf("unexpected frame %q", text)
	}
}

// expectHangup checks that the relay closes the TCP connection once the
// closing handshake is over.
func (c *client) expectHangup() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.conn.NetConn().Read(make([]byte, 1))
	var netErr net.Error
	switch {
	case err == nil:
		c.t.Fatalf("read %d more bytes after the close frame, want the connection closed", n)
	case errors.As(err, &netErr) && netErr.Timeout():
		c.t.Fatal("the relay did not close the connection within 5s of the close frame")
	}
}

// expectClose reads until the connection closes and checks the close code.
func (c *client) expectClose(code int) {
	c.t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := c.conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *fws.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("connection ended with %v, want close code %d", err, code)
		}
		if ce.Code != code {
			c.t.Fatalf("close code %d (%q), want %d", ce.Code, ce.Text, code)
		}
		return
	}
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
