package config

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.err with the errors the code gives now")

// cleanEnv makes a test independent of the machine: no PORT, and none of the
// RELAY_TEST_ variables that testdata files use.
func cleanEnv(t *testing.T) {
	t.Helper()
	t.Setenv("PORT", "")
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "RELAY_TEST_") {
			t.Setenv(name, "") // restores the old value after the test
			os.Unsetenv(name)
		}
	}
}

// TestGolden loads each testdata/*.yaml that should fail and compares the
// whole error text with the .err file beside it.
func TestGolden(t *testing.T) {
	cleanEnv(t)
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		if strings.HasPrefix(filepath.Base(file), "valid") {
			continue
		}
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			_, err := Load(file)
			if err == nil {
				t.Fatalf("Load(%s) succeeded; want an error", file)
			}
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("error is a %T, not Problems: %v", err, err)
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./config -run TestGolden -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Load(%s) error:\n%s\nwant (%s):\n%s", file, got, golden, want)
			}
		})
	}
}

func TestValidFile(t *testing.T) {
	cleanEnv(t)
	got, err := Load("testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Listen: "127.0.0.1:9090",
		Path:   "/relay",
		Wire:   WireV1,
		Envs: map[string]Env{
			"h5": {},
			"miniapp": {Wire: WireSeed, Auth: Auth{Provider: AuthWeChat, WeChat: WeChatAuth{
				AppIDs: []string{"wx0123456789abcdef"}, BindToken: true, BindTTL: time.Hour}}},
			"admin-v2": {Wire: WireV1, Auth: Auth{Provider: AuthWebhook, Webhook: WebhookAuth{
				URL: "https://admin.example.com/relay/connect", Timeout: time.Second, CacheTTL: 10 * time.Second,
				Headers: []string{"User-Agent"}, Secret: "0123456789abcdef0123456789abcdef"}}},
		},
		OnDuplicate: DuplicateReject,
		Auth: Auth{Provider: AuthJWT, JWT: JWTAuth{
			Algorithms: []string{"HS512", "ES256"}, SecretFile: "secrets/jwt",
			JWKSURL: "https://auth.example.com/.well-known/jwks.json", JWKSRefresh: 5 * time.Minute, JWKSMinRefetch: 10 * time.Second,
			Issuer: "https://auth.example.com", Audience: "relay", Leeway: 5 * time.Second,
			KeyClaim: "pair", EnvsClaim: "envs", Claims: []string{"role"},
		}, Webhook: WebhookAuth{Timeout: 3 * time.Second, CacheTTL: 30 * time.Second}, WeChat: WeChatAuth{BindTTL: 24 * time.Hour}, Plugin: PluginAuth{Timeout: 3 * time.Second}},
		Origins: []string{"https://app.example.com", "https://admin.example.com"},
		Limits: Limits{
			MaxFrameBytes:             1 << 20,
			SendQueue:                 64,
			SendQueueBytes:            8 << 20,
			WriteTimeout:              5 * time.Second,
			MessagesPerSecond:         12.5,
			Burst:                     25,
			MaxFragments:              128,
			MessageTimeout:            30 * time.Second,
			MaxConnections:            1000,
			MaxConnectionsPerToken:    4,
			MaxConnectionsPerIP:       50,
			ConnectionsPerSecondPerIP: 20,
			ConnectionBurstPerIP:      200,
			UpgradesPerSecond:         1000,
			UpgradeBurst:              2000,
			HeaderTimeout:             10 * time.Second,
			IdleTimeout:               30 * time.Second,
			MaxConnectionAge:          30 * time.Minute,
			MaxConnectionAgeJitter:    0.2,
		},
		ClientIP:  ClientIP{Preset: ClientIPAuto},
		Heartbeat: Heartbeat{Interval: 15 * time.Second, Timeout: time.Minute},
		History:   History{Size: 1000, TTL: 2 * time.Minute, MaxTokens: 500, MaxBytes: 64 << 20, MaxTokenBytes: 2 << 20},
		Unmatched: FateForward,
		Backplane: Backplane{Type: BackplaneMemory, Prefix: "relay"},
		Metrics:   MetricsEndpoint{Listen: "127.0.0.1:9091", Token: "metrics-token-0123456789"},
		API:       defaultAPI(),
		Log:       Log{Level: "debug", Format: "text", TokenSecret: "log-secret", TraceProject: "my-project"},
		Shutdown:  Shutdown{Timeout: 500 * time.Millisecond},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load(valid.yaml) =\n%+v\nwant\n%+v", got, want)
	}
	if got.WireFor("h5") != WireV1 || got.WireFor("miniapp") != WireSeed {
		t.Errorf("WireFor: h5=%s miniapp=%s", got.WireFor("h5"), got.WireFor("miniapp"))
	}
}

// TestShippedConfig checks that the relay.yaml at the repository root is
// valid and that the defaults it writes out are the ones in the code.
func TestShippedConfig(t *testing.T) {
	cleanEnv(t)
	got, err := Load("../relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Envs = map[string]Env{"h5": {Wire: WireSeed}, "miniapp": {Wire: WireSeed}}
	if got.Origins != nil && len(got.Origins) == 0 {
		got.Origins = nil // origins: [] spells out the default
	}
	if got.Plugins != nil && len(got.Plugins) == 0 {
		got.Plugins = nil // so does plugins: []
	}
	// The routes are the shipped example, not defaults; core and the
	// end-to-end tests exercise them.
	var names []string
	for _, r := range got.Routes {
		names = append(names, r.RouteName())
	}
	if !reflect.DeepEqual(names, []string{"init", "addMaterial"}) {
		t.Errorf("shipped routes = %v", names)
	}
	got.Routes = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("../relay.yaml =\n%+v\nwant Default() with envs h5 and miniapp:\n%+v", got, want)
	}
}

func TestEmptyIsDefault(t *testing.T) {
	cleanEnv(t)
	for _, src := range []string{"", "\n", "# nothing set\n", "---\n", "---\n# nothing\n...\n"} {
		got, err := Parse([]byte(src), "relay.yaml")
		if err != nil {
			t.Errorf("Parse(%q): %v", src, err)
			continue
		}
		if !reflect.DeepEqual(got, Default()) {
			t.Errorf("Parse(%q) = %+v, want Default()", src, got)
		}
	}
}

// Keys present without a value (all their sub-keys commented out) keep the defaults.
func TestNullKeepsDefault(t *testing.T) {
	cleanEnv(t)
	got, err := Parse([]byte("listen:\nlimits:\nheartbeat:\n  interval:\n"), "relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Errorf("got %+v, want Default()", got)
	}
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "relay.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want an error matching fs.ErrNotExist", err)
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"HOST": "0.0.0.0", "EMPTY": "", "N": "42"}
	lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }
	tests := []struct {
		name, src, want, err string
	}{
		{"set", "listen: ${HOST}:80", "listen: 0.0.0.0:80", ""},
		{"default unused", "a: ${HOST:127.0.0.1}", "a: 0.0.0.0", ""},
		{"default for unset", "a: ${NOPE:127.0.0.1}", "a: 127.0.0.1", ""},
		{"default for empty", "a: ${EMPTY:x}", "a: x", ""},
		{"empty default", "a: '${NOPE:}'", "a: ''", ""},
		{"default with colon", "a: ${NOPE:redis://h:6379}", "a: redis://h:6379", ""},
		{"set but empty", "a: '${EMPTY}'", "a: ''", ""},
		{"two on a line", "a: ${N}-${N}", "a: 42-42", ""},
		{"escape", "a: $${HOST} and ${N}", "a: ${HOST} and 42", ""},
		{"lone dollar", "a: $5 $ {x}", "a: $5 $ {x}", ""},
		{"comment skipped", "a: 1 # ${NOPE}\n# ${NOPE}\n", "a: 1 # ${NOPE}\n# ${NOPE}\n", ""},
		{"hash in quotes is no comment", "a: \"x #${N}\" # ${NOPE}", "a: \"x #42\" # ${NOPE}", ""},
		{"quote inside a word", "a: it's ${N} # ${NOPE}", "a: it's 42 # ${NOPE}", ""},
		{"doubled single quote", "a: 'it''s #${N}'", "a: 'it''s #42'", ""},
		{"hash inside a word", "a: x#${N}", "a: x#42", ""},
		{"unset", "a: 1\nb: ${NOPE}\n", "", "f.yaml:2: ${NOPE} is not set (use ${NOPE:default} for a default)"},
		{"every unset", "a: ${X1}\nb: ${X2}", "", "f.yaml:1: ${X1} is not set (use ${X1:default} for a default)\nf.yaml:2: ${X2} is not set (use ${X2:default} for a default)"},
		{"bad name", "a: ${1X}", "", `f.yaml:1: ${1X}: "1X" is not a variable name (write $${ for a literal ${)`},
		{"unclosed", "a: ${HOST\n", "", "f.yaml:1: ${HOST has no closing } (write $${ for a literal ${)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, probs := expand([]byte(tt.src), "f.yaml", lookup)
			if tt.err != "" {
				if probs == nil || probs.Error() != tt.err {
					t.Fatalf("problems = %v, want %s", probs, tt.err)
				}
				return
			}
			if probs != nil {
				t.Fatalf("unexpected problems: %v", probs)
			}
			if string(got) != tt.want {
				t.Errorf("expand(%q) = %q, want %q", tt.src, got, tt.want)
			}
		})
	}
}

// A variable can stand for a number or a duration: expansion happens before decoding.
func TestExpandTypedValues(t *testing.T) {
	cleanEnv(t)
	t.Setenv("RELAY_TEST_QUEUE", "32")
	t.Setenv("RELAY_TEST_INTERVAL", "5s")
	cfg, err := Parse([]byte("limits:\n  send_queue: ${RELAY_TEST_QUEUE}\nheartbeat:\n  interval: ${RELAY_TEST_INTERVAL}\n  timeout: ${RELAY_TEST_TIMEOUT:20s}\n"), "relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.SendQueue != 32 || cfg.Heartbeat.Interval != 5*time.Second || cfg.Heartbeat.Timeout != 20*time.Second {
		t.Errorf("got send_queue=%d interval=%s timeout=%s", cfg.Limits.SendQueue, cfg.Heartbeat.Interval, cfg.Heartbeat.Timeout)
	}
}

func TestPortOverride(t *testing.T) {
	tests := []struct {
		listen, port, want, err string
	}{
		{":8080", "", ":8080", ""},
		{":8080", "9000", ":9000", ""},
		{"127.0.0.1:8080", "9000", "127.0.0.1:9000", ""},
		{"[::1]:8080", "9000", "[::1]:9000", ""},
		{"localhost:0", "9000", "localhost:9000", ""},
		{":8080", "http", "", `environment variable PORT="http" is not a port number (1-65535)`},
		{":8080", "0", "", `environment variable PORT="0" is not a port number (1-65535)`},
		{":8080", "70000", "", `environment variable PORT="70000" is not a port number (1-65535)`},
		{"8080", "9000", "", `relay.yaml:1: listen: must be host:port such as :8080 or 127.0.0.1:8080, got "8080"`},
	}
	for _, tt := range tests {
		t.Run(tt.listen+"+"+tt.port, func(t *testing.T) {
			cleanEnv(t)
			t.Setenv("PORT", tt.port)
			cfg, err := Parse([]byte("listen: \""+tt.listen+"\"\n"), "relay.yaml")
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Listen != tt.want {
				t.Errorf("listen = %q, want %q", cfg.Listen, tt.want)
			}
		})
	}
}

func TestPortOverrideWithoutFile(t *testing.T) {
	cleanEnv(t)
	t.Setenv("PORT", "3000")
	cfg, err := Parse(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":3000" {
		t.Errorf("listen = %q, want :3000", cfg.Listen)
	}
}

// A Config built in code has no file: its problems carry paths only, in the
// order of the schema.
func TestValidateInCode(t *testing.T) {
	cfg := Default()
	cfg.Wire = "v2"
	cfg.Envs = map[string]Env{"ok": {}, "Bad Name": {Wire: "nope"}}
	cfg.Limits.SendQueue = 0
	cfg.Log.Format = "xml"
	err := cfg.Validate()
	want := strings.Join([]string{
		`wire: must be seed or v1, got "v2"`,
		`envs."Bad Name": env name must be 1 to 32 of a-z, 0-9, _ and -`,
		`envs."Bad Name".wire: must be seed or v1, got "nope"`,
		`limits.send_queue: must be at least 1, got 0`,
		`log.format: must be json or text, got "xml"`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Fatalf("Validate() =\n%v\nwant\n%s", err, want)
	}
}

func TestProblemsOrder(t *testing.T) {
	ps := Problems{
		{File: "r.yaml", Path: "b", Message: "default"},
		{File: "r.yaml", Line: 9, Path: "c", Message: "late"},
		{Message: "from the environment"},
		{File: "r.yaml", Line: 2, Path: "a", Message: "early"},
	}
	want := "r.yaml:2: a: early\nr.yaml:9: c: late\nr.yaml: b: default\nfrom the environment"
	if got := ps.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
}

func TestValidEnvName(t *testing.T) {
	for name, want := range map[string]bool{
		"h5": true, "miniapp": true, "a_b-9": true, strings.Repeat("x", 32): true,
		"": false, "H5": false, "a.b": false, strings.Repeat("x", 33): false,
	} {
		if got := ValidEnvName(name); got != want {
			t.Errorf("ValidEnvName(%q) = %v, want %v", name, got, want)
		}
	}
}

// ParseAll goes on past problems: what decoded is in the Config, what did
// not keeps its default, lists keep their indexes, and handler entries that
// could not be read are left out while the others keep their place.
func TestParseAllKeepsWhatDecoded(t *testing.T) {
	cleanEnv(t)
	src, err := os.ReadFile("testdata/no_follow_on.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, probs := ParseAll(src, "relay.yaml")
	if cfg == nil || len(probs) == 0 {
		t.Fatalf("ParseAll = %v, %v; want a Config and problems", cfg, probs)
	}
	if cfg.Heartbeat.Interval != 25*time.Second || cfg.Heartbeat.Timeout != 10*time.Second {
		t.Errorf("heartbeat = %+v, want the default interval and the file's timeout", cfg.Heartbeat)
	}
	if cfg.Limits.MaxFrameBytes != Default().Limits.MaxFrameBytes || cfg.Limits.SendQueueBytes != 1024 {
		t.Errorf("limits = %+v", cfg.Limits)
	}
	if len(cfg.Routes) != 3 || cfg.Routes[1].Timeout != time.Minute || cfg.Routes[2].OnError != "maybe" {
		t.Fatalf("routes = %+v", cfg.Routes)
	}
	hs := cfg.Routes[2].Handlers
	if len(hs) != 1 || hs[0].Handler != "log" || hs[0].Path() != "routes[2].handlers[2]" || hs[0].Line() != 25 {
		t.Errorf("routes[2].handlers = %+v, want only the log entry, at routes[2].handlers[2] on line 25", hs)
	}
	if _, err := Parse(src, "relay.yaml"); err == nil || err.Error() != probs.Error() {
		t.Errorf("Parse error = %v, want the problems of ParseAll", err)
	}
}

// Plugin handlers are not built when a plugins: entry has a problem and is
// the one they may name; a route with a sound plugin keeps its entry.
func TestParseAllLeavesOutPluginsWithProblems(t *testing.T) {
	cleanEnv(t)
	src := `plugins:
  - {name: good, command: ./good}
  - {name: bad}
routes:
  - match: {type: a}
    handlers:
      - {handler: plugin, plugin: good}
      - {handler: plugin, plugin: bad}
      - {handler: log}
`
	cfg, probs := ParseAll([]byte(src), "relay.yaml")
	if want := "relay.yaml:3: plugins[1].command: is required: the plugin's executable"; probs.Error() != want {
		t.Errorf("problems:\n%v\nwant\n%s", probs, want)
	}
	var paths []string
	for _, h := range cfg.Routes[0].Handlers {
		paths = append(paths, h.Path())
	}
	if want := []string{"routes[0].handlers[0]", "routes[0].handlers[2]"}; !reflect.DeepEqual(paths, want) {
		t.Errorf("handlers left = %v, want %v", paths, want)
	}
}

func TestDropUnknownHandlers(t *testing.T) {
	cleanEnv(t)
	src := `routes:
  - match: {type: a}
    handlers:
      - handler: webhok
        url: https://example.com
      - handler: log
      - {handler: frobnicate}
`
	cfg, err := Parse([]byte(src), "relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	probs := cfg.DropUnknownHandlers([]string{"filter", "log", "webhook"})
	want := strings.Join([]string{
		`relay.yaml:4: routes[0].handlers[0].handler: unknown handler "webhok" (did you mean webhook?)`,
		`relay.yaml:7: routes[0].handlers[2].handler: unknown handler "frobnicate" (relay handlers lists them)`,
	}, "\n")
	if probs.Error() != want {
		t.Errorf("problems:\n%v\nwant\n%s", probs, want)
	}
	if hs := cfg.Routes[0].Handlers; len(hs) != 1 || hs[0].Path() != "routes[0].handlers[1]" {
		t.Errorf("handlers left = %+v, want the log entry only", hs)
	}
}

func TestNearest(t *testing.T) {
	known := []string{"handlers", "heartbeat", "listen", "match", "on_error", "timeout", "to", "webhook"}
	for got, want := range map[string]string{
		"handlrs":   "handlers", // a letter left out
		"hanldlers": "handlers", // two letters swapped
		"Handlers":  "handlers", // case
		"webhok":    "webhook",
		"timout":    "timeout",
		"hearbeat":  "heartbeat",
		"tx":        "to",
		"redis_url": "", // nothing close
		"x":         "", // too short to guess
		"matchers":  "", // three edits in eight letters is too far
		"on-error":  "on_error",
	} {
		if near := nearest(got, known); near != want {
			t.Errorf("nearest(%q) = %q, want %q", got, near, want)
		}
	}
}

// A file that sets a frame size above the default per-token history bound
// and no bound of its own stays valid: the bound follows the frame size.
// Set explicitly, a smaller bound is an error (testdata/history_token.yaml).
func TestTokenBytesFollowLargeFrames(t *testing.T) {
	cleanEnv(t)
	cfg, err := Parse([]byte("limits:\n  max_frame_bytes: 8388608\n  send_queue_bytes: 67108864\n"), "relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.History.MaxTokenBytes != 8<<20 {
		t.Fatalf("history.max_token_bytes = %d, want the frame size 8388608", cfg.History.MaxTokenBytes)
	}
	if cfg, err := Parse([]byte("limits:\n  max_frame_bytes: 1024\n"), "relay.yaml"); err != nil || cfg.History.MaxTokenBytes != 4<<20 {
		t.Fatalf("a small frame size: %v, history.max_token_bytes %d; want the default 4 MiB", err, cfg.History.MaxTokenBytes)
	}
}
