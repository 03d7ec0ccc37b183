package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// Table columns, in print order.
const (
	colThroughput = "throughput msg/s"
	colCPUPerMsg  = "CPU µs/msg"
	colCPUPer100k = "CPU s/100k"
	colP50        = "p50 ms"
	colP99        = "p99 ms"
	colP999       = "p99.9 ms"
	colRSS        = "RSS KiB/conn"
)

var columns = []string{colThroughput, colCPUPerMsg, colCPUPer100k, colP50, colP99, colP999, colRSS}

// options are the knobs of the measurements.
type options struct {
	payload, dialConc int

	tputPairs, tputWindow int
	tputDur, tputWarmup   time.Duration

	cpuPairs int
	cpuRate  float64
	cpuDur   time.Duration

	latPairs int
	latRate  float64
	latDur   time.Duration

	rssConns  int
	rssSettle time.Duration
}

// measurement is one row-filling experiment, run against each server.
type measurement struct {
	name    string
	columns []string
	run     func(b *bench, ctx context.Context, s *server, t target) (result, error)
}

// result is what one measurement found for one server.
type result struct {
	values     map[string]float64 // by column
	noise      float64            // foreign CPU use during the run, % of a CPU
	incomplete bool               // lost messages or failed connections
}

var measurements = []measurement{
	{"throughput", []string{colThroughput}, (*bench).throughput},
	{"cpu", []string{colCPUPerMsg, colCPUPer100k}, (*bench).cpu},
	{"latency", []string{colP50, colP99, colP999}, (*bench).latency},
	{"rss", []string{colRSS}, (*bench).rss},
}

type bench struct {
	launcher *launcher
	opt      options
}

// measure runs m against a fresh server of spec.
func (b *bench) measure(ctx context.Context, m measurement, spec serverSpec) (result, error) {
	s, err := b.launcher.start(ctx, spec)
	if err != nil {
		return result{}, err
	}
	defer s.stop()
	if err := requireLoopback(s.addr); err != nil {
		return result{}, err
	}
	out, err := m.run(b, ctx, s, target{addr: s.addr, v1: spec.v1})
	if aerr := s.alive(); aerr != nil {
		err = errors.Join(err, aerr)
	}
	return out, err
}

// throughput: each pair's sender keeps a window of messages in flight;
// deliveries are counted over the measured interval after a warm-up.
func (b *bench) throughput(ctx context.Context, s *server, t target) (result, error) {
	o := b.opt
	r := newRun(t, "tput")
	defer r.close()
	r.connectPairs(ctx, o.tputPairs, o.dialConc, o.tputWindow)
	r.handshake(ctx, 10*time.Second)
	pairs := r.active()
	if len(pairs) == 0 {
		return result{}, r.failed("no pair got through the handshake")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range pairs {
		_ = p.tx.SetWriteDeadline(time.Now().Add(o.tputWarmup + o.tputDur + 10*time.Second))
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.sendWindowed(p, o.payload, stop)
		}()
	}
	sleepCtx(ctx, o.tputWarmup)
	d0, cpu0, self0, t0 := r.delivered.Load(), mustCPU(s), selfCPU(), time.Now()
	reads0, writes0, ioErr := s.syscalls()
	nz := watchNoise(cpu0 + self0)
	sleepCtx(ctx, o.tputDur)
	d1, cpu1, self1, elapsed := r.delivered.Load(), mustCPU(s), selfCPU(), time.Since(t0)
	noisy, level := nz.report(cpu1 + self1)
	reads1, writes1, ioErr1 := s.syscalls()
	close(stop)
	wg.Wait()
	r.drain(3 * time.Second)
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	tput := float64(d1-d0) / elapsed.Seconds()
	bound := ""
	if pct(self1-self0, elapsed) > 90 {
		bound = " — load generator saturated: a lower bound"
	}
	fmt.Printf("  %-10s %.0f msg/s over %.1fs (server CPU %.0f%%, bench CPU %.0f%%%s)\n  %-10s %s; %s\n  %-10s %s\n",
		s.spec.name, tput, elapsed.Seconds(), pct(cpu1-cpu0, elapsed), pct(self1-self0, elapsed), bound,
		"", syscallsPerMsg(reads1-reads0, writes1-writes0, d1-d0, errors.Join(ioErr, ioErr1)), noisy, "", r.counts())
	r.printProblems()
	return result{values: map[string]float64{colThroughput: tput}, noise: level, incomplete: r.incomplete()}, nil
}

// cpu: server CPU time over a fixed-rate run, per delivered message.
func (b *bench) cpu(ctx context.Context, s *server, t target) (result, error) {
	o := b.opt
	r := newRun(t, "cpu")
	r.latency = true
	defer r.close()
	r.connectPairs(ctx, o.cpuPairs, o.dialConc, 0)
	r.handshake(ctx, 10*time.Second)
	sleepCtx(ctx, 200*time.Millisecond)
	cpu0, err := s.cpuTime()
	if err != nil {
		return result{}, err
	}
	reads0, writes0, ioErr := s.syscalls()
	cs0, csErr := s.contextSwitches()
	t0, nz := time.Now(), watchNoise(cpu0+selfCPU())
	if err := r.runScheduled(ctx, o.payload, o.cpuRate, o.cpuDur); err != nil {
		return result{}, r.failed(err.Error())
	}
	elapsed := time.Since(t0)
	cpu1, err := s.cpuTime()
	if err != nil {
		return result{}, err
	}
	noisy, level := nz.report(cpu1 + selfCPU())
	reads1, writes1, ioErr1 := s.syscalls()
	cs1, csErr1 := s.contextSwitches()
	delivered := r.delivered.Load()
	if delivered == 0 {
		return result{}, r.failed("nothing delivered")
	}
	used := cpu1 - cpu0
	perMsg := used.Seconds() / float64(delivered)
	sys := syscallsPerMsg(reads1-reads0, writes1-writes0, delivered, errors.Join(ioErr, ioErr1))
	if csErr == nil && csErr1 == nil {
		sys += fmt.Sprintf(", %.2f context switches per msg", float64(cs1-cs0)/float64(delivered))
	}
	fmt.Printf("  %-10s %.2f µs/msg, %.3f s per 100k (server CPU %.2fs = %.0f%% of %.1fs; %s)\n"+
		"  %-10s latency %s\n  %-10s %s; %s\n",
		s.spec.name, perMsg*1e6, perMsg*1e5, used.Seconds(), pct(used, elapsed), elapsed.Seconds(), sys,
		"", summarize(r.latencies()), "", noisy, r.counts())
	r.printProblems()
	return result{values: map[string]float64{colCPUPerMsg: perMsg * 1e6, colCPUPer100k: perMsg * 1e5}, noise: level, incomplete: r.incomplete()}, nil
}

// latency: delivery latency from the scheduled send time at a fixed rate.
func (b *bench) latency(ctx context.Context, s *server, t target) (result, error) {
	o := b.opt
	r := newRun(t, "lat")
	r.latency = true
	defer r.close()
	r.connectPairs(ctx, o.latPairs, o.dialConc, 0)
	r.handshake(ctx, 10*time.Second)
	sleepCtx(ctx, 200*time.Millisecond)
	nz := watchNoise(mustCPU(s) + selfCPU())
	if err := r.runScheduled(ctx, o.payload, o.latRate, o.latDur); err != nil {
		return result{}, r.failed(err.Error())
	}
	noisy, level := nz.report(mustCPU(s) + selfCPU())
	sum := summarize(r.latencies())
	fmt.Printf("  %-10s %s\n  %-10s %s; %s\n", s.spec.name, sum, "", noisy, r.counts())
	r.printProblems()
	if sum.n == 0 {
		return result{}, r.failed("no latency samples")
	}
	toMs := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return result{values: map[string]float64{colP50: toMs(sum.p50), colP99: toMs(sum.p99), colP999: toMs(sum.p999)}, noise: level, incomplete: r.incomplete()}, nil
}

// rss: resident memory the server adds per idle connection.
func (b *bench) rss(ctx context.Context, s *server, t target) (result, error) {
	o := b.opt
	sleepCtx(ctx, 500*time.Millisecond)
	before, err := s.rssKiB()
	if err != nil {
		return result{}, err
	}
	r := newRun(t, "rss")
	defer r.close()
	urls := make([]string, 0, o.rssConns)
	for i := 0; len(urls) < o.rssConns; i++ {
		token := "rss-" + strconv.Itoa(i)
		urls = append(urls, t.url(token, "h5"))
		if len(urls) < o.rssConns {
			urls = append(urls, t.url(token, "miniapp"))
		}
	}
	r.dialAll(ctx, urls, o.dialConc)
	for _, c := range r.conns {
		r.startReader(c, nil, false)
	}
	open := len(r.conns)
	if open == 0 {
		return result{}, r.failed("no connection opened")
	}
	firsts := "seed wire: no first frame to wait for"
	if t.v1 {
		// Every v1 connection gets relay.hello first.
		deadline := time.Now().Add(10 * time.Second)
		for r.firstFrames.Load() < int64(open) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		firsts = fmt.Sprintf("%d/%d got relay.hello", r.firstFrames.Load(), open)
	} else {
		sleepCtx(ctx, time.Second)
	}
	sleepCtx(ctx, o.rssSettle)
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	after, err := s.rssKiB()
	if err != nil {
		return result{}, err
	}
	perConn := float64(after-before) / float64(open)
	fmt.Printf("  %-10s %.2f KiB/conn (VmRSS %d → %d KiB with %d connections; %s; dial failures %d, connection errors %d)\n",
		s.spec.name, perConn, before, after, open, firsts, r.dialFailed.Load(), r.connErrors.Load())
	if s.spec.relay {
		fmt.Printf("  %-10s %s\n", "", s.goMemory(open))
	}
	r.printProblems()
	missing := t.v1 && r.firstFrames.Load() < int64(open)
	return result{values: map[string]float64{colRSS: perConn}, incomplete: missing || r.incomplete()}, nil
}

// failed makes an error of what went wrong with the run's counts.
func (r *run) failed(what string) error {
	r.printProblems()
	return fmt.Errorf("%s (%s)", what, r.counts())
}

func (r *run) printProblems() {
	for _, p := range r.problems() {
		fmt.Printf("  %-10s ! %s\n", "", p)
	}
}

func syscallsPerMsg(reads, writes, msgs int64, err error) string {
	if err != nil || msgs <= 0 {
		return "syscall counts unavailable"
	}
	return fmt.Sprintf("%.2f read + %.2f write syscalls per msg", float64(reads)/float64(msgs), float64(writes)/float64(msgs))
}

func mustCPU(s *server) time.Duration {
	d, err := s.cpuTime()
	if err != nil {
		fmt.Printf("  warning: reading CPU time of %s: %v\n", s.spec.name, err)
	}
	return d
}

func pct(used, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return 100 * used.Seconds() / elapsed.Seconds()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
