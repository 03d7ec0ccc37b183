package attacktest_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pairrelay/relay/internal/attacktest"
)

// rawUpgrade is an attacker's upgrade: a fixed request written on a fresh
// TCP connection from source (a loopback address of its own, so that the
// attack is one client address and the unrelated pair another) and the
// status line and error code of the answer read back. It costs the
// attacking test process far less than a WebSocket client would (with the
// race detector, the dialer's CPU would otherwise be what slows the pair).
// The connection is returned when it upgraded.
func rawUpgrade(addr, source, query, forwardedFor string, o *outcomes) net.Conn {
	d := net.Dialer{Timeout: 10 * time.Second}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		o.add("error: " + err.Error())
		return nil
	}
	req := "GET /socket?" + query + " HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if forwardedFor != "" {
		req += "X-Forwarded-For: " + forwardedFor + "\r\n"
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		_ = c.Close()
		o.add("error: " + err.Error())
		return nil
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 1024), nil)
	if err != nil {
		_ = c.Close()
		o.add("error: " + err.Error())
		return nil
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		_ = c.SetDeadline(time.Time{})
		o.add("101")
		return c
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_ = c.Close()
	code := "?"
	if i := strings.Index(string(body), `"error":"`); i >= 0 {
		code, _, _ = strings.Cut(string(body[i+9:]), `"`)
	}
	if resp.Header.Get("Retry-After") == "" {
		code += " (no Retry-After)"
	}
	o.add(fmt.Sprintf("%d %s", resp.StatusCode, code))
	return nil
}

// cpuTime is the CPU time a process has used (user and system), from
// /proc/PID/stat in clock ticks of 10 ms.
func cpuTime(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command (which may hold spaces) start after ") ".
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// outcomes counts how upgrade attempts ended: "101", or the status and
// error code of a refusal ("429 too_many_requests"), or "error: …" for
// anything else.
type outcomes struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *outcomes) add(key string) {
	o.mu.Lock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[key]++
	o.mu.Unlock()
}

func (o *outcomes) get(key string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[key]
}

func (o *outcomes) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var keys []string
	for k := range o.n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d × %s", o.n[k], k))
	}
	return strings.Join(parts, ", ")
}

// attackers is how many connections an attack opens at once.
const attackers = 16

// TestAttackConnectionFlood: 5,000 connections from 100 client addresses
// (named by X-Forwarded-For from a trusted proxy, as behind a platform's
// front end), opened as fast as 16 dialers go and held. Each address gets
// at most max_connections_per_ip connections and 429 for the rest; what
// comes faster than the global upgrade rate gets 503. relay lives, everyone
// else keeps their latency, and the refusals show in the metrics.
func TestAttackConnectionFlood(t *testing.T) {
	const addresses, perAddress, allowed = 100, 50, 40
	r := attacktest.Start(t, attacktest.Options{MemoryLimit: cloudRunMemory, Config: fmt.Sprintf(`
listen: "127.0.0.1:0"
client_ip: {trusted_proxies: [127.0.0.0/8]}
limits: {max_connections_per_ip: %d}
`, allowed)})
	pair := attacktest.StartPair(t, r, 10*time.Millisecond)

	var o outcomes
	var held sync.Map // address → *atomic.Int64 of its open connections
	var mu sync.Mutex
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	jobs := make(chan int)
	var wg sync.WaitGroup
	cpu0 := cpuTime(t, r.PID())
	start := time.Now()
	for range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				addr := fmt.Sprintf("198.18.%d.%d", i%addresses/250, 1+i%addresses%250)
				// Seed wire: the relay sends a held connection nothing, so it
				// needs no reader here.
				c := rawUpgrade(r.Addr(), "", fmt.Sprintf("token=flood-%d&env=h5", i), addr, &o)
				if c == nil {
					continue
				}
				n, _ := held.LoadOrStore(addr, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	for i := range addresses * perAddress {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	cpu1 := cpuTime(t, r.PID())

	stats := pair.StopAfter(elapsed + 2*time.Second)
	mem := r.CheckSurvived(t)
	m := metrics(t, r)
	shed := fmt.Sprintf("%d attempts in %v: %s; %.0f connections held; relay CPU %v", addresses*perAddress, elapsed.Round(time.Millisecond), &o,
		m["relay_listener_connections"], cpu1-cpu0)
	t.Logf("connection flood: %s; pair: %s; shed: %s", mem, stats, shed)
	stats.Check(t, 50*time.Millisecond)

	total := 0
	for k, n := range o.n {
		switch k {
		case "101", "429 too_many_connections", "503 server_busy":
		default:
			t.Errorf("%d attempts ended with %s", n, k)
		}
		total += n
	}
	if total != addresses*perAddress {
		t.Errorf("%d outcomes for %d attempts", total, addresses*perAddress)
	}
	held.Range(func(addr, n any) bool {
		if n := n.(*atomic.Int64).Load(); n > allowed {
			t.Errorf("%s holds %d connections, max_connections_per_ip is %d", addr, n, allowed)
		}
		return true
	})
	// At most max_connections_per_ip of each address's 50 upgrade; which
	// bound refuses the rest depends on the pace: max_connections_per_ip
	// (429), or, when the attempts come faster than upgrades_per_second
	// allows, the global rate (503).
	if refused := o.get("429 too_many_connections") + o.get("503 server_busy"); refused < addresses*(perAddress-allowed) {
		t.Errorf("only %d attempts were refused: %s", refused, &o)
	}
	for reason, key := range map[string]string{"too_many_connections": "429 too_many_connections", "server_busy": "503 server_busy"} {
		if got := m[`relay_upgrades_refused_total{reason="`+reason+`"}`]; int(got) != o.get(key) {
			t.Errorf("relay_upgrades_refused_total{reason=%q} = %v, the clients saw %d", reason, got, o.get(key))
		}
	}
	// The held connections, and this request for /metrics (the pair has gone).
	if got, want := int(m["relay_listener_connections"]), o.get("101")+1; got != want {
		t.Errorf("relay_listener_connections = %d, want the %d held and the request for /metrics", got, o.get("101"))
	}
}

// TestAttackUpgradeFlood: 5,000 upgrades from one address as fast as 16
// dialers go, each closed at once (5,000 came in 3.7 s before admission
// control). The address gets its burst and its rate; everything else is
// refused with 429 and Retry-After, cheaply enough that everyone else
// keeps their latency.
func TestAttackUpgradeFlood(t *testing.T) {
	const attempts = 5000
	r := attacktest.Start(t, attacktest.Options{MemoryLimit: cloudRunMemory, Config: `listen: "127.0.0.1:0"`})
	pair := attacktest.StartPair(t, r, 10*time.Millisecond)

	var o outcomes
	jobs := make(chan int)
	var wg sync.WaitGroup
	cpu0 := cpuTime(t, r.PID())
	start := time.Now()
	for range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if c := rawUpgrade(r.Addr(), "127.0.0.2", fmt.Sprintf("token=up-%d&env=h5", i), "", &o); c != nil {
					_ = c.Close()
				}
			}
		}()
	}
	for i := range attempts {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	cpu1 := cpuTime(t, r.PID())

	stats := pair.StopAfter(elapsed + 2*time.Second)
	mem := r.CheckSurvived(t)
	m := metrics(t, r)
	shed := fmt.Sprintf("%d upgrades from one address in %v (%.0f/s): %s; relay CPU %v", attempts, elapsed.Round(time.Millisecond),
		attempts/elapsed.Seconds(), &o, cpu1-cpu0)
	t.Logf("upgrade flood: %s; pair: %s; shed: %s", mem, stats, shed)
	stats.Check(t, 50*time.Millisecond)

	// The defaults: a burst of 200, then 20 a second.
	if max := 200 + int(20*elapsed.Seconds()) + 20; o.get("101") > max {
		t.Errorf("%d upgrades went through in %v, the per-address rate allows %d", o.get("101"), elapsed, max)
	}
	if o.get("101") < 200 {
		t.Errorf("only %d upgrades went through: the per-address burst is 200", o.get("101"))
	}
	if o.get("101")+o.get("429 too_many_requests") != attempts {
		t.Errorf("outcomes %s: want only upgrades and 429 too_many_requests with Retry-After", &o)
	}
	if got := m[`relay_upgrades_refused_total{reason="too_many_requests"}`]; int(got) != o.get("429 too_many_requests") {
		t.Errorf("relay_upgrades_refused_total{reason=\"too_many_requests\"} = %v, the clients saw %d", got, o.get("429 too_many_requests"))
	}
}

// TestAttackSlowloris: 3,000 requests that stop halfway through their
// header and 2,000 TCP connections that send nothing, opened over about 5 s
// from 10 addresses
// (they stayed open 40–60 s before, uncounted). They count toward
// max_connections while pending and are all closed at the header timeout
// (10 s by default); relay lives and everyone else keeps their latency.
func TestAttackSlowloris(t *testing.T) {
	const halfSent, silent, sources = 3000, 2000, 10
	r := attacktest.Start(t, attacktest.Options{MemoryLimit: cloudRunMemory, Config: `listen: "127.0.0.1:0"`})
	pair := attacktest.StartPair(t, r, 10*time.Millisecond)

	half := "GET /socket?token=slow&env=h5 HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	conns := make([]net.Conn, 0, halfSent+silent)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	start := time.Now()
	dialErrs := 0
	for i := range halfSent + silent {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%sources))}}
		c, err := d.Dial("tcp", r.Addr())
		if err != nil {
			dialErrs++
			continue
		}
		conns = append(conns, c)
		if i < halfSent {
			_, _ = io.WriteString(c, half)
		}
		if i%10 == 9 {
			// About 1,000 a second: the point is connections held, not a
			// connection-rate flood (TestAttackConnectionFlood), which
			// on 2 cores, with the race detector in this process, is what
			// would slow the pair.
			time.Sleep(10 * time.Millisecond)
		}
	}
	opened := time.Since(start)
	var pending float64
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if pending = metrics(t, r)["relay_pending_connections"]; int(pending) >= len(conns) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	// relay counts each connection it closes at the header timeout (10 s
	// by default, from the accept): wait for all of them, then check that
	// every one is closed (a read ends at once with EOF or a reset, after
	// the 408 a half-sent request gets), reading nothing while relay works.
	closedBy := start.Add(10*time.Second + 15*time.Second)
	var timeouts float64
	for time.Now().Before(closedBy) {
		if timeouts = metrics(t, r)[`relay_pending_timeouts_total{timeout="header"}`]; int(timeouts) >= len(conns) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	last := time.Since(start)
	open := 0
	buf := make([]byte, 512)
	for _, c := range conns {
		// At once when closed: the count above comes just before the close.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			_, err := c.Read(buf)
			if err == nil {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				open++
			}
			break
		}
	}

	stats := pair.StopAfter(time.Since(start.Add(-time.Second)))
	mem := r.CheckSurvived(t)
	m := metrics(t, r)
	shed := fmt.Sprintf("%d half-sent + %d silent connections opened in %v (%d refused at connect); %.0f pending at once; all closed by %v; %.0f header timeouts",
		halfSent, silent, opened.Round(time.Millisecond), dialErrs, pending, last.Round(100*time.Millisecond), timeouts)
	t.Logf("slowloris: %s; pair: %s; shed: %s", mem, stats, shed)
	stats.Check(t, 50*time.Millisecond)
	if dialErrs > 0 {
		t.Errorf("%d connections could not be opened", dialErrs)
	}
	if open > 0 {
		t.Errorf("%d of %d connections still open %v after the attack began", open, len(conns), last.Round(100*time.Millisecond))
	}
	if int(pending) < len(conns) {
		t.Errorf("relay_pending_connections = %v while %d connections were open: they do not all count", pending, len(conns))
	}
	if got := m[`relay_pending_timeouts_total{timeout="header"}`]; int(got) < len(conns) {
		t.Errorf("relay_pending_timeouts_total{timeout=\"header\"} = %v, want the %d attack connections", got, len(conns))
	}
	// The request for /metrics itself is one.
	if got := m["relay_pending_connections"]; got > 1 {
		t.Errorf("relay_pending_connections = %v after the attack", got)
	}
}
