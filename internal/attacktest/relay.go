// Package attacktest runs attacks against a real relay process on
// loopback: the relay binary under a memory limit (a memory cgroup child,
// v1 or v2, or, where none can be made, RSS sampled from /proc), its peak
// memory and whether it was killed, its log, and an unrelated pair of
// clients whose latency and losses show whether everyone else was hurt.
//
// A test binary that uses it calls Main from TestMain, so that the relay
// binary is built once and removed afterwards:
//
//	func TestMain(m *testing.M) { attacktest.Main(m) }
package attacktest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultMemoryLimit is the limit a relay runs under when Options gives none.
const DefaultMemoryLimit = 256 << 20

var build struct {
	mu   sync.Mutex
	dir  string
	bins map[string]string // package → binary
}

// Main runs the tests and removes the binaries built for them.
func Main(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// Binary builds a main package of this module (such as
// "github.com/pairrelay/relay/plugins/internal/testplugin") once per test
// binary and returns its path.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	build.mu.Lock()
	defer build.mu.Unlock()
	if bin, ok := build.bins[pkg]; ok {
		return bin
	}
	if build.dir == "" {
		dir, err := os.MkdirTemp("", "relay-attack-")
		if err != nil {
			t.Fatal(err)
		}
		build.dir, build.bins = dir, map[string]string{}
	}
	bin := filepath.Join(build.dir, fmt.Sprint(len(build.bins), "-", filepath.Base(pkg)))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	build.bins[pkg] = bin
	return bin
}

// Options describe the relay to start.
type Options struct {
	// Config is the whole relay.yaml. It must listen on 127.0.0.1:0 (the
	// address is learned from the log) and log JSON (the default).
	Config string
	// MemoryLimit caps the process; DefaultMemoryLimit when 0.
	MemoryLimit int64
	// Env is added to the process's environment.
	Env []string
	// Path is the WebSocket path of Config; "/socket" when empty.
	Path string
	// Files are written next to relay.yaml before the start (name → content),
	// for schemas or plugin binaries the config refers to.
	Files map[string][]byte
}

// Relay is a running relay process.
type Relay struct {
	t     testing.TB
	cmd   *exec.Cmd
	addr  string
	path  string
	limit int64
	cg    *cgroup // nil when the limit is only watched
	dir   string

	done     chan struct{} // closed when the process has exited
	waitErr  error
	stopping chan struct{}
	stopOnce sync.Once

	mu       sync.Mutex
	peakRSS  int64 // VmHWM, bytes
	lines    []string
	lineN    int
	logBytes int64
	final    *Memory // set once the process is stopped
}

// niceness is the CPU priority of relay and of the test process, above
// the default of everything else on the machine. The tests measure what an
// attack, run by this same process, does to relay and to the pair; the
// machine's other load (other test runs, the "yes" processes the tests are
// checked beside) would otherwise show up in the pair's latency as well,
// when the whole machine is overcommitted several times.
const niceness = -10

var raiseOnce sync.Once

// raisePriority gives every thread of the test process the niceness;
// threads started later inherit it from the thread that starts them.
// Without root it does nothing.
func raisePriority() {
	raiseOnce.Do(func() {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return
		}
		for _, task := range tasks {
			if tid, err := strconv.Atoi(task.Name()); err == nil {
				_ = syscall.Setpriority(syscall.PRIO_PROCESS, tid, niceness)
			}
		}
	})
}

// maxKeptLines bounds the log lines kept in memory; LogLineCount counts all.
const maxKeptLines = 200000

// Start builds (once) and starts relay serve under a memory limit. The
// process, its cgroup and its files go when the test ends.
func Start(t testing.TB, opts Options) *Relay {
	t.Helper()
	bin := Binary(t, "github.com/pairrelay/relay/cmd/relay")
	limit := opts.MemoryLimit
	if limit == 0 {
		limit = DefaultMemoryLimit
	}
	r := &Relay{t: t, limit: limit, path: opts.Path, dir: t.TempDir(),
		done: make(chan struct{}), stopping: make(chan struct{})}
	if r.path == "" {
		r.path = "/socket"
	}
	cfgPath := filepath.Join(r.dir, "relay.yaml")
	if err := os.WriteFile(cfgPath, []byte(opts.Config), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, content := range opts.Files {
		if err := os.WriteFile(filepath.Join(r.dir, name), content, 0o700); err != nil {
			t.Fatal(err)
		}
	}

	cg, cgErr := newCgroup(t.Name(), limit)
	if cgErr != nil {
		// CI runs as root on machines with a memory cgroup: there a missing
		// cgroup is a broken test, not a reason to measure less.
		if os.Geteuid() == 0 {
			t.Fatalf("attacktest: running as root but no memory cgroup could be made: %v", cgErr)
		}
		t.Logf("attacktest: no memory cgroup (%v); RSS is sampled from /proc only", cgErr)
	}
	r.cg = cg
	procs := ""
	if cg != nil {
		procs = cg.procsFile()
	}
	// The shell joins the cgroup and then becomes relay, so relay is
	// limited from its first allocation. It also raises relay's CPU
	// priority (see raisePriority), which only root may do.
	r.cmd = exec.Command("/bin/sh", "-c",
		`if [ -n "$1" ]; then echo $$ > "$1" || exit 1; fi; renice -n `+fmt.Sprint(niceness)+` -p $$ >/dev/null 2>&1; exec "$2" serve -c "$3"`,
		"sh", procs, bin, cfgPath)
	raisePriority()
	r.cmd.Dir = r.dir
	r.cmd.Env = append(append(os.Environ(), "PORT="), opts.Env...)
	// relay must not outlive the test binary, however it ends.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := r.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stdout = io.Discard
	if err := r.cmd.Start(); err != nil {
		cg.remove()
		t.Fatal(err)
	}
	addrCh := make(chan string, 1)
	go r.readLog(stderr, addrCh)
	go r.sampleRSS()
	t.Cleanup(r.stop)

	select {
	case r.addr = <-addrCh:
	case <-r.done:
		t.Fatalf("relay exited at start (%v); log:\n%s", r.waitErr, r.LogText())
	case <-time.After(20 * time.Second):
		t.Fatalf("relay did not start; log:\n%s", r.LogText())
	}
	return r
}

func (r *Relay) readLog(stderr io.Reader, addrCh chan<- string) {
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	announced := false
	for sc.Scan() {
		line := sc.Text()
		r.mu.Lock()
		r.lineN++
		r.logBytes += int64(len(line)) + 1
		if len(r.lines) < maxKeptLines {
			r.lines = append(r.lines, line)
		}
		r.mu.Unlock()
		if !announced {
			var entry struct{ Message, Addr string }
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Message == "relay listening" {
				addrCh <- entry.Addr
				announced = true
			}
		}
	}
	// Drain whatever a too long line left, so that relay never blocks on
	// its log.
	_, _ = io.Copy(io.Discard, stderr)
	r.waitErr = r.cmd.Wait()
	close(r.done)
}

// sampleRSS keeps the process's peak RSS while it runs: /proc is gone
// once it has exited, and an OOM kill is exactly when the peak matters.
func (r *Relay) sampleRSS() {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		r.readRSS()
		select {
		case <-r.done:
			return
		case <-tick.C:
		}
	}
}

func (r *Relay) readRSS() {
	hwm := procStatusBytes(r.cmd.Process.Pid, "VmHWM:")
	r.mu.Lock()
	r.peakRSS = max(r.peakRSS, hwm)
	r.mu.Unlock()
}

// procStatusBytes reads a "Key:   N kB" line of /proc/PID/status.
func procStatusBytes(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// Addr is relay's listening address (host:port).
func (r *Relay) Addr() string { return r.addr }

// URL is the WebSocket URL with the given query (without "?").
func (r *Relay) URL(query string) string { return "ws://" + r.addr + r.path + "?" + query }

// PID is relay's process id.
func (r *Relay) PID() int { return r.cmd.Process.Pid }

// Dir is the directory relay.yaml and Options.Files are in.
func (r *Relay) Dir() string { return r.dir }

// Limit is the memory limit relay runs under, in bytes.
func (r *Relay) Limit() int64 { return r.limit }

// Exited reports whether the process has ended (on its own, before Stop).
func (r *Relay) Exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Memory is what a relay process used and whether it survived.
type Memory struct {
	Limit      int64  // bytes
	Method     string // "cgroup v1", "cgroup v2" or "/proc sampling"
	PeakRSS    int64  // VmHWM: the process's peak resident set
	CgroupPeak int64  // the cgroup's peak usage (0 without a cgroup)
	OOMKills   int64  // OOM kills in the cgroup
	Exited     bool   // the process ended before the test stopped it
	ExitStatus string // how it ended, when it did
}

// Killed reports whether relay was OOM-killed or ended on its own.
func (m Memory) Killed() bool { return m.OOMKills > 0 || m.Exited }

// Peak is the peak that the limit bounds: the cgroup's peak usage when
// there is a cgroup (VmHWM also counts file pages charged elsewhere, such
// as the binary's text when the page cache already held it), else VmHWM.
func (m Memory) Peak() int64 {
	if m.Method == "/proc sampling" {
		return m.PeakRSS
	}
	return m.CgroupPeak
}

func (m Memory) String() string {
	s := fmt.Sprintf("peak RSS %s", mib(m.PeakRSS))
	if m.Method != "/proc sampling" {
		s += fmt.Sprintf(", cgroup peak %s", mib(m.CgroupPeak))
	}
	s += fmt.Sprintf(" of %s (%s)", mib(m.Limit), m.Method)
	if m.OOMKills > 0 {
		s += fmt.Sprintf(", %d OOM kill(s)", m.OOMKills)
	}
	if m.Exited {
		s += ", exited: " + m.ExitStatus
	}
	return s
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Memory reports the memory used so far. After Stop it is final.
func (r *Relay) Memory() Memory {
	r.mu.Lock()
	final := r.final
	r.mu.Unlock()
	if final != nil {
		return *final
	}
	if !r.Exited() {
		r.readRSS()
	}
	m := Memory{Limit: r.limit, Method: "/proc sampling"}
	r.mu.Lock()
	m.PeakRSS = r.peakRSS
	r.mu.Unlock()
	if r.cg != nil {
		m.Method = r.cg.version
		m.CgroupPeak = r.cg.peak()
		m.OOMKills = r.cg.oomKills()
	}
	select {
	case <-r.done:
		select {
		case <-r.stopping:
		default:
			m.Exited = true
		}
		m.ExitStatus = exitStatus(r.waitErr)
	default:
	}
	return m
}

func exitStatus(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// CheckSurvived fails the test if relay was killed or ended, or if its
// peak memory went past its limit.
func (r *Relay) CheckSurvived(t testing.TB) Memory {
	t.Helper()
	m := r.Memory()
	if m.Killed() {
		t.Errorf("relay did not survive: %s; last log lines:\n%s", m, r.lastLines(20))
	}
	if m.Peak() > m.Limit {
		t.Errorf("relay's memory went past its limit: %s", m)
	}
	return m
}

// stop ends relay, keeps the final memory figures, and removes the cgroup.
func (r *Relay) stop() {
	r.stopOnce.Do(func() {
		final := r.Memory() // before the cgroup goes, and before our own kill
		close(r.stopping)
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.done
		r.mu.Lock()
		r.final = &final
		r.mu.Unlock()
		if r.cg != nil {
			if err := r.cg.remove(); err != nil {
				r.t.Errorf("attacktest: %v", err)
			}
		}
	})
}

// Stop ends relay now (the test's cleanup does it otherwise).
func (r *Relay) Stop() { r.stop() }

// LogLineCount is the number of lines relay has logged.
func (r *Relay) LogLineCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lineN
}

// LogBytes is the size of relay's log so far.
func (r *Relay) LogBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logBytes
}

// LogLines returns the lines logged so far (at most the first 200,000).
func (r *Relay) LogLines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// LogText is the log kept so far as one string.
func (r *Relay) LogText() string { return strings.Join(r.LogLines(), "\n") }

// LogEntries decodes the JSON log lines kept so far; lines that are not
// JSON are returned as {"raw": line}.
func (r *Relay) LogEntries() []map[string]any {
	lines := r.LogLines()
	out := make([]map[string]any, 0, len(lines))
	for _, l := range lines {
		var e map[string]any
		if json.Unmarshal([]byte(l), &e) != nil {
			e = map[string]any{"raw": l}
		}
		out = append(out, e)
	}
	return out
}

func (r *Relay) lastLines(n int) string {
	lines := r.LogLines()
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// LogRow logs one row of the attack table the issue asks for: the attack,
// the peak memory, what relay shed, and the unrelated pair's p99.
func LogRow(t testing.TB, attack, shed string, m Memory, s PairStats) {
	t.Helper()
	t.Logf("| %s | %s (%s) | %s | %v |", attack, mib(m.Peak()), m.Method, shed, s.P99.Round(10*time.Microsecond))
}
