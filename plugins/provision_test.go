package plugins

import (
	"bytes"
	"context"
	"github.com/pairrelay/relay/internal/procstate"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pairrelay/relay/core"
)

// startFailures are plugins that cannot serve, and what relay must say.
var startFailures = []struct {
	name  string
	entry string // the plugins: entry
	cfg   string // the route entry's config
	want  []string
}{
	{"exits at start", "{name: bad, command: TESTPLUGIN, args: [-exit-at-start, cannot read the key file]}", "",
		[]string{"plugin bad", "the process ended (exit status 3)", "it printed: cannot read the key file"}},
	{"configure fails", "{name: bad, command: TESTPLUGIN}", "config: {fail_configure: bad api key}",
		[]string{"plugin bad", "configure: bad api key"}},
	{"config with a typo", "{name: bad, command: TESTPLUGIN}", "config: {tagg: x}",
		[]string{"plugin bad", "configure: config: json: unknown field \"tagg\""}},
	{"missing binary", "{name: bad, command: ./no-such-plugin}", "",
		[]string{"plugin bad", "no-such-plugin", "no such file or directory"}},
	{"not on PATH", "{name: bad, command: no-such-plugin-anywhere}", "",
		[]string{"plugin bad", `command "no-such-plugin-anywhere": not found on PATH`}},
	{"not a plugin", "{name: bad, command: /bin/echo, args: [hello]}", "",
		[]string{"plugin bad", "Unrecognized remote plugin message: hello"}},
}

func failureConfig(entry, cfg string) string {
	return `
listen: 127.0.0.1:0
plugins:
  - ` + entry + `
routes:
  - match: {type: x}
    handlers:
      - handler: plugin
        plugin: bad
        ` + cfg + `
`
}

// TestStartFailuresFailTheBuild: a plugin that does not start or refuses
// its config fails the pipeline's build (relay check, relay serve, a
// reload) with the plugin's name, its reason and the config's line.
func TestStartFailuresFailTheBuild(t *testing.T) {
	for _, tc := range startFailures {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := buildPipeline(t, failureConfig(tc.entry, tc.cfg))
			if err == nil {
				t.Fatal("the pipeline was built")
			}
			for _, want := range append(tc.want, "relay.yaml:8: routes[0].handlers[0] (plugin)") {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\ndoes not say %q", err, want)
				}
			}
			if pid := pluginPid("bad"); pid != 0 {
				t.Errorf("a failed plugin is still registered (pid %d)", pid)
			}
		})
	}
	t.Run("no handshake in time", func(t *testing.T) {
		defer func(d time.Duration) { startTimeout = d }(startTimeout)
		startTimeout = 300 * time.Millisecond
		_, _, err := buildPipeline(t, failureConfig("{name: bad, command: /bin/sleep, args: ['30']}", ""))
		if err == nil || !strings.Contains(err.Error(), "plugin bad: start /bin/sleep 30: timeout while waiting for plugin to start") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("undefined plugin", func(t *testing.T) {
		_, _, err := buildPipeline(t, `
plugins: [{name: tp, command: TESTPLUGIN}]
routes:
  - match: {type: x}
    handlers: [{handler: plugin, plugin: nope}]
`)
		if err == nil || !strings.Contains(err.Error(), `plugin: "nope" is not defined in plugins: (defined: tp)`) {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("no plugin named", func(t *testing.T) {
		_, _, err := buildPipeline(t, `
plugins: [{name: tp, command: TESTPLUGIN}]
routes:
  - match: {type: x}
    handlers: [{handler: plugin}]
`)
		if err == nil || !strings.Contains(err.Error(), "plugin: is required") {
			t.Fatalf("error %v", err)
		}
	})
}

// TestRelayBinaryFailsOnBadPlugin runs relay check and relay serve on
// configs whose plugin cannot serve: both exit with 1, naming the plugin
// and its reason.
func TestRelayBinaryFailsOnBadPlugin(t *testing.T) {
	for _, tc := range startFailures[:2] {
		path := writeConfig(t, failureConfig(tc.entry, tc.cfg))
		for _, cmd := range []string{"check", "serve"} {
			t.Run(cmd+" "+tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				var stderr bytes.Buffer
				c := exec.CommandContext(ctx, bin.relay, cmd, "-c", path)
				c.Stderr = &stderr
				err := c.Run()
				var exit *exec.ExitError
				if !errorsAs(err, &exit) || exit.ExitCode() != 1 {
					t.Fatalf("relay %s: %v, want exit status 1; stderr:\n%s", cmd, err, stderr.String())
				}
				for _, want := range tc.want {
					if !strings.Contains(stderr.String(), want) {
						t.Errorf("relay %s stderr does not say %q:\n%s", cmd, want, stderr.String())
					}
				}
			})
		}
	}
	t.Run("check ok", func(t *testing.T) {
		path := writeConfig(t, e2eConfig)
		out, err := exec.Command(bin.relay, "check", "-c", path).CombinedOutput()
		if err != nil || !regexp.MustCompile(`ok \(\d+ routes\)`).Match(out) {
			t.Fatalf("relay check: %v\n%s", err, out)
		}
	})
}

// TestReloadSharesProcesses: pipelines built one after another from the
// same plugin entry and config share one process, as a reload does; a
// changed config gets a process of its own; the last Close stops it.
func TestReloadSharesProcesses(t *testing.T) {
	const cfg = `
plugins: [{name: tp, command: TESTPLUGIN}]
routes:
  - match: {type: "a.*"}
    handlers: [{handler: plugin, plugin: tp, config: {tag: one}}]
  - match: {type: "*"}
    handlers: [{handler: plugin, plugin: tp, config: {tag: one}}]
`
	path := writeConfig(t, cfg)
	first, err := buildPipelineAt(t, path)
	if err != nil {
		t.Fatal(err)
	}
	pid := pidVia(t, first)
	second, err := buildPipelineAt(t, path)
	if err != nil {
		t.Fatal(err)
	}
	if got := pidVia(t, second); got != pid {
		t.Fatalf("the reloaded pipeline runs pid %d, the first ran %d: want one shared process", got, pid)
	}
	first.Retire()
	if got := pidVia(t, second); got != pid || !procstate.Alive(pid) {
		t.Fatalf("after the old pipeline retired: pid %d (alive %v), want %d serving", got, procstate.Alive(pid), pid)
	}
	if err := os.WriteFile(path, []byte(yamlFor(strings.ReplaceAll(cfg, "tag: one", "tag: two"))), 0o600); err != nil {
		t.Fatal(err)
	}
	changed, err := buildPipelineAt(t, path)
	if err != nil {
		t.Fatal(err)
	}
	other := pidVia(t, changed)
	if other == pid {
		t.Fatal("a changed config shares the old process")
	}
	second.Close()
	waitFor(t, 3*time.Second, "the unused process to stop", func() bool { return !procstate.Alive(pid) })
	if !procstate.Alive(other) {
		t.Fatal("the process of the changed config stopped too")
	}
	changed.Close()
	waitFor(t, 3*time.Second, "the last process to stop", func() bool { return !procstate.Alive(other) })
}

// pidVia asks the plugin behind p for its pid.
func pidVia(t *testing.T, p *core.Pipeline) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _, err := p.Process(ctx, &core.Message{Type: "pid", From: "a"})
	if err != nil || len(out) != 1 {
		t.Fatalf("pid: %v %v", out, err)
	}
	var data struct{ Pid int }
	if err := jsonUnmarshal(out[0].Data, &data); err != nil || data.Pid == 0 {
		t.Fatalf("pid answer %s: %v", out[0].Data, err)
	}
	return data.Pid
}
