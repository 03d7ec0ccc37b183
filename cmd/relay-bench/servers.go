package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// serverSpec names one server under test.
type serverSpec struct {
	name  string
	relay bool   // relay binary (else the gorilla baseline)
	v1    bool   // clients ask for wire v1 (?v=1)
	extra string // YAML appended to the relay's config
}

var knownServers = []serverSpec{
	{name: "relay-v1", relay: true, v1: true},
	{name: "relay-seed", relay: true},
	{name: "baseline"},
	// Not in the default run; name them with -servers.
	// The shipped relay.yaml's addMaterial pipeline (rate_limit, validate,
	// transform) on every bench message, the limit raised out of the way.
	{name: "relay-v1-routes", relay: true, v1: true, extra: shippedLikeRoutes},
	{name: "relay-v1-nohistory", relay: true, v1: true, extra: "history: {size: 0}\n"},
}

const shippedLikeRoutes = `routes:
  - name: bench
    match: {type: bench}
    handlers:
      - handler: rate_limit
        rate: 100000000
        burst: 100000000
        per: token
      - handler: validate
        schema:
          type: object
          required: [p]
          properties:
            p: {type: string, minLength: 1}
      - handler: transform
        set:
          data.receivedAt: now()
`

// benchConfig is the relay configuration every run uses: the built-in
// defaults except that nothing limits the load and the log stays quiet.
const benchConfig = `listen: "127.0.0.1:%d"
log: {level: warn}
limits: {messages_per_second: 0, max_connections: 0, send_queue: 4096, send_queue_bytes: 67108864,
  max_connections_per_ip: 0, connections_per_second_per_ip: 0, upgrades_per_second: 0}
`

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat;
// Linux fixes it at 100 for userspace on every architecture Go supports.
const clockTicks = 100

// launcher starts servers under test.
type launcher struct {
	relayBin    string
	baselineBin string
	tmp         string
	cpu         int  // CPU the servers are pinned to
	pin         bool // pin with taskset
	verbose     bool // forward the servers' stderr
}

// server is one running server process.
type server struct {
	spec    serverSpec
	addr    string
	pid     int
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	stderr  *lineWriter
}

// children are the servers running now; killChildren ends them all on any
// exit path, including signals.
var children = struct {
	sync.Mutex
	set map[*server]bool
}{set: make(map[*server]bool)}

func killChildren() {
	children.Lock()
	defer children.Unlock()
	for s := range children.set {
		_ = s.cmd.Process.Kill()
	}
}

// start launches spec and waits until it accepts connections. A relay
// listens on a port reserved here, because at log level warn it does not
// log its address; a taken port is retried.
func (l *launcher) start(ctx context.Context, spec serverSpec) (*server, error) {
	if !spec.relay {
		return l.launch(ctx, spec, "", l.baselineBin, "-addr", "127.0.0.1:0")
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cfg := filepath.Join(l.tmp, fmt.Sprintf("relay-%d.yaml", port))
		if err := os.WriteFile(cfg, append(fmt.Appendf(nil, benchConfig, port), spec.extra...), 0o600); err != nil {
			return nil, err
		}
		s, err := l.launch(ctx, spec, fmt.Sprintf("127.0.0.1:%d", port), l.relayBin, "serve", "-c", cfg)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func (l *launcher) launch(ctx context.Context, spec serverSpec, addr, bin string, args ...string) (*server, error) {
	argv := append([]string{bin}, args...)
	if l.pin {
		argv = append([]string{"taskset", "-c", strconv.Itoa(l.cpu)}, argv...)
	}
	s := &server{spec: spec, exited: make(chan struct{})}
	addrCh := make(chan string, 1)
	s.stderr = newLineWriter(func(line string) {
		if a := listenAddr(line); a != "" {
			select {
			case addrCh <- a:
			default:
			}
		}
		if l.verbose {
			fmt.Fprintf(os.Stderr, "  [%s] %s\n", spec.name, line)
		}
	})
	stdout := newLineWriter(func(line string) {
		// The baseline prints its address as its first line.
		if _, _, err := net.SplitHostPort(line); err == nil {
			select {
			case addrCh <- line:
			default:
			}
		}
	})
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = stdout, s.stderr
	// The kernel kills the server if this process dies without cleaning up.
	// (Pdeathsig follows the forking thread; Go ends a thread only when a
	// goroutine exits while locked to it, which this tool never does.)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start %s: %w", spec.name, argv[0], err)
	}
	s.pid = s.cmd.Process.Pid
	children.Lock()
	children.set[s] = true
	children.Unlock()
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()

	if addr == "" {
		select {
		case addr = <-addrCh:
		case <-s.exited:
		case <-time.After(10 * time.Second):
		case <-ctx.Done():
		}
		if addr == "" {
			s.stop()
			return nil, fmt.Errorf("%s: no listen address on stdout: %s", spec.name, s.failure())
		}
	}
	s.addr = addr
	if err := s.waitReady(ctx, 10*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// waitReady polls until the server answers HTTP on its address.
func (s *server) waitReady(ctx context.Context, limit time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before it was ready: %s", s.spec.name, s.failure())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		// Any HTTP answer will do: the relay has /healthz, the baseline
		// answers 400 to a request without token.
		resp, err := client.Get("http://" + s.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: not answering on %s after %s", s.spec.name, s.addr, limit)
}

func (s *server) failure() string {
	select {
	case <-s.exited:
		return fmt.Sprintf("exit: %v; stderr: %s", s.waitErr, s.stderr.tail())
	default:
		return "still running; stderr: " + s.stderr.tail()
	}
}

// stop kills the server and waits for it.
func (s *server) stop() {
	_ = s.cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		fmt.Fprintf(os.Stderr, "warning: %s (pid %d) did not exit after SIGKILL\n", s.spec.name, s.pid)
	}
	children.Lock()
	delete(children.set, s)
	children.Unlock()
}

// alive reports an error when the server has exited.
func (s *server) alive() error {
	select {
	case <-s.exited:
		return fmt.Errorf("%s exited during the run: %s", s.spec.name, s.failure())
	default:
		return nil
	}
}

// cpuTime is the server's user+system CPU time so far (all threads).
func (s *server) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name start at field 3 (state);
	// utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// statusField returns a field of /proc/PID/status, such as VmRSS.
func (s *server) statusField(name string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %s in /proc/%d/status", name, s.pid)
}

// rssKiB is the server's resident set size.
func (s *server) rssKiB() (int64, error) {
	v, err := s.statusField("VmRSS")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
}

// syscalls returns the read and write system call counts of /proc/PID/io.
func (s *server) syscalls() (reads, writes int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", s.pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			reads, _ = strconv.ParseInt(v, 10, 64)
		} else if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			writes, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return reads, writes, nil
}

// listenAddr extracts addr from the relay's "relay listening" log line.
func listenAddr(line string) string {
	if !strings.Contains(line, `"relay listening"`) {
		return ""
	}
	var entry struct {
		Addr string `json:"addr"`
	}
	if json.Unmarshal([]byte(line), &entry) != nil {
		return ""
	}
	return entry.Addr
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// pinSelf restricts every thread of this process to cpu. Threads started
// later are cloned from pinned ones and inherit the mask.
func pinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	done := make(map[int]bool)
	for pass := 0; pass < 10; pass++ {
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := 0
		for _, e := range entries {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("pin thread %d to CPU %d: %w", tid, cpu, err)
			}
			done[tid] = true
			fresh++
		}
		if fresh == 0 {
			runtime.GOMAXPROCS(1)
			return nil
		}
	}
	return errors.New("threads kept appearing while pinning")
}

// lineWriter hands each complete line written to it to fn and keeps the
// last lines for error messages.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	last []string
	fn   func(string)
}

func newLineWriter(fn func(string)) *lineWriter { return &lineWriter{fn: fn} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if w.last = append(w.last, line); len(w.last) > 8 {
			w.last = w.last[1:]
		}
		w.fn(line)
	}
	if len(w.buf) > 64<<10 { // a runaway line without newline
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

func (w *lineWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines := append(append([]string(nil), w.last...), string(w.buf))
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// goMemory summarises the relay's Go runtime metrics (from its /metrics)
// per connection, to tell heap, stacks and goroutines apart in its RSS.
func (s *server) goMemory(conns int) string {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + s.addr + "/metrics")
	if err != nil {
		return "runtime metrics unavailable: " + err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return "runtime metrics unavailable: " + err.Error()
	}
	want := map[string]float64{"go_goroutines": -1, "go_memstats_heap_inuse_bytes": -1,
		"go_memstats_stack_inuse_bytes": -1, "go_memstats_heap_objects": -1}
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if _, known := want[name]; ok && known {
			want[name], _ = strconv.ParseFloat(strings.TrimSpace(value), 64)
		}
	}
	n := float64(conns)
	return fmt.Sprintf("Go runtime per connection: %.2f goroutines, heap in use %.2f KiB (%.1f objects), stacks %.2f KiB",
		want["go_goroutines"]/n, want["go_memstats_heap_inuse_bytes"]/1024/n,
		want["go_memstats_heap_objects"]/n, want["go_memstats_stack_inuse_bytes"]/1024/n)
}

// contextSwitches sums the voluntary and involuntary context switches of
// all the server's threads.
func (s *server) contextSwitches() (int64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", s.pid))
	if err != nil {
		return 0, err
	}
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", s.pid, t.Name()))
		if err != nil {
			continue // the thread ended
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				total += n
			} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				total += n
			}
		}
	}
	return total, nil
}
