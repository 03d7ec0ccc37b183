package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	_ "github.com/pairrelay/relay/handlers"
)

// Binaries built once by TestMain.
var bin struct {
	testplugin string // plugins/internal/testplugin
	enricher   string // plugins/examples/enricher
	relay      string // cmd/relay
}

// nodeEnricher is the Node example's directory (absolute).
var nodeEnricher string

// TestMain builds the test plugin, the Go example and the relay binary, and
// installs the Node example's packages (npm ci) when they are missing: no
// test here is skipped for want of a tool.
func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "plugins tests:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "relay-plugins-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	bin.testplugin = filepath.Join(dir, "testplugin")
	bin.enricher = filepath.Join(dir, "enricher")
	bin.relay = filepath.Join(dir, "relay")
	builds := [][2]string{{bin.testplugin, "./internal/testplugin"}, {bin.enricher, "./examples/enricher"}, {bin.relay, "../cmd/relay"}}
	for _, b := range builds {
		if err := run(5*time.Minute, "", "go", "build", "-o", b[0], b[1]); err != nil {
			return 0, fmt.Errorf("go build %s: %w", b[1], err)
		}
	}
	if nodeEnricher, err = filepath.Abs("examples/node-enricher"); err != nil {
		return 0, err
	}
	if !nodeModulesCurrent(nodeEnricher) {
		if err := run(5*time.Minute, nodeEnricher, "npm", "ci", "--no-audit", "--no-fund"); err != nil {
			return 0, fmt.Errorf("npm ci in %s: %w", nodeEnricher, err)
		}
	}
	code := m.Run()
	StopAll()
	return code, nil
}

// nodeModulesCurrent reports whether dir's node_modules hold the Node SDK
// as it is in this checkout: the example installs plugins/sdk-node as a
// copy (install-links), which an edit of the SDK leaves stale.
func nodeModulesCurrent(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@grpc", "grpc-js", "package.json")); err != nil {
		return false
	}
	for _, f := range []string{"index.js", "package.json", "proto/relayplugin/v1/plugin.proto"} {
		want, err := os.ReadFile(filepath.Join("sdk-node", f))
		if err != nil {
			return false
		}
		got, err := os.ReadFile(filepath.Join(dir, "node_modules", "@pairrelay", "plugin-sdk", f))
		if err != nil || !bytes.Equal(got, want) {
			return false
		}
	}
	return true
}

// run runs a command with a time limit, its output going to stderr.
func run(limit time.Duration, dir, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// yamlFor replaces TESTPLUGIN, ENRICHER and NODE_ENRICHER in a config.
func yamlFor(body string) string {
	return strings.NewReplacer("TESTPLUGIN", bin.testplugin, "ENRICHER", bin.enricher,
		"NODE_ENRICHER", filepath.Join(nodeEnricher, "index.js")).Replace(body)
}

// writeConfig writes a relay.yaml into a fresh directory.
func writeConfig(t testing.TB, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(yamlFor(body)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// logBuffer collects a test relay's log.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLog(t testing.TB) (*slog.Logger, *logBuffer) {
	logs := &logBuffer{}
	var w io.Writer = logs
	if os.Getenv("RELAY_TEST_LOG") != "" {
		w = io.MultiWriter(logs, os.Stderr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay log:\n%s", logs.String())
		}
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), logs
}

// buildPipeline builds the pipeline of a config, as relay check and relay
// serve do, and closes it when the test ends.
func buildPipeline(t testing.TB, body string) (*core.Pipeline, *logBuffer, error) {
	t.Helper()
	return buildPipelineLog(t, writeConfig(t, body))
}

// buildPipelineAt builds the pipeline of the config file at path.
func buildPipelineAt(t testing.TB, path string) (*core.Pipeline, error) {
	t.Helper()
	p, _, err := buildPipelineLog(t, path)
	return p, err
}

func buildPipelineLog(t testing.TB, path string) (*core.Pipeline, *logBuffer, error) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log, logs := newLog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := core.BuildPipeline(ctx, cfg, path, log, nil)
	if err == nil {
		t.Cleanup(p.Close)
	}
	return p, logs, err
}

// testRelay is a relay server on a loopback port, running a config's pipeline.
type testRelay struct {
	t    testing.TB
	url  string
	logs *logBuffer
}

func startRelay(t testing.TB, body string) *testRelay {
	t.Helper()
	path := writeConfig(t, body)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log, logs := newLog(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bp := core.NewMemoryBackplane(cfg.History)
	srv := core.NewServer(cfg, log, bp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := core.BuildPipeline(ctx, cfg, path, log, srv.Metrics())
	if err != nil {
		ln.Close()
		bp.Close()
		t.Fatalf("build pipeline: %v", err)
	}
	srv.Hub().SetPipeline(p)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
		srv.Hub().SetPipeline(&core.Pipeline{}).Close()
		_ = bp.Close()
	})
	return &testRelay{t: t, url: "ws://" + ln.Addr().String() + cfg.Path, logs: logs}
}

// client is a wire-v1 WebSocket client.
type client struct {
	t    testing.TB
	conn *fws.Conn
	wmu  sync.Mutex
}

func (r *testRelay) dial(token, env string) *client {
	r.t.Helper()
	return dialURL(r.t, r.url, token, env)
}

func dialURL(t testing.TB, base, token, env string) *client {
	t.Helper()
	d := fws.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial(base+"?v=1&token="+url.QueryEscape(token)+"&env="+env, nil)
	if err != nil {
		t.Fatalf("dial %s/%s: %v", token, env, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &client{t: t, conn: conn}
	if hello := c.read(5 * time.Second); hello["type"] != "relay.hello" {
		t.Fatalf("first frame %v, want relay.hello", hello)
	}
	return c
}

func (c *client) send(v map[string]any) {
	c.t.Helper()
	if err := c.trySend(v); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *client) trySend(v map[string]any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.conn.WriteMessage(fws.TextMessage, b)
}

// read returns the next frame that is not presence or an ack, failing the
// test after wait.
func (c *client) read(wait time.Duration) map[string]any {
	c.t.Helper()
	m, err := c.tryRead(wait)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

func (c *client) tryRead(wait time.Duration) (map[string]any, error) {
	deadline := time.Now().Add(wait)
	for {
		_ = c.conn.SetReadDeadline(deadline)
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("frame %q: %v", b, err)
		}
		if m["type"] == "relay.presence" || m["type"] == "relay.ack" {
			continue
		}
		return m, nil
	}
}

func dataOf(m map[string]any) map[string]any {
	d, _ := m["data"].(map[string]any)
	return d
}

// pluginPid is the pid of the running process of the plugin named name.
func pluginPid(name string) int {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	for _, p := range registry.procs {
		if p.def.Name == name {
			return p.pid()
		}
	}
	return 0
}

// children lists the pids whose parent is pid.
func children(pid int) []int {
	var kids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			kids = append(kids, child)
		}
	}
	return kids
}

// waitFor polls cond until it holds or limit passes.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
