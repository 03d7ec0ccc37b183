package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
)

var relayBin string

// TestMain builds the real relay binary once; the process tests run it.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "relay-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relayBin = filepath.Join(dir, "relay")
	build := exec.Command("go", "build", "-o", relayBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building relay:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// relayProcess is a running relay binary and what it logged.
type relayProcess struct {
	cmd  *exec.Cmd
	addr string
	mu   sync.Mutex
	log  bytes.Buffer
	done chan error
}

func startProcess(t *testing.T, configPath string) *relayProcess {
	t.Helper()
	p := &relayProcess{cmd: exec.Command(relayBin, "serve", "-c", configPath), done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), "PORT=")
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	addrCh := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			line := scanner.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			var entry struct{ Message, Addr string }
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Message == "relay listening" {
				addrCh <- entry.Addr
			}
		}
		p.done <- p.cmd.Wait()
	}()
	select {
	case p.addr = <-addrCh:
	case <-time.After(10 * time.Second):
		t.Fatalf("relay did not start; log:\n%s", p.logText())
	}
	return p
}

func (p *relayProcess) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func TestSIGTERMClosesEverySessionWith1012AndExitsInTime(t *testing.T) {
	const secretToken = "secret-token-must-not-be-logged"
	p := startProcess(t, writeConfig(t, `
listen: "127.0.0.1:0"
log: {level: debug}
`))
	const sessions = 200
	conns := make([]*fws.Conn, 0, sessions)
	for i := 0; i < sessions/2; i++ {
		for _, env := range []string{"h5", "miniapp"} {
			query := fmt.Sprintf("token=%s-%d&env=%s", secretToken, i, env)
			if i%2 == 0 {
				query += "&v=1"
			}
			c, _, err := fws.DefaultDialer.Dial("ws://"+p.addr+"/socket?"+query, nil)
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			defer c.Close()
			conns = append(conns, c)
		}
	}
	// Every session is live: a message crosses each pair.
	for i := 0; i < len(conns); i += 2 {
		if err := conns[i].WriteMessage(fws.TextMessage, []byte(`{"type":"hi"}`)); err != nil {
			t.Fatal(err)
		}
	}

	codes := make(chan int, sessions)
	for _, c := range conns {
		go func(c *fws.Conn) {
			_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
			for {
				_, _, err := c.ReadMessage()
				if err == nil {
					continue
				}
				var ce *fws.CloseError
				if errors.As(err, &ce) {
					codes <- ce.Code
				} else {
					codes <- -1
				}
				return
			}
		}(c)
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err // for Cleanup
		if err != nil {
			t.Fatalf("relay exited with %v; log:\n%s", err, p.logText())
		}
	case <-time.After(8 * time.Second):
		t.Fatalf("relay still running 8s after SIGTERM")
	}
	t.Logf("relay exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	for i := 0; i < sessions; i++ {
		if code := <-codes; code != 1012 {
			t.Fatalf("a client saw close %d, want 1012", code)
		}
	}

	log := p.logText()
	if strings.Contains(log, secretToken) {
		t.Fatal("the log contains a token in clear")
	}
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		if _, ok := entry["severity"]; !ok {
			t.Fatalf("log line without severity: %s", line)
		}
	}
	if !strings.Contains(log, `"token":"`) {
		t.Fatal("session log lines carry no token hash")
	}
}

func TestServeRunsOnBuiltInDefaultsWithPORT(t *testing.T) {
	t.Chdir(t.TempDir()) // no relay.yaml here
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	t.Setenv("PORT", fmt.Sprint(port))

	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- Run(ctx, []string{"serve"}, io.Discard, &stderr) }()

	base := fmt.Sprintf("127.0.0.1:%d", port)
	var h5 *fws.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		h5, _, err = fws.DefaultDialer.Dial("ws://"+base+"/socket?token=t&env=h5", nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay on defaults not reachable: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer h5.Close()
	mini, _, err := fws.DefaultDialer.Dial("ws://"+base+"/socket?token=t&env=miniapp", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mini.Close()
	time.Sleep(50 * time.Millisecond)
	if err := h5.WriteMessage(fws.TextMessage, []byte(`{"type":"init"}`)); err != nil {
		t.Fatal(err)
	}
	_ = mini.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, got, err := mini.ReadMessage(); err != nil || string(got) != `"{\"type\":\"init\"}"` {
		t.Fatalf("seed default: got %q, %v", got, err)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get("http://" + base + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, resp, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if path == "/metrics" && !strings.Contains(string(body), `relay_connections{env="h5"} 1`) {
			t.Fatalf("metrics lack the h5 connection:\n%s", body)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	if !strings.Contains(stderr.String(), `"config":"built-in defaults"`) ||
		!strings.Contains(stderr.String(), "no config file: running on the built-in defaults") {
		t.Fatalf("log does not say it ran on defaults:\n%s", stderr.String())
	}
}

func TestCheckShippedConfigAndBrokenOnes(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"check", "../../relay.yaml"}, &out, io.Discard); err != nil {
		t.Fatalf("shipped relay.yaml: %v", err)
	}
	if !strings.Contains(out.String(), "ok") {
		t.Fatalf("check output %q", out.String())
	}
	broken := writeConfig(t, "wire: sede\nlimits:\n  send_queue: 0\n  max_frame_size: 10\n")
	err := Run(context.Background(), []string{"check", "-c", broken}, io.Discard, io.Discard)
	if err == nil {
		t.Fatal("broken config passed")
	}
	for _, want := range []string{"relay.yaml:4", "limits.max_frame_size"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if err := Run(context.Background(), []string{"check", "-c", "/nonexistent/relay.yaml"}, io.Discard, io.Discard); err == nil {
		t.Fatal("a named config that does not exist passed")
	}
}

func TestCheckBinaryExitCode(t *testing.T) {
	broken := writeConfig(t, "wire: sede\non_duplicate: maybe\n")
	out, err := exec.Command(relayBin, "check", broken).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("relay check on a broken file: err %v, output %s", err, out)
	}
	for _, want := range []string{"relay.yaml:1: wire", "relay.yaml:2: on_duplicate"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if out, err := exec.Command(relayBin, "version").Output(); err != nil || !strings.HasPrefix(string(out), "relay ") {
		t.Fatalf("version: %q %v", out, err)
	}
}

func TestUnknownCommand(t *testing.T) {
	if err := Run(context.Background(), []string{"bogus"}, io.Discard, io.Discard); err == nil {
		t.Fatal("unknown command accepted")
	}
	if err := Run(context.Background(), nil, io.Discard, io.Discard); err == nil {
		t.Fatal("no command accepted")
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var updateGolden = flag.Bool("update", false, "rewrite testdata/check/*.err with the output relay check gives now")

// TestCheckGolden runs relay check on each testdata/check/*.yaml, in process
// and as the binary, and compares the whole error with the .err file beside
// it: the file's own
// problems, unknown handler names and the provisioning errors of the
// handlers come in one list, in file order.
func TestCheckGolden(t *testing.T) {
	t.Setenv("PORT", "")
	files, err := filepath.Glob("testdata/check/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/check/*.yaml: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			err := Run(context.Background(), []string{"check", "-c", file}, io.Discard, io.Discard)
			if err == nil {
				t.Fatalf("relay check %s passed; want problems", file)
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".err"
			if *updateGolden {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./cmd/relay -run TestCheckGolden -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("relay check %s:\n%s\nwant (%s):\n%s", file, got, golden, want)
			}
			// The binary prints the same list and exits with 1.
			out, err := exec.Command(relayBin, "check", "-c", file).CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("relay check %s: err %v, want exit status 1", file, err)
			}
			if string(out) != "relay: "+string(want) {
				t.Errorf("relay check %s printed:\n%s\nwant:\nrelay: %s", file, out, want)
			}
		})
	}
}

// relay serve refuses a broken file with the same full list as relay check,
// before it listens.
func TestServeRefusesWithEveryProblem(t *testing.T) {
	t.Setenv("PORT", "")
	const file = "testdata/check/every_stage_handlers.yaml"
	want, err := os.ReadFile(strings.TrimSuffix(file, ".yaml") + ".err")
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), []string{"serve", "-c", file}, io.Discard, io.Discard)
	if err == nil || err.Error()+"\n" != string(want) {
		t.Fatalf("relay serve: %v\nwant:\n%s", err, want)
	}
}
