package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The kernel sends a child its parent-death signal (Pdeathsig) when the
// thread that forked it ends, not the process. Go may end a thread (when a
// goroutine locked to it exits), so every plugin is started from one thread
// that stays locked, and alive, as long as relay runs.
var spawner struct {
	once sync.Once
	jobs chan func()
}

func onSpawnerThread(f func()) {
	spawner.once.Do(func() {
		spawner.jobs = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as relay
			for job := range spawner.jobs {
				job()
			}
		}()
	})
	done := make(chan struct{})
	spawner.jobs <- func() { defer close(done); f() }
	<-done
}

// procRunner starts a plugin process for go-plugin (its runner.Runner):
// from the spawner thread, with SIGKILL as parent-death signal so that a
// plugin never outlives relay, even when relay is killed with SIGKILL, and
// in a process group of its own so that a Ctrl-C meant for relay does not
// kill the plugins before relay has drained its sessions.
type procRunner struct {
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr *eofReader
	pid    int

	exited  chan struct{} // closed when Wait has returned
	waitErr error         // Wait's error, set before exited is closed
}

func newProcRunner(cmd *exec.Cmd) (*procRunner, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	return &procRunner{cmd: cmd, stdout: stdout, stderr: &eofReader{ReadCloser: stderr, eof: make(chan struct{})},
		exited: make(chan struct{})}, nil
}

func (r *procRunner) Start(context.Context) error {
	var err error
	onSpawnerThread(func() { err = r.cmd.Start() })
	if err != nil {
		return err
	}
	r.pid = r.cmd.Process.Pid
	return nil
}

func (r *procRunner) Diagnose(context.Context) string { return "" }
func (r *procRunner) Stdout() io.ReadCloser           { return r.stdout }
func (r *procRunner) Stderr() io.ReadCloser           { return r.stderr }
func (r *procRunner) Name() string                    { return r.cmd.Path }
func (r *procRunner) ID() string                      { return strconv.Itoa(r.pid) }

// Wait waits for the process to end (go-plugin calls it once).
func (r *procRunner) Wait(context.Context) error {
	r.waitErr = r.cmd.Wait()
	close(r.exited)
	return r.waitErr
}

// exitedOnItsOwn reports how the process ended when it ended by itself
// (an exit status, not our kill) within wait.
func (r *procRunner) exitedOnItsOwn(wait time.Duration) (string, bool) {
	select {
	case <-r.exited:
	case <-time.After(wait):
		return "", false
	}
	var exit *exec.ExitError
	if errors.As(r.waitErr, &exit) && exit.Exited() {
		return exit.Error(), true
	}
	if r.waitErr == nil {
		return "exit status 0", true
	}
	return "", false
}

// ended says how the process ended, once it has.
func (r *procRunner) ended() string {
	if r.waitErr == nil {
		return "the process ended (exit status 0)"
	}
	return "the process ended (" + r.waitErr.Error() + ")"
}

// Kill kills the plugin's whole process group: a plugin started through a
// wrapper script takes its children with it.
func (r *procRunner) Kill(context.Context) error {
	if r.pid <= 0 {
		return nil
	}
	_ = syscall.Kill(-r.pid, syscall.SIGKILL)
	if err := r.cmd.Process.Kill(); err != nil && err != os.ErrProcessDone {
		return fmt.Errorf("kill plugin %d: %w", r.pid, err)
	}
	return nil
}

func (r *procRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

func (r *procRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}

// eofReader tells when the plugin's stderr has been read to its end, so
// that a start error can quote the plugin's last words.
type eofReader struct {
	io.ReadCloser
	once sync.Once
	eof  chan struct{}
}

func (r *eofReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil {
		r.once.Do(func() { close(r.eof) })
	}
	return n, err
}
