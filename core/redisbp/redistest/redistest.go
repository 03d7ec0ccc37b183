// Package redistest helps test relay on Redis: it runs a throwaway
// redis-server (a free loopback port, no persistence unless asked for,
// stopped when the test ends) that a test can kill, pause, shut down and
// start again.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pairrelay/relay/internal/procstate"
)

// InstallHint is what a test says when redis-server is missing.
const InstallHint = "redis-server not found on PATH: install it with `apt-get update && apt-get install -y redis-server` (the Redis backplane tests need a real Redis)"

// Server is a running redis-server.
type Server struct {
	t    testing.TB
	Port int
	dir  string
	cfg  Config

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  *lockedBuffer
}

// Config is how StartWith runs a redis-server.
type Config struct {
	// AppendOnly keeps the dataset in an append-only file, so that Stop and
	// Start bring it back as it was, as a Redis with persistence does.
	AppendOnly bool
	// SlowLoad (with AppendOnly) makes loading the dataset after Start take
	// about a second, during which Redis answers commands with LOADING
	// errors: StartWith stores throwaway keys, and each of them is loaded
	// slowly (the key-load-delay debug setting).
	SlowLoad bool
	// MaxMemory, when set, is the server's maxmemory ("64mb"), and
	// MaxMemoryPolicy its maxmemory-policy (Redis's default: noeviction).
	MaxMemory       string
	MaxMemoryPolicy string
}

// Start starts a redis-server on a free 127.0.0.1 port; the test fails
// (never skips) when redis-server is not installed.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Config{})
}

// StartWith starts a redis-server as cfg says.
func StartWith(t testing.TB, cfg Config) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal(InstallHint)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &Server{t: t, Port: port, dir: t.TempDir(), cfg: cfg}
	s.start()
	t.Cleanup(s.Kill)
	if cfg.AppendOnly && cfg.SlowLoad {
		s.storeJunk()
	}
	return s
}

// storeJunk stores the keys that make loading slow (DEBUG POPULATE does not
// log them in the append-only file: the rewrite puts them there).
func (s *Server) storeJunk() {
	s.t.Helper()
	if reply, err := s.Command("DEBUG POPULATE 1000 redistest-junk 10"); err != nil || reply[0] != '+' {
		s.t.Fatalf("redis-server: DEBUG POPULATE: %q %v", reply, err)
	}
	s.rewriteAOF()
}

// rewriteAOF rewrites the append-only file into its base (an RDB), where
// every key loads slowly with SlowLoad, however many commands made it.
func (s *Server) rewriteAOF() {
	s.t.Helper()
	rewrites := func() (int, bool) {
		info, err := s.Info("persistence")
		if err != nil {
			return -1, false
		}
		n := -1
		idle := bytes.Contains(info, []byte("aof_rewrite_in_progress:0")) && bytes.Contains(info, []byte("aof_rewrite_scheduled:0"))
		for _, line := range strings.Split(string(info), "\r\n") {
			if v, ok := strings.CutPrefix(line, "aof_rewrites:"); ok {
				n, _ = strconv.Atoi(v)
			}
		}
		return n, idle
	}
	before, _ := rewrites()
	if reply, err := s.Command("BGREWRITEAOF"); err != nil || reply[0] != '+' {
		s.t.Fatalf("redis-server: BGREWRITEAOF: %q %v", reply, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n, idle := rewrites(); idle && n > before {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server: the append-only file was not rewritten within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() }

func (s *Server) start() {
	s.t.Helper()
	args := []string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no"}
	if s.cfg.AppendOnly {
		args = append(args, "--appendonly", "yes")
	}
	if s.cfg.MaxMemory != "" {
		args = append(args, "--maxmemory", s.cfg.MaxMemory)
	}
	if s.cfg.MaxMemoryPolicy != "" {
		args = append(args, "--maxmemory-policy", s.cfg.MaxMemoryPolicy)
	}
	if s.cfg.SlowLoad {
		// 1,000 keys at 0.4 ms each; Redis answers (LOADING) between keys
		// rather than once per 2 MB loaded.
		args = append(args, "--enable-debug-command", "local", "--key-load-delay", "400",
			"--loading-process-events-interval-bytes", "1024")
	}
	cmd := exec.Command("redis-server", args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// The server dies with the test binary, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done, s.out = cmd, done, out
	s.mu.Unlock()
	// Loading a dataset may take a while on a loaded machine.
	deadline := time.Now().Add(30 * time.Second)
	for !s.Ping() {
		select {
		case <-done:
			s.t.Fatalf("redis-server exited at start:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			s.Kill()
			s.t.Fatalf("redis-server did not answer within 30s:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Ping reports whether the server answers PING.
func (s *Server) Ping() bool {
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && line == "+PONG\r\n"
}

// Kill stops the server at once (SIGKILL) and waits for it to exit.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.t.Errorf("redis-server pid %d did not exit after SIGKILL", cmd.Process.Pid)
	}
}

// Pause stops the server's process (SIGSTOP): connections stay open and
// nothing answers, as with a hung server or a silent network. It returns
// once every thread is stopped, so that nothing answers after it.
func (s *Server) Pause() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP)
	s.mu.Lock()
	pid := 0
	if s.cmd != nil {
		pid = s.cmd.Process.Pid
	}
	s.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for pid != 0 && !procstate.Stopped(pid) {
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server pid %d is not stopped 5s after SIGSTOP", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Restart starts the server again on the same port (with an empty
// dataset unless it keeps an append-only file).
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// Stop shuts the server down as an operator or an orchestrator does
// (SIGTERM: with AppendOnly, it writes its file out first) and waits for
// it to exit. Start runs it again.
func (s *Server) Stop() {
	s.t.Helper()
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	if s.cfg.AppendOnly && s.cfg.SlowLoad {
		// Everything in the base, so that loading takes about as long
		// whatever the test wrote (replaying the commands of the file's
		// tail is not slowed, and under load can take far longer).
		s.mu.Lock()
		s.cmd = cmd
		s.mu.Unlock()
		s.rewriteAOF()
		s.mu.Lock()
		s.cmd = nil
		s.mu.Unlock()
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		s.t.Fatalf("redis-server pid %d did not exit within 10s of SIGTERM", cmd.Process.Pid)
	}
}

// Start runs a stopped server again on the same port and directory. It
// returns once the server answers PING with PONG, that is once it has
// loaded its dataset (it answers LOADING before).
func (s *Server) Start() {
	s.t.Helper()
	s.start()
}

// Info returns the reply to INFO section.
func (s *Server) Info(section string) ([]byte, error) {
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "INFO %s\r\n", section); err != nil {
		return nil, err
	}
	r := bufio.NewReader(conn)
	head, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if head[0] != '$' {
		return nil, fmt.Errorf("INFO: %q", head)
	}
	n, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil {
		return nil, fmt.Errorf("INFO: %q", head)
	}
	body := make([]byte, n+2)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return body[:n], nil
}

// Command runs one command on the server with redis-cli's inline syntax
// and returns the raw reply line.
func (s *Server) Command(args string) (string, error) {
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "%s\r\n", args); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 {
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
