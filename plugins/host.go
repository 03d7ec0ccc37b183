package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/pairrelay/relay/plugins/internal/proto/relayplugin/v1"
	"github.com/pairrelay/relay/plugins/internal/wire"
)

// Timings of the host. Variables, so that tests can shorten them.
var (
	startTimeout     = 10 * time.Second // process start to handshake line
	configureTimeout = 10 * time.Second
	stderrGrace      = 500 * time.Millisecond // for a failed plugin's last words
	exitGrace        = 100 * time.Millisecond // a broken connection's process to be seen dead
	killGrace        = 3 * time.Second        // a plugin being stopped to exit before SIGKILL
	healthInterval   = 5 * time.Second
	healthTimeout    = 2 * time.Second
	healthFailures   = 2 // consecutive failed checks that restart a plugin
	restartBackoff   = []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second}
	stableAfter      = 30 * time.Second // up this long: the next crash restarts at once again
)

// definition is what makes two plugin processes interchangeable: routes
// (and the pipelines of consecutive reloads) whose plugin entry and config
// are the same share one process.
type definition struct {
	Name   string   `json:"name"`
	Path   string   `json:"path"` // the command, resolved against relay.yaml's directory
	Args   []string `json:"args"`
	Env    []string `json:"env"` // KEY=VALUE, sorted
	Dir    string   `json:"dir"`
	Config []byte   `json:"config"` // JSON handed to Configure

	// MaxAnswer is the largest answer read from the plugin (gRPC's limit
	// on a received message); a larger one ends the stream.
	MaxAnswer int `json:"max_answer"`
}

func (d *definition) key() string {
	b, _ := json.Marshal(d)
	return string(b)
}

// registry holds every plugin process this relay runs, by definition.
var registry = struct {
	mu    sync.Mutex
	procs map[string]*process
}{procs: map[string]*process{}}

// acquire returns the running process for def, starting it if needed, and
// counts a reference to it; release gives the reference back. The first
// start's error (the process exits, has no handshake, Configure fails) is
// acquire's.
func acquire(ctx context.Context, def definition, log *slog.Logger) (*process, error) {
	key := def.key()
	registry.mu.Lock()
	p := registry.procs[key]
	if p == nil {
		p = newProcess(key, def, log)
		registry.procs[key] = p
		go p.supervise()
	}
	p.refs++
	registry.mu.Unlock()
	select {
	case <-p.ready:
	case <-ctx.Done():
		release(p)
		return nil, ctx.Err()
	}
	if p.startErr != nil {
		release(p)
		return nil, p.startErr
	}
	return p, nil
}

// release drops a reference; the last one stops the process and waits
// until it is gone.
func release(p *process) {
	registry.mu.Lock()
	p.refs--
	last := p.refs == 0
	if last && registry.procs[p.key] == p {
		delete(registry.procs, p.key)
	}
	registry.mu.Unlock()
	if last {
		p.stop()
	}
}

// StopAll stops every plugin process at once, whoever holds it, and waits
// until they are gone; handlers using them fail from then on. It is the
// last-resort cleanup (go-plugin's CleanupClients); relay itself stops each
// plugin when the pipelines using it are closed.
func StopAll() {
	registry.mu.Lock()
	procs := make([]*process, 0, len(registry.procs))
	for key, p := range registry.procs {
		procs = append(procs, p)
		delete(registry.procs, key)
	}
	registry.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop() }()
	}
	wg.Wait()
}

// process is one plugin process, restarted when it crashes.
type process struct {
	key string
	def definition
	log *slog.Logger

	lines *lineBudget // what the process prints, across its streams and restarts

	refs int // guarded by registry.mu

	ready    chan struct{} // closed when the first start is over
	startErr error         // the first start's error

	live     atomic.Pointer[instance] // nil while down
	downWhy  atomic.Pointer[string]
	restarts atomic.Int64

	stopOnce sync.Once
	stopc    chan struct{}
	stopped  chan struct{}

	healthInterval, healthTimeout time.Duration // copied at creation, for tests
}

func newProcess(key string, def definition, log *slog.Logger) *process {
	plog := log.With("plugin", def.Name)
	return &process{key: key, def: def, log: plog, lines: newLineBudget(plog),
		ready: make(chan struct{}), stopc: make(chan struct{}), stopped: make(chan struct{}),
		healthInterval: healthInterval, healthTimeout: healthTimeout}
}

// instance is one run of a plugin process.
type instance struct {
	client  *plugin.Client
	run     *procRunner
	rpc     pb.PluginClient
	health  grpc_health_v1.HealthClient
	mux     *wire.Mux
	pid     int
	started time.Time
}

func (p *process) stop() {
	p.stopOnce.Do(func() { close(p.stopc) })
	<-p.stopped
}

// down is the error of a call made while no instance runs.
func (p *process) down() error {
	why := "restarting"
	if w := p.downWhy.Load(); w != nil {
		why = *w
	}
	return fmt.Errorf("plugin %s is down (%s)", p.def.Name, why)
}

// pid is the running instance's process id, 0 while down.
func (p *process) pid() int {
	if inst := p.live.Load(); inst != nil {
		return inst.pid
	}
	return 0
}

func (p *process) supervise() {
	defer close(p.stopped)
	inst, err := p.start()
	p.startErr = err
	if err == nil {
		p.live.Store(inst)
	}
	close(p.ready)
	if err != nil {
		return
	}
	attrs := []any{"pid", inst.pid, "command", p.def.Path}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	if d, err := inst.rpc.Describe(ctx, &pb.DescribeRequest{}); err == nil && d.GetSummary() != "" {
		attrs = append(attrs, "summary", d.GetSummary())
	}
	cancel()
	p.log.Info("plugin started", attrs...)
	crashes := 0
	for {
		p.live.Store(inst)
		why, stopping := p.watch(inst)
		p.live.Store(nil)
		p.downWhy.Store(&why)
		inst.kill(stopping)
		if stopping {
			p.log.Info("plugin stopped", "pid", inst.pid)
			return
		}
		if time.Since(inst.started) >= stableAfter {
			crashes = 0
		}
		p.log.Warn("plugin went down; restarting it", "pid", inst.pid, "why", why,
			"up", time.Since(inst.started).Round(time.Millisecond).String())
		for {
			delay := restartBackoff[min(crashes, len(restartBackoff)-1)]
			crashes++
			select {
			case <-p.stopc:
				return
			case <-time.After(delay):
			}
			if inst, err = p.start(); err == nil {
				break
			}
			why = "restart failed: " + err.Error()
			p.downWhy.Store(&why)
			p.log.Error("plugin restart failed", "err", err.Error(), "attempt", crashes)
		}
		p.restarts.Add(1)
		p.log.Info("plugin restarted", "pid", inst.pid)
	}
}

// watch returns why inst stopped serving, or stopping when relay stops it.
func (p *process) watch(inst *instance) (why string, stopping bool) {
	health := time.NewTicker(p.healthInterval)
	defer health.Stop()
	failures := 0
	for {
		select {
		case <-p.stopc:
			return "stopped", true
		case <-inst.run.exited:
			return inst.run.ended(), false
		case <-inst.mux.Done():
			// A dead process breaks the connection first: say which.
			select {
			case <-inst.run.exited:
				return inst.run.ended(), false
			case <-time.After(exitGrace):
				return "connection lost: " + inst.mux.Err().Error(), false
			}
		case <-health.C:
			ctx, cancel := context.WithTimeout(context.Background(), p.healthTimeout)
			resp, err := inst.health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: plugin.GRPCServiceName})
			cancel()
			if err == nil && resp.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
				err = fmt.Errorf("status %s", resp.GetStatus())
			}
			if err == nil {
				failures = 0
				continue
			}
			failures++
			p.log.Warn("plugin health check failed", "err", err.Error(), "failures", failures)
			if failures >= healthFailures {
				return "health check failed: " + err.Error(), false
			}
		}
	}
}

// start runs the command, completes go-plugin's handshake, configures the
// plugin and opens the Handle stream.
func (p *process) start() (inst *instance, err error) {
	last := &tail{}
	var run *procRunner
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  wire.Handshake,
		Plugins:          wire.Plugins(nil),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		RunnerFunc: func(_ hclog.Logger, spec *exec.Cmd, _ string) (runner.Runner, error) {
			// spec carries the environment go-plugin prepared (relay's,
			// the handshake cookie, the socket directory).
			cmd := exec.Command(p.def.Path, p.def.Args...)
			cmd.Env = append(spec.Env, p.def.Env...)
			cmd.Dir = p.def.Dir
			r, err := newProcRunner(cmd)
			run = r
			return r, err
		},
		StartTimeout: startTimeout,
		// go-plugin lets a plugin send 2 GiB at once; relay reads no more
		// than the largest answer it would accept.
		GRPCDialOptions: answerLimit(p.def.MaxAnswer),
		// What the plugin prints is logged by lineLog; go-plugin's own
		// logger would log it a second time.
		Logger:     hclog.New(&hclog.LoggerOptions{Level: hclog.Off, Output: io.Discard}),
		Stderr:     &lineLog{log: p.log, stream: "stderr", tail: last, budget: p.lines},
		SyncStdout: &lineLog{log: p.log, stream: "stdout", budget: p.lines},
		SyncStderr: &lineLog{log: p.log, stream: "stderr", budget: p.lines},
	})
	fail := func(what string, err error) (*instance, error) {
		started := run != nil && run.pid > 0
		if started && what != "configure" {
			// A plugin that exited by itself says more than go-plugin's
			// error about the handshake it never made.
			if status, ok := run.exitedOnItsOwn(stderrGrace); ok {
				first, _, _ := strings.Cut(err.Error(), "\n")
				if strings.HasPrefix(first, "Unrecognized remote plugin message: ") && len(first) > len("Unrecognized remote plugin message: ") {
					// It printed something else than the handshake line.
					err = fmt.Errorf("%s; the process ended (%s)", first, status)
				} else {
					err = fmt.Errorf("the process ended (%s)", status)
				}
			}
		}
		if run != nil {
			_ = run.Kill(context.Background()) // no graceful exit for a plugin that failed
		}
		client.Kill()
		if started {
			select { // the plugin's last words explain most failures
			case <-run.stderr.eof:
			case <-time.After(stderrGrace):
			}
		}
		msg := fmt.Sprintf("%s: %v", what, err)
		if t := last.String(); t != "" {
			msg += "; it printed: " + t
		}
		return nil, errors.New(msg)
	}
	rpcClient, err := client.Client()
	if err != nil {
		return fail("start "+p.commandLine(), err)
	}
	raw, err := rpcClient.Dispense(wire.PluginName)
	if err != nil {
		return fail("start "+p.commandLine(), err)
	}
	rpc := raw.(pb.PluginClient)
	ctx, cancel := context.WithTimeout(context.Background(), configureTimeout)
	defer cancel()
	resp, err := rpc.Configure(ctx, &pb.ConfigureRequest{Config: p.def.Config})
	if err == nil && resp.GetError() != "" {
		err = errors.New(resp.GetError())
	}
	if err != nil {
		return fail("configure", err)
	}
	mux, err := wire.Open(rpc)
	if err != nil {
		return fail("open the message stream", err)
	}
	inst = &instance{client: client, run: run, rpc: rpc, mux: mux, pid: run.pid, started: time.Now()}
	if g, ok := rpcClient.(*plugin.GRPCClient); ok {
		inst.health = grpc_health_v1.NewHealthClient(g.Conn)
	}
	if inst.health == nil {
		mux.Close()
		return fail("start", errors.New("not a gRPC plugin"))
	}
	return inst, nil
}

// answerLimit is the dial option that bounds what relay reads from a
// plugin; none when no bound is set (go-plugin's own then applies).
func answerLimit(n int) []grpc.DialOption {
	if n <= 0 {
		return nil
	}
	return []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(n))}
}

// kill ends an instance. graceful: go-plugin's Shutdown call and up to 2 s
// for the plugin to exit, as when relay stops it; otherwise (it crashed, or
// stopped answering) SIGKILL at once. Either way the process is killed after
// killGrace, so that a frozen plugin cannot hold up relay.
func (inst *instance) kill(graceful bool) {
	inst.mux.Close()
	if !graceful {
		_ = inst.run.Kill(context.Background())
	}
	force := time.AfterFunc(killGrace, func() { _ = inst.run.Kill(context.Background()) })
	inst.client.Kill()
	force.Stop()
}

func (p *process) commandLine() string {
	return strings.Join(append([]string{p.def.Path}, p.def.Args...), " ")
}

// envList turns a plugin's env map into sorted KEY=VALUE entries.
func envList(env map[string]string) []string {
	list := make([]string, 0, len(env))
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	sort.Strings(list)
	return list
}
