package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/core"
)

// A relay with JSON logs and a project id: the log lines about a session
// whose upgrade request carried X-Cloud-Trace-Context carry Cloud Logging's
// trace fields; those about a session without the header carry none. The
// project comes from GOOGLE_CLOUD_PROJECT, or from log.trace_project.
func TestSessionLogLinesCarryTheCloudTrace(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, tc := range []struct {
		name, env, config, project string
	}{
		{"from GOOGLE_CLOUD_PROJECT", "env-project", "", "env-project"},
		{"from log.trace_project", "", "  trace_project: cfg-project\n", "cfg-project"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOOGLE_CLOUD_PROJECT", tc.env)
			p := startProcess(t, writeConfig(t, "listen: \"127.0.0.1:0\"\nlog:\n  level: debug\n  format: json\n"+tc.config))
			dial := func(token, env string, header http.Header) {
				c, _, err := fws.DefaultDialer.Dial("ws://"+p.addr+"/socket?v=1&token="+token+"&env="+env, header)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := c.ReadMessage(); err != nil { // relay.hello
					t.Fatal(err)
				}
				// Refused (logged at info) and answered with relay.error.
				if err := c.WriteMessage(fws.TextMessage, []byte("not json")); err != nil {
					t.Fatal(err)
				}
				if _, _, err := c.ReadMessage(); err != nil {
					t.Fatal(err)
				}
				c.Close()
			}
			dial("traced", "h5", http.Header{"X-Cloud-Trace-Context": {traceID + "/1311768467294899695;o=1"}})
			dial("plain", "miniapp", nil)

			deadline := time.Now().Add(10 * time.Second)
			for strings.Count(p.logText(), `"message":"session closed"`) < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("no session closed lines; log:\n%s", p.logText())
				}
				time.Sleep(10 * time.Millisecond)
			}
			lines := map[string][]string{} // env → messages of its lines
			for _, line := range strings.Split(strings.TrimSpace(p.logText()), "\n") {
				var entry map[string]any
				if err := json.Unmarshal([]byte(line), &entry); err != nil {
					t.Fatalf("log line is not JSON: %s", line)
				}
				env, _ := entry["env"].(string)
				switch env {
				case "h5":
					want := map[string]any{
						"logging.googleapis.com/trace":         "projects/" + tc.project + "/traces/" + traceID,
						"logging.googleapis.com/spanId":        "1234567890abcdef",
						"logging.googleapis.com/trace_sampled": true,
					}
					for k, v := range want {
						if entry[k] != v {
							t.Errorf("line of the traced session has %s = %v, want %v: %s", k, entry[k], v, line)
						}
					}
				case "miniapp":
					for k := range entry {
						if strings.HasPrefix(k, "logging.googleapis.com/") {
							t.Errorf("line of the session without the header has %s: %s", k, line)
						}
					}
				default:
					continue
				}
				if entry["severity"] == nil || entry["message"] == nil {
					t.Errorf("line without severity or message: %s", line)
				}
				lines[env] = append(lines[env], entry["message"].(string))
			}
			for _, env := range []string{"h5", "miniapp"} {
				for _, msg := range []string{"session open", "message refused", "session closed"} {
					if !strings.Contains(strings.Join(lines[env], "|"), msg) {
						t.Errorf("%s: no %q line among %q", env, msg, lines[env])
					}
				}
			}
		})
	}
}

// The project taken from GOOGLE_CLOUD_PROJECT is not a change of the file:
// a reload of the same file does not warn that log settings need a restart.
func TestReloadKeepsTheTraceProjectOfTheEnvironment(t *testing.T) {
	t.Setenv("GOOGLE_CLOUD_PROJECT", "env-project")
	path := writeConfig(t, "listen: \"127.0.0.1:0\"\n")
	cfg, _, err := loadConfig(context.Background(), path, true)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	applyTraceProject(cfg, log)
	if cfg.Log.TraceProject != "env-project" {
		t.Fatalf("log.trace_project %q, want the environment's env-project", cfg.Log.TraceProject)
	}
	bp := core.NewMemoryBackplane(cfg.History)
	srv := core.NewServer(cfg, log, bp)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = bp.Close()
	})
	(&reloader{path: path, current: cfg, log: log, srv: srv}).reload(context.Background(), "test")
	switch out := buf.String(); {
	case !strings.Contains(out, "config reloaded"):
		t.Fatalf("no reload logged: %s", out)
	case strings.Contains(out, "only after a restart"):
		t.Fatalf("a reload of the same file warns of changed settings: %s", out)
	}
}
