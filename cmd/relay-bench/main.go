// Command relay-bench measures relay against a minimal gorilla/websocket
// relay (./baseline) on this machine: throughput, server CPU per message,
// latency at a fixed rate and memory per idle connection. Every server runs
// in the same invocation, pinned to its own CPU, so that the figures can be
// read as ratios.
//
//	go build -o bin/relay ./cmd/relay && go run ./cmd/relay-bench -relay bin/relay
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

func main() {
	os.Exit(realMain())
}

func realMain() int {
	var (
		o           options
		relayBin    = flag.String("relay", "bin/relay", "relay binary under test")
		baselineBin = flag.String("baseline", "", "prebuilt baseline binary (default: go build ./cmd/relay-bench/baseline)")
		serversFlag = flag.String("servers", "relay-v1,relay-seed,baseline", "servers to measure, in order")
		only        = flag.String("only", "", "run only these measurements: throughput, cpu, latency, rss (comma-separated)")
		serverCPU   = flag.Int("server-cpu", 0, "CPU the servers are pinned to (taskset)")
		benchCPU    = flag.Int("bench-cpu", 1, "CPU the load generator is pinned to")
		pin         = flag.Bool("pin", true, "pin servers and load generator to their CPUs")
		timeout     = flag.Duration("timeout", 6*time.Minute, "abort the whole run after this long")
		verbose     = flag.Bool("v", false, "show the servers' stderr")
		retries     = flag.Int("retries", 1, "times a run disturbed by other processes' CPU use is repeated")
	)
	flag.IntVar(&o.payload, "payload", 256, "bytes per message frame sent")
	flag.IntVar(&o.dialConc, "dial-concurrency", 200, "connections opened at once")
	flag.IntVar(&o.tputPairs, "tput-pairs", 100, "throughput: sender/receiver pairs")
	flag.IntVar(&o.tputWindow, "tput-window", 32, "throughput: messages in flight per pair")
	flag.DurationVar(&o.tputDur, "tput-duration", 5*time.Second, "throughput: measured interval")
	flag.DurationVar(&o.tputWarmup, "tput-warmup", time.Second, "throughput: unmeasured warm-up before it")
	flag.IntVar(&o.cpuPairs, "cpu-pairs", 100, "cpu: pairs")
	flag.Float64Var(&o.cpuRate, "cpu-rate", 20000, "cpu: messages per second in total")
	flag.DurationVar(&o.cpuDur, "cpu-duration", 5*time.Second, "cpu: duration of the fixed-rate run")
	flag.IntVar(&o.latPairs, "lat-pairs", 1000, "latency: pairs")
	flag.Float64Var(&o.latRate, "lat-rate", 5000, "latency: messages per second in total")
	flag.DurationVar(&o.latDur, "lat-duration", 5*time.Second, "latency: duration of the fixed-rate run")
	flag.IntVar(&o.rssConns, "rss-conns", 10000, "rss: idle connections opened")
	flag.DurationVar(&o.rssSettle, "rss-settle", 2*time.Second, "rss: settle time before reading VmRSS")
	flag.Parse()
	if flag.NArg() > 0 {
		return fail(fmt.Errorf("unexpected arguments %v", flag.Args()))
	}
	if *retries < 0 || *retries > 3 {
		return fail(errors.New("-retries must be 0..3"))
	}

	specs, err := pickServers(*serversFlag)
	if err != nil {
		return fail(err)
	}
	ms, err := pickMeasurements(*only)
	if err != nil {
		return fail(err)
	}
	if err := o.validate(); err != nil {
		return fail(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	tmp, err := os.MkdirTemp("", "relay-bench-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)
	defer killChildren()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-signals
		fmt.Fprintf(os.Stderr, "\nrelay-bench: %s: killing the servers\n", sig)
		killChildren()
		os.RemoveAll(tmp)
		os.Exit(130)
	}()

	l := &launcher{tmp: tmp, cpu: *serverCPU, pin: *pin, verbose: *verbose}
	if err := l.prepare(ctx, specs, *relayBin, *baselineBin); err != nil {
		return fail(err)
	}
	if err := raiseFileLimit(o.rssConns + 1000); err != nil {
		return fail(err)
	}
	if *pin {
		if err := checkPinning(*serverCPU, *benchCPU); err != nil {
			return fail(fmt.Errorf("%w (use -pin=false to run unpinned)", err))
		}
		if err := pinSelf(*benchCPU); err != nil {
			return fail(err)
		}
		fmt.Printf("servers pinned to CPU %d (taskset), load generator to CPU %d (GOMAXPROCS 1)\n", *serverCPU, *benchCPU)
	} else {
		fmt.Println("not pinned: servers and load generator share the CPUs")
	}

	b := &bench{launcher: l, opt: o}
	results := make(map[string]map[string]string) // server → column → cell
	values := make(map[string]map[string]float64)
	for _, spec := range specs {
		results[spec.name] = make(map[string]string)
		values[spec.name] = make(map[string]float64)
	}
	failures, noisy, incomplete := 0, false, false
	start := time.Now()
	for _, m := range ms {
		fmt.Printf("\n== %s: %s\n", m.name, o.describe(m.name))
		for _, spec := range specs {
			if ctx.Err() != nil {
				break
			}
			res, err := b.measureQuietly(ctx, m, spec, *retries)
			if err != nil {
				failures++
				fmt.Printf("  %-10s FAILED: %v\n", spec.name, err)
				for _, c := range m.columns {
					results[spec.name][c] = "failed"
				}
				continue
			}
			for c, v := range res.values {
				values[spec.name][c] = v
				results[spec.name][c] = format(c, v)
				if res.noise > noiseLimit {
					results[spec.name][c] += "~"
					noisy = true
				}
				if res.incomplete {
					results[spec.name][c] += "!"
					incomplete = true
				}
			}
		}
	}
	if ctx.Err() != nil {
		fmt.Printf("\naborted: %v after %s\n", ctx.Err(), *timeout)
		failures++
	}
	fmt.Printf("\nresults (%s, %d CPUs, total %.0fs)\n\n", runtime.Version(), runtime.NumCPU(), time.Since(start).Seconds())
	printTable(specs, ms, results, values)
	if incomplete {
		fmt.Println("! messages were lost or connections failed in that run: see its counts above.")
	}
	if noisy {
		fmt.Printf("~ other processes used more than %d%% of a CPU during that run, even after %d retries: less reliable.\n", noiseLimit, *retries)
	}
	if failures > 0 {
		return 1
	}
	return 0
}

// measureQuietly repeats a run that other processes disturbed, up to
// retries times, and keeps the least disturbed one.
func (b *bench) measureQuietly(ctx context.Context, m measurement, spec serverSpec, retries int) (result, error) {
	var best result
	for attempt := 0; ; attempt++ {
		res, err := b.measure(ctx, m, spec)
		if err != nil {
			return res, err
		}
		if attempt == 0 || res.noise < best.noise {
			best = res
		}
		if best.noise <= noiseLimit || attempt >= retries || ctx.Err() != nil {
			return best, nil
		}
		fmt.Printf("  %-10s disturbed by other load (%.0f%% of a CPU): measuring again\n", spec.name, res.noise)
	}
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "relay-bench:", err)
	return 2
}

func pickServers(list string) ([]serverSpec, error) {
	var specs []serverSpec
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, s := range knownServers {
			if s.name == name {
				specs, found = append(specs, s), true
			}
		}
		if !found {
			var known []string
			for _, s := range knownServers {
				known = append(known, s.name)
			}
			return nil, fmt.Errorf("unknown server %q (known: %s)", name, strings.Join(known, ", "))
		}
	}
	return specs, nil
}

func pickMeasurements(list string) ([]measurement, error) {
	if list == "" {
		return measurements, nil
	}
	var ms []measurement
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, m := range measurements {
			if m.name == name {
				ms, found = append(ms, m), true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown measurement %q (known: throughput, cpu, latency, rss)", name)
		}
	}
	return ms, nil
}

func (o options) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(o.payload >= minPayload && o.payload <= 60000, "-payload must be %d..60000", minPayload)
	check(o.dialConc >= 1 && o.dialConc <= 5000, "-dial-concurrency must be 1..5000")
	check(o.tputPairs >= 1 && o.tputPairs <= 5000, "-tput-pairs must be 1..5000")
	check(o.tputWindow >= 1 && o.tputWindow <= 4000, "-tput-window must be 1..4000 (the relay's send queue is 4096)")
	check(o.cpuPairs >= 1 && o.cpuPairs <= 5000, "-cpu-pairs must be 1..5000")
	check(o.latPairs >= 1 && o.latPairs <= 5000, "-lat-pairs must be 1..5000")
	check(o.cpuRate > 0 && o.latRate > 0, "rates must be positive")
	check(o.rssConns >= 2 && o.rssConns <= 18000, "-rss-conns must be 2..18000 (open-file limit)")
	for _, d := range []time.Duration{o.tputDur, o.cpuDur, o.latDur} {
		check(d >= 100*time.Millisecond && d <= 10*time.Minute, "durations must be 100ms..10m")
	}
	check(o.tputWarmup >= 0 && o.tputWarmup <= time.Minute, "-tput-warmup must be 0..1m")
	check(o.rssSettle >= 0 && o.rssSettle <= time.Minute, "-rss-settle must be 0..1m")
	return errors.Join(errs...)
}

func (o options) describe(name string) string {
	switch name {
	case "throughput":
		return fmt.Sprintf("%d pairs, window %d, %d-byte frames, %s after %s warm-up", o.tputPairs, o.tputWindow, o.payload, o.tputDur, o.tputWarmup)
	case "cpu":
		return fmt.Sprintf("server CPU at %.0f msg/s over %d pairs for %s, %d-byte frames", o.cpuRate, o.cpuPairs, o.cpuDur, o.payload)
	case "latency":
		return fmt.Sprintf("%.0f msg/s over %d pairs for %s, open loop, from the scheduled send time", o.latRate, o.latPairs, o.latDur)
	case "rss":
		return fmt.Sprintf("VmRSS growth for %d idle connections (opened %d at a time, %s settle)", o.rssConns, o.dialConc, o.rssSettle)
	}
	return ""
}

// prepare finds or builds the binaries the chosen servers need. The
// baseline is built before pinning, while the build may use every CPU.
func (l *launcher) prepare(ctx context.Context, specs []serverSpec, relayBin, baselineBin string) error {
	needRelay, needBaseline := false, false
	for _, s := range specs {
		needRelay = needRelay || s.relay
		needBaseline = needBaseline || !s.relay
	}
	if needRelay {
		abs, err := filepath.Abs(relayBin)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			return fmt.Errorf("relay binary: %w (build it: go build -o bin/relay ./cmd/relay)", err)
		}
		l.relayBin = abs
	}
	if needBaseline {
		if baselineBin != "" {
			abs, err := filepath.Abs(baselineBin)
			if err != nil {
				return err
			}
			l.baselineBin = abs
		} else {
			l.baselineBin = filepath.Join(l.tmp, "baseline")
			build := exec.CommandContext(ctx, "go", "build", "-o", l.baselineBin, "github.com/pairrelay/relay/cmd/relay-bench/baseline")
			build.Stdout, build.Stderr = os.Stderr, os.Stderr
			if err := build.Run(); err != nil {
				return fmt.Errorf("building the baseline (run from the relay module, or pass -baseline): %w", err)
			}
		}
	}
	return nil
}

// raiseFileLimit lifts the open-file soft limit to the hard one; the
// servers inherit it.
func raiseFileLimit(need int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("raising the open-file limit: %w", err)
		}
	}
	if lim.Cur < uint64(need) {
		return fmt.Errorf("open-file limit %d is below the %d this run needs (lower -rss-conns)", lim.Cur, need)
	}
	return nil
}

func checkPinning(serverCPU, benchCPU int) error {
	if _, err := exec.LookPath("taskset"); err != nil {
		return errors.New("taskset not found")
	}
	n := runtime.NumCPU()
	if serverCPU == benchCPU || serverCPU < 0 || benchCPU < 0 || serverCPU >= n || benchCPU >= n {
		return fmt.Errorf("need two distinct CPUs below %d, got server %d and bench %d", n, serverCPU, benchCPU)
	}
	return nil
}

func format(col string, v float64) string {
	switch col {
	case colThroughput:
		return fmt.Sprintf("%.0f", v)
	case colCPUPerMsg, colRSS:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func printTable(specs []serverSpec, ms []measurement, results map[string]map[string]string, values map[string]map[string]float64) {
	var cols []string
	for _, c := range columns {
		for _, m := range ms {
			if slices.Contains(m.columns, c) {
				cols = append(cols, c)
			}
		}
	}
	rows := [][]string{append([]string{"server"}, cols...)}
	for _, s := range specs {
		row := []string{s.name}
		for _, c := range cols {
			cell := results[s.name][c]
			if cell == "" {
				cell = "-"
			}
			row = append(row, cell)
		}
		rows = append(rows, row)
	}
	base, haveBase := values["baseline"]
	if haveBase {
		for _, s := range specs {
			if !s.relay {
				continue
			}
			row := []string{s.name + " / baseline"}
			for _, c := range cols {
				v, ok1 := values[s.name][c]
				bv, ok2 := base[c]
				if ok1 && ok2 && bv != 0 {
					row = append(row, fmt.Sprintf("%.2fx", v/bv))
				} else {
					row = append(row, "-")
				}
			}
			rows = append(rows, row)
		}
	}
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	for _, row := range rows {
		line := fmt.Sprintf("%-*s", widths[0], row[0])
		for i, cell := range row[1:] {
			line += fmt.Sprintf("  %*s", widths[i+1]+len(cell)-utf8.RuneCountInString(cell), cell)
		}
		fmt.Println(line)
	}
	if haveBase {
		fmt.Println("\nratios are server / baseline: above 1 is more throughput, but also more CPU, latency and memory.")
	}
}
