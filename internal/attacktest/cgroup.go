package attacktest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// cgroup is a memory cgroup child made for one relay process.
type cgroup struct {
	version string // "cgroup v1" or "cgroup v2"
	dir     string
}

var cgroupSeq atomic.Int64

// newCgroup makes a memory cgroup child of this process's own group with
// the given limit and no swap: cgroup v2 when the unified hierarchy is
// mounted at /sys/fs/cgroup, else the v1 memory controller.
func newCgroup(name string, limit int64) (*cgroup, error) {
	base := fmt.Sprintf("relay-attack-%d-%d-%s", os.Getpid(), cgroupSeq.Add(1), sanitize(name))
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return newCgroupV2(base, limit)
	}
	return newCgroupV1(base, limit)
}

func sanitize(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) > 60 {
		b = b[:60]
	}
	return string(b)
}

// ownGroup returns this process's group path in a hierarchy of
// /proc/self/cgroup: the line whose controllers include want ("" for the
// v2 line "0::").
func ownGroup(want string) (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if want == "" && parts[0] == "0" && parts[1] == "" {
			return parts[2], nil
		}
		for _, c := range strings.Split(parts[1], ",") {
			if want != "" && c == want {
				return parts[2], nil
			}
		}
	}
	return "", fmt.Errorf("no %q line in /proc/self/cgroup", want)
}

func newCgroupV1(base string, limit int64) (*cgroup, error) {
	own, err := ownGroup("memory")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join("/sys/fs/cgroup/memory", own, base)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup v1: %w", err)
	}
	cg := &cgroup{version: "cgroup v1", dir: dir}
	if err := cg.write("memory.limit_in_bytes", limit); err != nil {
		_ = cg.remove()
		return nil, err
	}
	// With swap accounting, memory+swap gets the same bound: an attack must
	// not hide in swap.
	if _, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes")); err == nil {
		if err := cg.write("memory.memsw.limit_in_bytes", limit); err != nil {
			_ = cg.remove()
			return nil, err
		}
	}
	return cg, nil
}

func newCgroupV2(base string, limit int64) (*cgroup, error) {
	own, err := ownGroup("")
	if err != nil {
		return nil, err
	}
	parent := filepath.Join("/sys/fs/cgroup", own)
	ctl, err := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
	if err != nil {
		return nil, fmt.Errorf("cgroup v2: %w", err)
	}
	if !strings.Contains(" "+strings.TrimSpace(string(ctl))+" ", " memory ") {
		// Fails when the parent holds processes itself (the "no internal
		// processes" rule); then there is no child to be had.
		if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory"), 0o644); err != nil {
			return nil, fmt.Errorf("cgroup v2: enabling the memory controller in %s: %w", parent, err)
		}
	}
	dir := filepath.Join(parent, base)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup v2: %w", err)
	}
	cg := &cgroup{version: "cgroup v2", dir: dir}
	if err := cg.write("memory.max", limit); err != nil {
		_ = cg.remove()
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
		if err := cg.write("memory.swap.max", 0); err != nil {
			_ = cg.remove()
			return nil, err
		}
	}
	return cg, nil
}

func (cg *cgroup) write(file string, v int64) error {
	if err := os.WriteFile(filepath.Join(cg.dir, file), []byte(strconv.FormatInt(v, 10)), 0o644); err != nil {
		return fmt.Errorf("%s: %w", cg.version, err)
	}
	return nil
}

func (cg *cgroup) procsFile() string { return filepath.Join(cg.dir, "cgroup.procs") }

// peak is the group's highest memory use: memory.max_usage_in_bytes (v1)
// or memory.peak (v2, Linux 5.19+; 0 before).
func (cg *cgroup) peak() int64 {
	file := "memory.max_usage_in_bytes"
	if cg.version == "cgroup v2" {
		file = "memory.peak"
	}
	b, err := os.ReadFile(filepath.Join(cg.dir, file))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// oomKills counts the processes the kernel killed in the group for want
// of memory: oom_kill in memory.oom_control (v1) or memory.events (v2).
func (cg *cgroup) oomKills() int64 {
	file := "memory.oom_control"
	if cg.version == "cgroup v2" {
		file = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(cg.dir, file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			return n
		}
	}
	return 0
}

// remove deletes the group once its processes have gone (the kernel
// takes a moment to let go of a process it just reaped).
func (cg *cgroup) remove() error {
	if cg == nil {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := os.Remove(cg.dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("removing %s: %w", cg.dir, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
