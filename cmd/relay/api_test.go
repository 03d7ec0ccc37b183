package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
)

const exampleAPIKey = "example-api-key-0123456789abcdef"

// TestAPIExample checks the shipped examples/api.yaml: relay check needs
// RELAY_API_KEY and accepts it with it; a relay serving it answers the API
// with that key only, and `relay publish` reaches a connected client.
func TestAPIExample(t *testing.T) {
	t.Setenv("RELAY_API_KEY", "")
	err := Run(context.Background(), []string{"check", "../../examples/api.yaml"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "api.keys[0]: is empty") {
		t.Fatalf("relay check with RELAY_API_KEY empty: %v; want api.keys[0] is empty", err)
	}
	os.Unsetenv("RELAY_API_KEY")
	err = Run(context.Background(), []string{"check", "../../examples/api.yaml"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "RELAY_API_KEY") {
		t.Fatalf("relay check without RELAY_API_KEY: %v; want a problem naming it", err)
	}
	t.Setenv("RELAY_API_KEY", exampleAPIKey)
	if err := Run(context.Background(), []string{"check", "../../examples/api.yaml"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("relay check examples/api.yaml: %v", err)
	}
	src, err := os.ReadFile("../../examples/api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, writeConfig(t, string(src)+"\nlisten: \"127.0.0.1:0\"\n"))
	if strings.Contains(p.logText(), exampleAPIKey) {
		t.Fatal("the API key is in the log")
	}

	d := fws.Dialer{HandshakeTimeout: 5 * time.Second}
	mini, _, err := d.Dial("ws://"+p.addr+"/socket?v=1&env=miniapp&token=pair-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mini.Close()
	_ = mini.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, b, err := mini.ReadMessage(); err != nil || !strings.Contains(string(b), `"relay.hello"`) {
		t.Fatalf("hello: %s, %v", b, err)
	}

	t.Setenv("RELAY_API_URL", "http://"+p.addr)
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"publish", "-token", "pair-1", "-type", "materialReady", "-data", `{"id":7}`}, &out, io.Discard); err != nil {
		t.Fatalf("relay publish: %v", err)
	}
	if !strings.HasPrefix(out.String(), "seq ") {
		t.Fatalf("relay publish printed %q", out.String())
	}
	_, b, err := mini.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Type, From string }
	if json.Unmarshal(b, &f) != nil || f.Type != "materialReady" || f.From != "server" {
		t.Fatalf("miniapp got %s", b)
	}

	// relay publish says what is wrong without a request, or with the relay's refusal.
	for _, tc := range []struct {
		args []string
		key  string
		want string
	}{
		{[]string{"-token", "pair-1"}, exampleAPIKey, "-token and -type are required"},
		{[]string{"-token", "pair-1", "-type", "x", "-data", "{"}, exampleAPIKey, "-data must be JSON"},
		{[]string{"-token", "pair-1", "-type", "x"}, "", "set RELAY_API_KEY"},
		{[]string{"-token", "pair-1", "-type", "x"}, "not-the-key-0123456789", "401 unauthorized"},
		{[]string{"-token", "pair-1", "-type", "relay.x"}, exampleAPIKey, "400 reserved_type"},
	} {
		t.Setenv("RELAY_API_KEY", tc.key)
		err := Run(context.Background(), append([]string{"publish"}, tc.args...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("relay publish %v: %v; want %q", tc.args, err, tc.want)
		}
	}

	// A relay without api.keys serves no API.
	off := startProcess(t, writeConfig(t, "listen: \"127.0.0.1:0\"\n"))
	req, _ := http.NewRequest(http.MethodGet, "http://"+off.addr+"/api/v1/stats", nil)
	req.Header.Set("Authorization", "Bearer "+exampleAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("API off: %d, want 404", resp.StatusCode)
	}
}

// TestServeAPIOnItsOwnListener: with api.listen the API is there and not
// beside the socket.
func TestServeAPIOnItsOwnListener(t *testing.T) {
	t.Setenv("RELAY_TEST_API_KEY", exampleAPIKey)
	p := startProcess(t, writeConfig(t, "listen: \"127.0.0.1:0\"\napi:\n  listen: \"127.0.0.1:0\"\n  keys: [\"${RELAY_TEST_API_KEY}\"]\n"))
	var addr string
	deadline := time.Now().Add(5 * time.Second)
	for addr == "" && time.Now().Before(deadline) {
		for _, line := range strings.Split(p.logText(), "\n") {
			var entry struct{ Message, Addr string }
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Message == "server API listening" {
				addr = entry.Addr
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if addr == "" {
		t.Fatalf("no API listener in the log:\n%s", p.logText())
	}
	status := func(url string) int {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+exampleAPIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("http://" + addr + "/api/v1/stats"); got != 200 {
		t.Errorf("API listener: %d, want 200", got)
	}
	if got := status("http://" + addr + "/socket"); got != 404 {
		t.Errorf("API listener /socket: %d, want 404", got)
	}
	if got := status("http://" + p.addr + "/api/v1/stats"); got != 404 {
		t.Errorf("relay listener /api/v1/stats: %d, want 404", got)
	}
}
