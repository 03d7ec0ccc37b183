package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pairrelay/relay/config"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, COPY, …
	args string
}

// stage is one FROM and the instructions up to the next.
type stage struct {
	from, name string
	body       []instruction
}

// dockerfile is a parsed Dockerfile: the ARGs before the first FROM and
// the stages.
type dockerfile struct {
	globalArgs map[string]string
	stages     []stage
}

func parseDockerfile(t *testing.T, file string) dockerfile {
	t.Helper()
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var ins []instruction
	var cur strings.Builder
	start := 0
	for i, raw := range strings.Split(string(text), "\n") {
		line := strings.TrimSpace(raw)
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		} else if strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		ins = append(ins, instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: the last instruction ends with a line continuation", file)
	}
	df := dockerfile{globalArgs: map[string]string{}}
	for _, in := range ins {
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			st := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			df.stages = append(df.stages, st)
		case len(df.stages) == 0 && in.cmd == "ARG":
			name, value, _ := strings.Cut(in.args, "=")
			df.globalArgs[name] = value
		case len(df.stages) == 0:
			t.Fatalf("%s:%d: %s before the first FROM", file, in.line, in.cmd)
		default:
			last := &df.stages[len(df.stages)-1]
			last.body = append(last.body, in)
		}
	}
	if len(df.stages) == 0 {
		t.Fatalf("%s: no FROM", file)
	}
	return df
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.body {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// copySources returns the build-context sources of a COPY (none for
// COPY --from) and its destination.
func copySources(in instruction) (sources []string, dest string, fromStage string) {
	f := strings.Fields(in.args)
	for len(f) > 0 && strings.HasPrefix(f[0], "--") {
		if v, ok := strings.CutPrefix(f[0], "--from="); ok {
			fromStage = v
		}
		f = f[1:]
	}
	if len(f) < 2 {
		return nil, "", fromStage
	}
	return f[:len(f)-1], f[len(f)-1], fromStage
}

// checkContextSources fails for every COPY source that is not in the build
// context (the repository root).
func checkContextSources(t *testing.T, file string, df dockerfile) {
	t.Helper()
	for _, st := range df.stages {
		for _, in := range st.all("COPY") {
			srcs, _, from := copySources(in)
			if from != "" {
				continue
			}
			for _, src := range srcs {
				if src == "." {
					continue
				}
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("%s:%d: COPY %s: not in the build context: %v", file, in.line, src, err)
				}
			}
		}
	}
}

// TestDockerfile: relay's image is built by `make build` (the command CI
// runs) stamped with the VERSION build argument, its base images and module
// proxy are build arguments, and its built-in config is the repository's
// relay.yaml.
func TestDockerfile(t *testing.T) {
	file := filepath.Join(root, "Dockerfile")
	df := parseDockerfile(t, file)
	for _, arg := range []string{"GO_IMAGE", "RUNTIME_IMAGE"} {
		if df.globalArgs[arg] == "" {
			t.Errorf("%s: want ARG %s=<default> before the first FROM", file, arg)
		}
	}
	if len(df.stages) != 2 {
		t.Fatalf("%s: %d stages, want build and runtime", file, len(df.stages))
	}
	build, runtime := df.stages[0], df.stages[1]
	if build.from != "${GO_IMAGE}" || runtime.from != "${RUNTIME_IMAGE}" {
		t.Errorf("%s: FROM %s … FROM %s, want FROM ${GO_IMAGE} AS build … FROM ${RUNTIME_IMAGE}", file, build.from, runtime.from)
	}
	args := map[string]bool{}
	for _, in := range build.all("ARG") {
		name, _, _ := strings.Cut(in.args, "=")
		args[name] = true
	}
	if !args["GOPROXY"] || !args["VERSION"] {
		t.Errorf("%s: the build stage needs ARG GOPROXY and ARG VERSION, has %v", file, args)
	}
	var makes []instruction
	for _, in := range build.all("RUN") {
		if strings.Contains(in.args, "make") || strings.Contains(in.args, "go build") {
			makes = append(makes, in)
		}
	}
	if len(makes) != 1 {
		t.Fatalf("%s: %d build steps, want one RUN make build", file, len(makes))
	}
	step := strings.Fields(makes[0].args)
	if len(step) < 2 || step[0] != "make" || step[1] != "build" {
		t.Errorf("%s:%d: build step %q, want make build", file, makes[0].line, makes[0].args)
	}
	if !strings.Contains(makes[0].args, "VERSION=${VERSION}") {
		t.Errorf("%s:%d: build step %q does not pass VERSION=${VERSION}: relay version would print dev", file, makes[0].line, makes[0].args)
	}
	// CI runs the same command, so that the image's build is tested.
	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "\nmake build\n") {
		t.Error(".ci/run does not run make build, the Dockerfile's build step")
	}
	checkContextSources(t, file, df)

	var binary, conf bool
	for _, in := range runtime.all("COPY") {
		srcs, dest, from := copySources(in)
		switch {
		case from == "build" && dest == "/relay":
			binary = true
		case from == "" && len(srcs) == 1 && srcs[0] == "relay.yaml" && dest == "/relay.yaml":
			conf = true
		}
	}
	if !binary || !conf {
		t.Errorf("%s: the runtime stage must copy the build's binary to /relay and relay.yaml to /relay.yaml", file)
	}
	var entry, cmd []string
	for _, in := range runtime.body {
		switch in.cmd {
		case "ENTRYPOINT":
			entry = execForm(t, file, in)
		case "CMD":
			cmd = execForm(t, file, in)
		case "EXPOSE":
			if want := listenPort(t, config.Default().Listen); in.args != want {
				t.Errorf("%s:%d: EXPOSE %s, relay listens on %s", file, in.line, in.args, want)
			}
		case "USER":
			if strings.HasPrefix(in.args, "0") || strings.HasPrefix(in.args, "root") {
				t.Errorf("%s:%d: relay must not run as root", file, in.line)
			}
		}
	}
	if strings.Join(entry, " ") != "/relay" || strings.Join(cmd, " ") != "serve -c /relay.yaml" {
		t.Errorf(`%s: ENTRYPOINT %q CMD %q, want ["/relay"] ["serve", "-c", "/relay.yaml"]`, file, entry, cmd)
	}
}

// TestImageVersion: a binary built the Dockerfile's way prints the version
// it was given, not "dev" or "docker".
func TestImageVersion(t *testing.T) {
	out, err := exec.Command(relayBin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("relay version: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "relay "+testVersion {
		t.Errorf("relay version = %q, want %q", got, "relay "+testVersion)
	}
}

// TestPluginDockerfiles: the example images that add a plugin to relay's
// copy what exists, and the relay.yaml each bakes in is valid and starts its
// plugin from where the image puts it.
func TestPluginDockerfiles(t *testing.T) {
	cases := []struct {
		file, config string
		// fromBase: absolute paths the final stage's base image provides.
		fromBase string
	}{
		{"plugins/go.Dockerfile", "plugins/go.relay.yaml", ""},
		{"plugins/node.Dockerfile", "plugins/node.relay.yaml", "/nodejs/"},
	}
	for _, tc := range cases {
		t.Run(path.Base(tc.file), func(t *testing.T) {
			df := parseDockerfile(t, tc.file)
			checkContextSources(t, tc.file, df)
			final := df.stages[len(df.stages)-1]
			if tc.fromBase != "" && !strings.Contains(df.globalArgs[strings.Trim(final.from, "${}")], "nodejs") {
				t.Errorf("%s: the final stage (%s) must be a Node.js image: the plugin runs on its node", tc.file, final.from)
			}
			hasRelay := final.from == "${RELAY_IMAGE}"
			var dests []string
			for _, in := range final.all("COPY") {
				srcs, dest, from := copySources(in)
				dests = append(dests, dest)
				if from == "relay" && len(srcs) == 1 && srcs[0] == "/relay" {
					hasRelay = true
				}
				if from == "" && dest == "/relay.yaml" && (len(srcs) != 1 || srcs[0] != "deploy/"+tc.config) {
					t.Errorf("%s: /relay.yaml comes from %v, want deploy/%s", tc.file, srcs, tc.config)
				}
			}
			if !hasRelay {
				t.Errorf("%s: the final stage has no relay: FROM ${RELAY_IMAGE} or COPY --from=relay /relay", tc.file)
			}
			t.Setenv("PORT", "")
			cfg, err := config.Load(tc.config)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Plugins) == 0 {
				t.Fatalf("%s: no plugin", tc.config)
			}
			inImage := func(p string) bool {
				if tc.fromBase != "" && strings.HasPrefix(p, tc.fromBase) {
					return true
				}
				for _, d := range dests {
					if p == d || strings.HasPrefix(p, strings.TrimSuffix(d, "/")+"/") {
						return true
					}
				}
				return false
			}
			for _, p := range cfg.Plugins {
				for _, f := range append([]string{p.Command}, p.Args...) {
					if !filepath.IsAbs(f) || !inImage(f) {
						t.Errorf("%s: plugin %s: %s is not a path the image provides (copied: %v)", tc.config, p.Name, f, dests)
					}
				}
			}
			// The Go plugin's build stage builds a package that exists; built
			// the same way into a copy of the image's layout, relay starts it
			// from the baked-in relay.yaml (relay check starts every plugin).
			for _, st := range df.stages {
				for _, in := range st.all("RUN") {
					f := strings.Fields(in.args)
					pkg := f[len(f)-1]
					if !strings.Contains(in.args, "go build") || !strings.HasPrefix(pkg, "./") {
						continue
					}
					out := ""
					for i := range f[:len(f)-1] {
						if f[i] == "-o" {
							out = f[i+1]
						}
					}
					image := t.TempDir()
					dest := finalCopyDest(final, out)
					if dest == "" {
						t.Fatalf("%s:%d: the final stage does not copy %s", tc.file, in.line, out)
					}
					build := exec.Command("go", "build", "-o", filepath.Join(image, dest), pkg)
					build.Dir = root
					if msg, err := build.CombinedOutput(); err != nil {
						t.Fatalf("%s:%d: go build %s: %v\n%s", tc.file, in.line, pkg, err, msg)
					}
					text, err := os.ReadFile(tc.config)
					if err != nil {
						t.Fatal(err)
					}
					rooted := strings.ReplaceAll(string(text), "command: /", "command: "+image+"/")
					conf := filepath.Join(image, "relay.yaml")
					if err := os.WriteFile(conf, []byte(rooted), 0o600); err != nil {
						t.Fatal(err)
					}
					check := exec.Command(relayBin, "check", "-c", conf)
					check.Env = append(os.Environ(), "PORT=")
					if msg, err := check.CombinedOutput(); err != nil {
						t.Errorf("relay check of %s in the image's layout: %v\n%s", tc.config, err, msg)
					}
				}
			}
		})
	}
}

// finalCopyDest is where the final stage copies src of another stage.
func finalCopyDest(final stage, src string) string {
	for _, in := range final.all("COPY") {
		srcs, dest, from := copySources(in)
		if from != "" && len(srcs) == 1 && srcs[0] == src {
			return dest
		}
	}
	return ""
}

func execForm(t *testing.T, file string, in instruction) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal([]byte(in.args), &out); err != nil {
		t.Errorf("%s:%d: %s must be in exec form (a JSON array): %v", file, in.line, in.cmd, err)
	}
	return out
}
