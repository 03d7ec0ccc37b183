package plugins

import (
	"bytes"
	"encoding/json"
	"github.com/pairrelay/relay/internal/procstate"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const twoPlugins = `
listen: 127.0.0.1:0
log: {level: debug}
plugins:
  - name: tp
    command: TESTPLUGIN
  - name: node
    command: node
    args: [NODE_ENRICHER]
routes:
  - match: {type: addMaterial}
    handlers: [{handler: plugin, plugin: node}]
  - match: {type: "*"}
    handlers: [{handler: plugin, plugin: tp}]
`

// TestCloseStopsPlugins: closing the last pipeline that uses a plugin
// stops its process before Close returns.
func TestCloseStopsPlugins(t *testing.T) {
	p, _, err := buildPipeline(t, twoPlugins)
	if err != nil {
		t.Fatal(err)
	}
	pids := []int{pluginPid("tp"), pluginPid("node")}
	for _, pid := range pids {
		if !procstate.Alive(pid) {
			t.Fatalf("plugin %d not running: %v", pid, pids)
		}
	}
	start := time.Now()
	p.Close()
	for _, pid := range pids {
		if procstate.Alive(pid) {
			t.Errorf("plugin %d still alive after Close", pid)
		}
	}
	t.Logf("Close took %s", time.Since(start).Round(time.Millisecond))
}

// relayBinary is a running relay serve.
type relayBinary struct {
	cmd    *exec.Cmd
	addr   string
	mu     sync.Mutex
	log    strings.Builder
	waited chan struct{}
}

func startRelayBinary(t *testing.T, body string) *relayBinary {
	t.Helper()
	path := writeConfig(t, body)
	r := &relayBinary{cmd: exec.Command(bin.relay, "serve", "-c", path), waited: make(chan struct{})}
	// A process group of its own, as a shell gives a foreground job.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// go-plugin's socket directories of a killed relay go with the test.
	r.cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	// exec copies stderr through a writer, and Wait returns only when all
	// of it is copied: the log is complete once the process is waited for.
	addrc := make(chan string, 1)
	r.cmd.Stderr = &lineWriter{fn: func(line string) {
		r.mu.Lock()
		r.log.WriteString(line + "\n")
		r.mu.Unlock()
		var entry struct{ Message, Addr string }
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Message == "relay listening" {
			select {
			case addrc <- entry.Addr:
			default:
			}
		}
	}}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.waited) }()
	t.Cleanup(func() {
		_ = r.cmd.Process.Kill()
		<-r.waited
		if t.Failed() {
			t.Logf("relay log:\n%s", r.logText())
		}
	})
	select {
	case r.addr = <-addrc:
	case <-r.waited:
		t.Fatalf("relay exited: %s", r.logText())
	case <-time.After(30 * time.Second):
		t.Fatal("relay did not start listening within 30s")
	}
	return r
}

func (r *relayBinary) logText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

// plugins lists the relay's plugin processes (its children), sorted.
func (r *relayBinary) plugins(t *testing.T, want int) []int {
	t.Helper()
	kids := children(r.cmd.Process.Pid)
	sort.Ints(kids)
	if len(kids) != want {
		t.Fatalf("relay has %d child processes %v, want %d plugins", len(kids), kids, want)
	}
	return kids
}

// TestNoOrphansWhenRelayIsKilled kills relay with SIGKILL, which it cannot
// handle: its plugins (Go and Node) die with it all the same.
func TestNoOrphansWhenRelayIsKilled(t *testing.T) {
	r := startRelayBinary(t, twoPlugins)
	pids := r.plugins(t, 2)
	// The relay serves through them.
	a := dialURL(t, "ws://"+r.addr+"/socket", "tok", "a")
	b := dialURL(t, "ws://"+r.addr+"/socket", "tok", "b")
	a.send(map[string]any{"type": "addMaterial", "data": map[string]any{"title": "x"}})
	if got := b.read(5 * time.Second); dataOf(got)["source"] != "node" {
		t.Fatalf("b got %v", got)
	}
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-r.waited
	waitFor(t, 2*time.Second, "the plugins to die with relay", func() bool {
		return !procstate.Alive(pids[0]) && !procstate.Alive(pids[1])
	})
}

// TestNoOrphansAfterShutdown: relay serve stopped with SIGTERM or SIGINT
// sent to its process group (a Ctrl-C) stops its plugins itself, after
// draining, before it exits: the signal does not reach the plugins, which
// have process groups of their own.
func TestNoOrphansAfterShutdown(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			r := startRelayBinary(t, twoPlugins)
			pids := r.plugins(t, 2)
			for _, pid := range pids {
				if pgid, _ := syscall.Getpgid(pid); pgid != pid {
					t.Errorf("plugin %d is in process group %d, want its own", pid, pgid)
				}
			}
			// As a terminal does: the signal goes to relay's process group.
			if err := syscall.Kill(-r.cmd.Process.Pid, sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-r.waited:
			case <-time.After(15 * time.Second):
				t.Fatal("relay did not exit within 15s")
			}
			if code := r.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("relay exited with %d", code)
			}
			for _, pid := range pids {
				if procstate.Alive(pid) {
					t.Errorf("plugin %d outlived relay", pid)
				}
			}
			// The plugins were still up when relay stopped them.
			log := r.logText()
			if strings.Count(log, `"message":"plugin stopped"`) != 2 || strings.Contains(log, "went down") {
				t.Errorf("relay did not stop both plugins itself")
			}
		})
	}
}

// lineWriter calls fn with each line written to it.
type lineWriter struct {
	buf []byte
	fn  func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.fn(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}
