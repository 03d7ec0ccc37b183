package procstate

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestStates(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if !Alive(pid) || Stopped(pid) {
		t.Fatalf("running sleep: alive %v, stopped %v", Alive(pid), Stopped(pid))
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "stopped", func() bool { return Stopped(pid) })
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	eventually(t, "running again", func() bool { return !Stopped(pid) })
	_ = cmd.Process.Kill()
	// Not yet waited for: a zombie, which is not alive.
	eventually(t, "dead", func() bool { return !Alive(pid) })
	_ = cmd.Wait()
	if Alive(pid) || Stopped(pid) {
		t.Fatal("a reaped process reads as alive or stopped")
	}
	if !Alive(os.Getpid()) {
		t.Fatal("this test's own process reads as dead")
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
