package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// latencySummary holds the percentiles of a set of delivery latencies.
type latencySummary struct {
	n                        int
	p50, p90, p99, p999, max time.Duration
}

// summarize sorts lat in place and takes nearest-rank percentiles.
func summarize(lat []time.Duration) latencySummary {
	if len(lat) == 0 {
		return latencySummary{}
	}
	slices.Sort(lat)
	return latencySummary{
		n:    len(lat),
		p50:  percentile(lat, 500),
		p90:  percentile(lat, 900),
		p99:  percentile(lat, 990),
		p999: percentile(lat, 999),
		max:  lat[len(lat)-1],
	}
}

// percentile is the nearest-rank percentile of sorted for perMille (999
// for p99.9): the smallest value with at least that share of the values at
// or below it. Integer arithmetic keeps the rank exact.
func percentile(sorted []time.Duration, perMille int) time.Duration {
	rank := (perMille*len(sorted) + 999) / 1000
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

func (s latencySummary) String() string {
	if s.n == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s ms (%d samples)",
		ms(s.p50), ms(s.p90), ms(s.p99), ms(s.p999), ms(s.max), s.n)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

// selfCPU is this process's user+system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuTicks is the time /proc/stat counts for one CPU.
type cpuTicks struct {
	task  time.Duration // user + nice + system: what processes' utime+stime add up to
	steal time.Duration // taken by the hypervisor
}

// readCPUTicks returns /proc/stat's counters for each CPU.
func readCPUTicks() (map[int]cpuTicks, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	out := make(map[int]cpuTicks)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		cpu, err := strconv.Atoi(f[0][3:])
		if err != nil {
			continue
		}
		var v [9]int64
		for i := 1; i < 9; i++ {
			v[i], _ = strconv.ParseInt(f[i], 10, 64)
		}
		tick := time.Second / clockTicks
		out[cpu] = cpuTicks{task: time.Duration(v[1]+v[2]+v[3]) * tick, steal: time.Duration(v[8]) * tick}
	}
	return out, nil
}

// noise watches for CPU time used by anything but the server and the
// bench during a run: other processes on the machine, or steal.
type noise struct {
	start  map[int]cpuTicks
	ours0  time.Duration
	wall0  time.Time
	failed bool
}

func watchNoise(ours time.Duration) *noise {
	t, err := readCPUTicks()
	return &noise{start: t, ours0: ours, wall0: time.Now(), failed: err != nil}
}

// noiseLimit is the foreign CPU use, in percent of one CPU, above which a
// run counts as disturbed and is repeated.
const noiseLimit = 10

// report describes the foreign CPU use since watchNoise, ours being the
// server's and the bench's CPU time now, and returns it in percent of a CPU
// (other processes plus steal).
func (n *noise) report(ours time.Duration) (string, float64) {
	t, err := readCPUTicks()
	if n.failed || err != nil {
		return "other load unknown", 0
	}
	var task, steal time.Duration
	for c := range t {
		task += t[c].task - n.start[c].task
		steal += t[c].steal - n.start[c].steal
	}
	wall := time.Since(n.wall0)
	other := max(0, task-(ours-n.ours0))
	level := pct(other, wall) + pct(steal, wall)
	s := fmt.Sprintf("other load %.0f%%, steal %.0f%% of a CPU", pct(other, wall), pct(steal, wall))
	if level > noiseLimit {
		s += " — NOISY"
	}
	return s, level
}
