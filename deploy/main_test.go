// Package deploy holds relay's deployment artefacts (Cloud Run, WeChat Cloud
// Hosting, images, dashboards). No container runtime or registry is reachable
// where the tests run, so its tests check the artefacts as data: they parse,
// agree with relay's own configuration, and what they query or probe exists
// in a real relay process.
package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// root is the repository root, the build context of every Dockerfile.
const root = ".."

// testVersion is what the test build of relay is stamped with, as the
// Dockerfile stamps it with its VERSION build argument.
const testVersion = "v0.0.0-deploytest"

var relayBin string

// TestMain builds relay with the Dockerfile's build step (make build with
// BIN and VERSION) once; the tests run that binary.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "relay-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relayBin = filepath.Join(dir, "relay")
	build := exec.Command("make", "--no-print-directory", "-C", root, "build", "BIN="+relayBin, "VERSION="+testVersion)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "make build:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// relayProcess is a real relay serving a config file on a loopback port.
type relayProcess struct {
	cmd  *exec.Cmd
	addr string
	done chan error
	mu   sync.Mutex
	log  strings.Builder
}

// startRelay runs relay serve -c config with env added to the test's
// environment (PORT cleared) and waits for it to listen.
func startRelay(t *testing.T, config string, env ...string) *relayProcess {
	t.Helper()
	p := &relayProcess{cmd: exec.Command(relayBin, "serve", "-c", config), done: make(chan error, 1)}
	p.cmd.Env = append(append(os.Environ(), "PORT="), env...)
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
	addr := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			line := scanner.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			var entry struct{ Message, Addr string }
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Message == "relay listening" {
				addr <- entry.Addr
			}
		}
		p.done <- p.cmd.Wait()
	}()
	select {
	case p.addr = <-addr:
	case err := <-p.done:
		p.done <- err
		t.Fatalf("relay exited (%v); log:\n%s", err, p.logText())
	case <-time.After(15 * time.Second):
		t.Fatalf("relay did not start; log:\n%s", p.logText())
	}
	return p
}

func (p *relayProcess) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// get does a GET on the relay with the given headers and returns the status
// and body.
func (p *relayProcess) get(t *testing.T, path string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+p.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// loopbackConfig writes the repository's relay.yaml (the image's built-in
// config) with listen moved to a loopback ephemeral port.
func loopbackConfig(t *testing.T) string {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(root, "relay.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Replace(string(text), `listen: ":8080"`, `listen: "127.0.0.1:0"`, 1)
	if body == string(text) {
		t.Fatal(`relay.yaml: want listen: ":8080"`)
	}
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
