package plugins

import (
	"fmt"
	"github.com/pairrelay/relay/internal/procstate"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestKillDuringSteadyStream kills the plugin with SIGKILL while senders
// stream messages through it: relay keeps serving, no session drops, the
// messages of the outage follow on_error, and the plugin is back and
// processing within 2 s.
func TestKillDuringSteadyStream(t *testing.T) {
	for _, onError := range []string{"pass", "reject"} {
		t.Run("on_error "+onError, func(t *testing.T) { killDuringStream(t, onError) })
	}
}

func killDuringStream(t *testing.T, onError string) {
	r := startRelay(t, fmt.Sprintf(`
listen: 127.0.0.1:0
limits: {messages_per_second: 0}
plugins:
  - name: tp
    command: TESTPLUGIN
routes:
  - match: {type: "*"}
    on_error: %s
    handlers: [{handler: plugin, plugin: tp, config: {tag: seen}}]
`, onError))
	const senders, interval = 4, 5 * time.Millisecond
	oldPid := pluginPid("tp")
	if !procstate.Alive(oldPid) {
		t.Fatalf("plugin pid %d not running", oldPid)
	}

	type stats struct {
		sent, delivered, processed, passed, refused atomic.Int64
		firstProcessedAfterKill                     atomic.Int64 // ns since kill
	}
	var st stats
	var killedAt atomic.Int64 // unix ns
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4*senders)
	var conns []*client
	for i := range senders {
		token := fmt.Sprintf("tok%d", i)
		a, b := r.dial(token, "a"), r.dial(token, "b")
		conns = append(conns, a, b)
		wg.Add(3)
		go func() { // sender
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				msg := map[string]any{"type": "upper", "data": map[string]any{"text": "x", "sent": time.Now().UnixNano()}, "id": fmt.Sprint(n)}
				if err := a.trySend(msg); err != nil {
					select {
					case <-stop: // the test closed the connection
					default:
						errs <- fmt.Errorf("%s: send: %v", token, err)
					}
					return
				}
				st.sent.Add(1)
			}
		}()
		go func() { // the sender's own frames: relay.error for refused messages
			defer wg.Done()
			for {
				m, err := a.tryRead(10 * time.Second)
				if err != nil {
					select {
					case <-stop:
					default:
						errs <- fmt.Errorf("%s/a: %v", token, err)
					}
					return
				}
				if m["type"] == "relay.error" {
					if dataOf(m)["code"] != "handler_failed" {
						errs <- fmt.Errorf("%s/a: unexpected %v", token, m)
					}
					st.refused.Add(1)
				}
			}
		}()
		go func() { // receiver
			defer wg.Done()
			for {
				m, err := b.tryRead(10 * time.Second)
				if err != nil {
					select {
					case <-stop:
					default:
						errs <- fmt.Errorf("%s/b: %v", token, err)
					}
					return
				}
				st.delivered.Add(1)
				if dataOf(m)["tag"] == "seen" {
					st.processed.Add(1)
					// Processed, and sent after the kill: the new process did it.
					sent, _ := dataOf(m)["sent"].(float64)
					if k := killedAt.Load(); k != 0 && int64(sent) > k {
						st.firstProcessedAfterKill.CompareAndSwap(0, time.Now().UnixNano()-k)
					}
				} else {
					st.passed.Add(1)
				}
			}
		}()
	}

	time.Sleep(300 * time.Millisecond)
	before := st.processed.Load()
	if err := syscall.Kill(oldPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt.Store(time.Now().UnixNano())
	waitFor(t, 2*time.Second, "the plugin to process messages again", func() bool {
		return st.firstProcessedAfterKill.Load() != 0
	})
	back := time.Duration(st.firstProcessedAfterKill.Load())
	newPid := pluginPid("tp")
	time.Sleep(500 * time.Millisecond) // steady again
	sentAtStop := st.sent.Load()
	close(stop)
	// Every message sent is accounted for: delivered or refused.
	waitFor(t, 5*time.Second, "every message to be accounted for", func() bool {
		return st.delivered.Load()+st.refused.Load() >= sentAtStop
	})
	for _, c := range conns {
		_ = c.conn.Close()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("sent %d, delivered %d (processed %d, passed unprocessed %d), refused %d; processing again %s after the kill",
		st.sent.Load(), st.delivered.Load(), st.processed.Load(), st.passed.Load(), st.refused.Load(), back.Round(time.Millisecond))
	if before == 0 {
		t.Error("nothing was processed before the kill")
	}
	if newPid == oldPid || !procstate.Alive(newPid) {
		t.Errorf("plugin pid %d after the restart (was %d), want a new live process", newPid, oldPid)
	}
	if procstate.Alive(oldPid) {
		t.Errorf("killed plugin %d still alive", oldPid)
	}
	if st.passed.Load()+st.refused.Load() == 0 {
		t.Error("no message met the outage: on_error was not exercised")
	}
	switch onError {
	case "pass":
		if st.refused.Load() != 0 {
			t.Errorf("%d messages refused with on_error pass", st.refused.Load())
		}
	case "reject":
		if st.passed.Load() != 0 {
			t.Errorf("%d messages passed unprocessed with on_error reject", st.passed.Load())
		}
	}
}

// TestCrashInsideHandleRestarts: a plugin that exits in the middle of a
// call is restarted; the call fails (on_error) and the next ones succeed.
func TestCrashInsideHandleRestarts(t *testing.T) {
	r := startRelay(t, `
listen: 127.0.0.1:0
plugins:
  - name: tp
    command: TESTPLUGIN
routes:
  - match: {type: "*"}
    handlers: [{handler: plugin, plugin: tp, config: {tag: seen}}]
`)
	a, b := r.dial("tok", "a"), r.dial("tok", "b")
	oldPid := pluginPid("tp")
	for round := range 3 {
		a.send(map[string]any{"type": "exit", "id": fmt.Sprint("exit", round)})
		if got := a.read(5 * time.Second); got["type"] != "relay.error" || dataOf(got)["code"] != "handler_failed" {
			t.Fatalf("a got %v, want relay.error handler_failed", got)
		}
		waitFor(t, 2*time.Second, "the plugin to be back", func() bool { p := pluginPid("tp"); return p != 0 && p != oldPid })
		oldPid = pluginPid("tp")
		a.send(map[string]any{"type": "upper", "data": map[string]any{"text": "ok"}})
		if got := b.read(5 * time.Second); dataOf(got)["tag"] != "seen" {
			t.Fatalf("b got %v, want a processed message", got)
		}
	}
}

// TestHangingPluginHitsTimeout: messages a plugin never answers hit the
// route's timeout (relay.error for their senders) while other senders'
// messages flow through the same plugin process at full speed.
func TestHangingPluginHitsTimeout(t *testing.T) {
	r := startRelay(t, `
listen: 127.0.0.1:0
limits: {messages_per_second: 0}
plugins:
  - name: tp
    command: TESTPLUGIN
routes:
  - match: {type: "hang"}
    timeout: 400ms
    handlers: [{handler: plugin, plugin: tp}]
  - match: {type: "*"}
    handlers: [{handler: plugin, plugin: tp}]
`)
	const hangers = 10
	var hung []*client
	for i := range hangers {
		c := r.dial(fmt.Sprint("hang", i), "a")
		hung = append(hung, c)
	}
	peer := r.dial("hang0", "b")
	a, b := r.dial("busy", "a"), r.dial("busy", "b")
	start := time.Now()
	for i, c := range hung {
		c.send(map[string]any{"type": "hang", "id": fmt.Sprint("h", i)})
	}
	var slowest time.Duration
	for i := range 50 {
		sent := time.Now()
		a.send(map[string]any{"type": "upper", "data": map[string]any{"text": fmt.Sprint(i)}})
		got := b.read(5 * time.Second)
		if dataOf(got)["text"] != fmt.Sprint(i) {
			t.Fatalf("b got %v", got)
		}
		slowest = max(slowest, time.Since(sent))
	}
	others := time.Since(start)
	if others >= 400*time.Millisecond {
		t.Errorf("50 messages of another sender took %s: they waited for the hanging calls", others)
	}
	for i, c := range hung {
		got := c.read(5 * time.Second)
		waited := time.Since(start)
		if got["type"] != "relay.error" || dataOf(got)["code"] != "handler_failed" || dataOf(got)["id"] != fmt.Sprint("h", i) {
			t.Fatalf("hanging sender %d got %v, want relay.error handler_failed", i, got)
		}
		if waited < 350*time.Millisecond || waited > 3*time.Second {
			t.Errorf("hanging sender %d answered after %s, want about the 400ms timeout", i, waited)
		}
	}
	// The hanging sender's next message goes through once its timeout is over.
	hung[0].send(map[string]any{"type": "pid"})
	if got := peer.read(5 * time.Second); dataOf(got)["pid"] == nil {
		t.Fatalf("after the timeout the peer got %v", got)
	}
	t.Logf("another sender's 50 messages took %s (slowest %s) while %d calls hung", others, slowest, hangers)
}

// TestUnresponsivePluginIsRestarted: a plugin process that stops answering
// at all (here: SIGSTOP) fails its health checks and is replaced; meanwhile
// its messages meet the route's timeout.
func TestUnresponsivePluginIsRestarted(t *testing.T) {
	defer func(i, to time.Duration) { healthInterval, healthTimeout = i, to }(healthInterval, healthTimeout)
	// Quick checks, with a timeout loose enough not to fail a busy machine.
	healthInterval, healthTimeout = 200*time.Millisecond, time.Second
	r := startRelay(t, `
listen: 127.0.0.1:0
plugins: [{name: tp, command: TESTPLUGIN}]
routes:
  - match: {type: "*"}
    timeout: 200ms
    handlers: [{handler: plugin, plugin: tp, config: {tag: seen}}]
`)
	a, b := r.dial("tok", "a"), r.dial("tok", "b")
	pid := pluginPid("tp")
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// A stop signal takes effect thread by thread, when each is next
	// scheduled; until then the plugin may still answer.
	waitFor(t, 5*time.Second, "every thread of the plugin to stop", func() bool { return procstate.Stopped(pid) })
	a.send(map[string]any{"type": "upper", "data": map[string]any{"text": "x"}, "id": "stuck"})
	if got := a.read(5 * time.Second); dataOf(got)["code"] != "handler_failed" {
		t.Fatalf("a got %v, want relay.error handler_failed", got)
	}
	waitFor(t, 8*time.Second, "a new plugin process", func() bool { p := pluginPid("tp"); return p != 0 && p != pid })
	waitFor(t, 2*time.Second, "the stopped process to be killed", func() bool { return !procstate.Alive(pid) })
	a.send(map[string]any{"type": "upper", "data": map[string]any{"text": "x"}})
	if got := b.read(5 * time.Second); dataOf(got)["tag"] != "seen" {
		t.Fatalf("b got %v", got)
	}
	if !strings.Contains(r.logs.String(), "health check failed") {
		t.Error("the log does not say why the plugin was replaced")
	}
}
