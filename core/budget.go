package core

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// MemoryBudget is how much memory relay plans to use, and how it is shared
// out: the Go runtime's soft limit is the whole of it, the history may hold
// half of it and the send queues of all sessions together a quarter; the
// rest is for connections, buffers and handlers.
type MemoryBudget struct {
	Limit  int64  // bytes; 0: no budget
	Source string // where Limit came from, for the log
}

// budgetShare is the part of a memory cgroup's limit the budget takes when
// limits.memory is not set: the rest is headroom for what the Go runtime
// does not count (thread stacks outside the heap, the kernel's socket
// buffers are charged to the cgroup too) and for the garbage collector to
// catch up with.
const budgetShare = 0.75

// noCgroupLimit is the value above which a cgroup limit means "none"
// (cgroup v1 reports an unlimited group as a number near 2^63).
const noCgroupLimit = 1 << 60

// ResolveMemoryBudget turns limits.memory into a budget: a positive value
// is the budget, -1 turns it off, and 0 takes budgetShare of the memory
// cgroup limit relay runs under, if there is one.
func ResolveMemoryBudget(setting int64) MemoryBudget {
	switch {
	case setting > 0:
		return MemoryBudget{Limit: setting, Source: "limits.memory"}
	case setting < 0:
		return MemoryBudget{Source: "turned off (limits.memory: -1)"}
	}
	limit, where, err := cgroupMemoryLimit("/proc/self/cgroup", "/sys/fs/cgroup")
	if err != nil || limit <= 0 {
		return MemoryBudget{Source: "none (no memory cgroup limit)"}
	}
	return MemoryBudget{Limit: int64(float64(limit) * budgetShare),
		Source: fmt.Sprintf("%d%% of the memory cgroup limit %d (%s)", int(budgetShare*100), limit, where)}
}

// HistoryBytes is the history's share of the budget, never more than what
// history.max_bytes allows.
func (b MemoryBudget) HistoryBytes(maxBytes int64) int64 {
	if b.Limit <= 0 {
		return maxBytes
	}
	return min(maxBytes, b.Limit/2)
}

// QueueBytes is the bytes all sessions' send queues may hold together; 0
// means no bound beyond each session's own.
func (b MemoryBudget) QueueBytes() int64 {
	if b.Limit <= 0 {
		return 0
	}
	return b.Limit / 4
}

// HighWater is the memory use above which the instance reports pressure
// (/readyz 503) and sheds: 90% of the budget.
func (b MemoryBudget) HighWater() int64 { return b.Limit / 10 * 9 }

// cgroupMemoryLimit reads the memory limit of this process's own cgroup:
// cgroup v2's memory.max, or cgroup v1's memory.limit_in_bytes in the
// memory hierarchy. It returns 0 when the group has no limit.
func cgroupMemoryLimit(procCgroup, root string) (int64, string, error) {
	f, err := os.Open(procCgroup)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	var v1, v2 string
	found1, found2 := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2, found2 = parts[2], true
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				v1, found1 = parts[2], true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, "", err
	}
	var file string
	switch {
	case found1:
		file = filepath.Join(root, "memory", v1, "memory.limit_in_bytes")
	case found2:
		file = filepath.Join(root, v2, "memory.max")
	default:
		return 0, "", fmt.Errorf("%s names no memory cgroup", procCgroup)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		// Inside a container the group's own directory is often mounted
		// as the root of the hierarchy.
		var alt string
		if found1 {
			alt = filepath.Join(root, "memory", "memory.limit_in_bytes")
		} else {
			alt = filepath.Join(root, "memory.max")
		}
		if b, err = os.ReadFile(alt); err != nil {
			return 0, "", err
		}
		file = alt
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, file, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("%s: %w", file, err)
	}
	if found1 {
		// A v1 group is also bound by its ancestors' limits; memory.stat
		// tells the tightest of them.
		if h := v1HierarchicalLimit(filepath.Join(filepath.Dir(file), "memory.stat")); h > 0 && h < n {
			n = h
		}
	}
	if n >= noCgroupLimit {
		return 0, file, nil
	}
	return n, file, nil
}

// v1HierarchicalLimit reads hierarchical_memory_limit from a cgroup v1
// memory.stat (0 when absent).
func v1HierarchicalLimit(statFile string) int64 {
	b, err := os.ReadFile(statFile)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "hierarchical_memory_limit "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			return n
		}
	}
	return 0
}

// memoryInUse is what relay needs of the memory the Go runtime holds: all
// it holds from the OS and has not given back, less the heap that is free
// or garbage, with the heap counted as what the last collection found
// live. Garbage is not pressure: near its soft limit the runtime collects
// it sooner; live memory near the budget is.
func memoryInUse() int64 {
	samples := []metrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	metrics.Read(samples)
	var v [6]int64
	for i, s := range samples {
		if s.Value.Kind() != metrics.KindUint64 {
			return 0
		}
		v[i] = int64(s.Value.Uint64())
	}
	return v[0] - v[1] - v[2] - v[3] - v[4] + v[5]
}

// pressureInterval is how often memory use is compared to the budget.
const pressureInterval = 100 * time.Millisecond

// SetMemoryBudget applies b to the server before it serves: the send
// queues of all sessions together get b.QueueBytes, and memory use is
// watched: above b.HighWater the instance reports pressure on /readyz and
// in relay_memory_pressure, and sheds until it is back under 80% of the
// budget (the widest send queues first, then history, idle tokens first).
// The Go runtime's soft limit is the caller's to set: it is per process.
func (s *Server) SetMemoryBudget(b MemoryBudget) {
	s.budget = b
	s.hub.queues.limit.Store(b.QueueBytes())
	if b.Limit <= 0 {
		return
	}
	s.bgDone.Add(1)
	go func() {
		defer s.bgDone.Done()
		s.watchMemory(s.ctx)
	}()
}

// Budget returns the memory budget the server works within.
func (s *Server) Budget() MemoryBudget { return s.budget }

func (s *Server) watchMemory(ctx context.Context) {
	tick := time.NewTicker(pressureInterval)
	defer tick.Stop()
	high, low := s.budget.HighWater(), s.budget.Limit/10*8
	trimmer, _ := s.hub.bp.(interface{ TrimHistory(fraction float64) int64 })
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		use := memoryInUse()
		switch {
		case use > high:
			if !s.pressure.Swap(true) {
				s.log.Warn("memory pressure: shedding, and /readyz answers 503", "in_use", use, "budget", s.budget.Limit)
			}
			// The queues give up the most per connection closed; the
			// history is only a convenience for reconnecting clients.
			// Queues that hold little are not what the pressure is about.
			if q := s.hub.queues.bytes.Load(); q > s.budget.QueueBytes()/8 {
				s.hub.shedQueues(q / 2)
			}
			if trimmer != nil {
				trimmer.TrimHistory(0.8)
			}
		case use < low:
			if s.pressure.Swap(false) {
				s.log.Info("memory pressure over", "in_use", use, "budget", s.budget.Limit)
			}
		}
	}
}
