// Package config reads relay.yaml: ${VAR:default} expansion, strict decoding
// (unknown keys fail with their line), defaults for every field and a
// validation that reports every problem at once with its path and line.
package config

import "time"

// Wire names: how a connection's frames are encoded.
const (
	WireSeed = "seed" // byte-compatible with the original express-ws relay
	WireV1   = "v1"   // the typed envelope protocol of docs/protocol.md
)

// Duplicate policies: what happens when a second connection arrives for a token+env.
const (
	DuplicateReplace = "replace"
	DuplicateReject  = "reject"
)

// Config is the whole of relay.yaml. The struct tags are its documentation.
type Config struct {
	Listen      string          `yaml:"listen" doc:"Address to listen on. The PORT environment variable, when set, replaces the port." default:":8080"`
	Path        string          `yaml:"path" doc:"URL path of the WebSocket endpoint." default:"/socket"`
	Wire        string          `yaml:"wire" doc:"Wire used by connections that ask for none (no v=1, no relay.v1 subprotocol) and whose env sets none: seed or v1." default:"seed"`
	Envs        map[string]Env  `yaml:"envs" doc:"Envs allowed to connect, with per-env settings. Empty: any env name matching [a-z0-9_-]{1,32}."`
	OnDuplicate string          `yaml:"on_duplicate" doc:"A second connection for the same token+env: replace (the older gets close 4502) or reject (the newcomer gets close 4505)." default:"replace"`
	Auth        Auth            `yaml:"auth" doc:"Who may connect and which pairing key a connection gets; envs.<env>.auth overrides it for one env."`
	Origins     []string        `yaml:"origins" doc:"Allowed Origin header values. Empty: any Origin (the original relay's behaviour); requests without Origin are always allowed."`
	ClientIP    ClientIP        `yaml:"client_ip" doc:"Which address is a connection's client behind a proxy or a platform's front end: what every per-IP limit counts, auth providers see and logs name."`
	Limits      Limits          `yaml:"limits" doc:"Per-connection and per-process limits."`
	Heartbeat   Heartbeat       `yaml:"heartbeat" doc:"Dead peer detection."`
	History     History         `yaml:"history" doc:"Messages kept per token so that a client reconnecting with since=N misses nothing, and client ids are deduplicated."`
	Metrics     MetricsEndpoint `yaml:"metrics" doc:"Where the Prometheus /metrics endpoint is served and who may read it."`
	API         API             `yaml:"api" doc:"The server API under /api/v1 (docs/api.md): backends publish to a token, ask who is online, read history and disconnect sessions. Off unless keys are set."`
	Log         Log             `yaml:"log" doc:"Logging."`
	Shutdown    Shutdown        `yaml:"shutdown" doc:"Graceful shutdown on SIGTERM/SIGINT."`
	Backplane   Backplane       `yaml:"backplane" doc:"How relay instances share sessions, ordering and history."`
	Plugins     []Plugin        `yaml:"plugins" doc:"External handler processes (hashicorp/go-plugin over gRPC), used in routes as {handler: plugin, plugin: NAME}."`
	Unmatched   string          `yaml:"unmatched" doc:"What happens to a message no route matches: forward (as the original relay did), reject (relay.error unknown_type) or drop." default:"forward"`
	Routes      []Route         `yaml:"routes" doc:"Typed routes, tried in order; the first whose match fits a message runs its handlers."`
}

// Env holds the settings of one env name.
type Env struct {
	Wire string `yaml:"wire" doc:"Wire for plain connections of this env: seed or v1. Empty: the top-level wire."`
	Auth Auth   `yaml:"auth" doc:"Auth for this env, replacing the top-level auth whole when it names a provider."`
}

// Limits bound what one client can make the relay hold or do.
type Limits struct {
	MaxFrameBytes             int           `yaml:"max_frame_bytes" doc:"Largest frame a client may send; a larger one closes the connection with 1009. Messages that handlers return are held to it as well, measured as the frame a client would send: a larger one is a handler failure (the route's on_error decides)." default:"65536"`
	SendQueue                 int           `yaml:"send_queue" doc:"Frames queued for one connection before it counts as a slow consumer and is closed with 4008." default:"256"`
	SendQueueBytes            int           `yaml:"send_queue_bytes" doc:"Bytes queued for one connection before it counts as a slow consumer and is closed with 4008. At least max_frame_bytes. A single larger frame (a receiver gets a seed text re-encoded as a JSON string, up to 6 × max_frame_bytes + 1 KiB) still goes out when the queue is empty." default:"4194304"`
	WriteTimeout              time.Duration `yaml:"write_timeout" doc:"Longest a single frame write may block before the connection is dropped." default:"10s"`
	MessagesPerSecond         float64       `yaml:"messages_per_second" doc:"Sustained messages per second one connection may send; excess messages are refused with relay.error rate_limited. 0 disables." default:"100"`
	Burst                     int           `yaml:"burst" doc:"Messages one connection may send at once above the sustained rate." default:"200"`
	MaxFragments              int           `yaml:"max_fragments" doc:"Frames one client message may be split into (a first frame and its continuations); more close the connection with 1008. Never less than max_frame_bytes/4096 in effect, so that a message of the largest size sent in 4 KiB frames (as Go WebSocket clients do) fits. 0 disables." default:"128"`
	MessageTimeout            time.Duration `yaml:"message_timeout" doc:"Longest a client may take to finish a message it started (from its first frame to the end of its last); longer closes the connection with 1008. 0 disables." default:"30s"`
	MaxConnections            int           `yaml:"max_connections" doc:"Connections this process holds at once: WebSocket sessions and connections not yet upgraded (a request in progress, a kept-alive HTTP connection). Past it a new connection gets HTTP 503 server_full and is closed at its accept, before its request is read. 0 disables." default:"50000"`
	MaxConnectionsPerToken    int           `yaml:"max_connections_per_token" doc:"Envs connected at once for one token; more get close 4504. 0 disables." default:"16"`
	MaxConnectionsPerIP       int           `yaml:"max_connections_per_ip" doc:"Connections from one client address at once (see client_ip; IPv6 clients count by their /64); more get HTTP 429 too_many_connections. Counted from the upgrade, and from the TCP accept as well when the peer is the client itself (no trusted proxy between), so that half-open requests count too; those past it are closed at once. 1000 leaves room for a carrier-grade NAT or an office behind one address while a single address cannot hold more than 1/50 of max_connections. 0 disables." default:"1000"`
	ConnectionsPerSecondPerIP float64       `yaml:"connections_per_second_per_ip" doc:"Sustained upgrade requests per second from one client address (a token bucket per address, forgotten once full again, at most 65536 addresses held); more get HTTP 429 too_many_requests with Retry-After. 20 a second with a burst of 200 lets a few hundred users behind one NAT reconnect together after a restart while one address cannot take a large share of upgrades_per_second. 0 disables." default:"20"`
	ConnectionBurstPerIP      int           `yaml:"connection_burst_per_ip" doc:"Upgrade requests one client address may make at once above connections_per_second_per_ip." default:"200"`
	UpgradesPerSecond         float64       `yaml:"upgrades_per_second" doc:"Sustained upgrade requests per second the process takes from everyone together; more get HTTP 503 server_busy with Retry-After, so that a reconnect storm or a flood from many addresses costs the open sessions little CPU. Checked after the per-address rate. 0 disables." default:"1000"`
	UpgradeBurst              int           `yaml:"upgrade_burst" doc:"Upgrade requests the process takes at once above upgrades_per_second (a restarted instance's clients all reconnecting, say)." default:"2000"`
	HeaderTimeout             time.Duration `yaml:"header_timeout" doc:"Longest a connection may take from its accept (or, on a kept-alive HTTP connection, from the first byte of its next request) to the end of the request's header; longer is closed, however slowly bytes keep coming (slowloris). An upgraded WebSocket session is not bound by it. Until it is upgraded a connection counts toward max_connections." default:"10s"`
	IdleTimeout               time.Duration `yaml:"idle_timeout" doc:"Longest a kept-alive HTTP connection (health checks, /metrics) may wait for its next request before it is closed." default:"30s"`
	MaxConnectionAge          time.Duration `yaml:"max_connection_age" doc:"Age at which relay closes a connection with 4012 (reconnect now and resume), after the frames already queued for it, so that it ends before a platform cuts it (Cloud Run ends every request, a WebSocket included, at its request timeout, 60 minutes at most). Keep it below that timeout. The SDK reconnects at once and resumes; seed-wire clients see a close. 0 disables; otherwise at least 1s." default:"55m"`
	MaxConnectionAgeJitter    float64       `yaml:"max_connection_age_jitter" doc:"Fraction of max_connection_age by which each connection's age is shortened at random, so that connections opened together (after a deploy) do not all reconnect together: each one is closed after a time drawn uniformly from [max_connection_age × (1 − jitter), max_connection_age]. 0 to 0.5." default:"0.1"`
	Memory                    int64         `yaml:"memory" doc:"Memory budget of the process, in bytes. It is the Go runtime's soft memory limit; the history may hold half of it (never more than history.max_bytes) and the send queues of all connections together a quarter, past which the connections with the most bytes queued are closed with 4008; above 90% of it /readyz answers 503. 0: 75% of the limit of the memory cgroup relay runs in (a container's or Cloud Run's memory limit), or no budget when there is none. -1: no budget." default:"0"`
}

// Heartbeat detects peers that vanished without closing.
type Heartbeat struct {
	Interval time.Duration `yaml:"interval" doc:"Interval between protocol pings sent to every connection." default:"25s"`
	Timeout  time.Duration `yaml:"timeout" doc:"A connection that sends nothing (no frame, no pong) for this long is closed." default:"60s"`
}

// History bounds what the relay keeps for resume and dedupe.
type History struct {
	Size      int           `yaml:"size" doc:"Messages kept per token. 0 turns history off: no resume, no dedupe of client ids." default:"256"`
	TTL       time.Duration `yaml:"ttl" doc:"How long a message stays resumable." default:"5m"`
	MaxTokens int           `yaml:"max_tokens" doc:"Tokens whose history is held at once; past it the least recently used idle token is forgotten." default:"100000"`
	MaxBytes  int64         `yaml:"max_bytes" doc:"Memory the history may hold in all tokens together, counted as what it really takes (message structs, their bytes, the id index), and never more than half of limits.memory. Past it the history of idle tokens (no session connected to this instance) goes first, least recently used first, then the oldest messages of busy tokens; a client resuming from before a dropped message gets resumed:false. The Redis backplane does not use it: Redis's maxmemory bounds the total there (docs/redis.md)." default:"268435456"`
	// MaxTokenBytes keeps one token from taking a disproportionate share:
	// without it a token's history grows to size × max_frame_bytes (16 MiB
	// by default), and in Redis nothing else bounds it.
	MaxTokenBytes int64 `yaml:"max_token_bytes" doc:"Bytes one token's history may hold, with either backplane; past it the token's oldest messages are dropped (a client resuming from before one gets resumed:false), though its newest message always stays. The memory backplane counts the memory a message really takes, the Redis backplane the size of its entry in Redis (the message's bytes and about 40 more). At least limits.max_frame_bytes; left unset, it is raised to limits.max_frame_bytes when that is larger." default:"4194304"`
}

// Backplane types.
const (
	BackplaneMemory = "memory"
	BackplaneRedis  = "redis"
)

// Backplane selects where per-token ordering, history and presence live.
type Backplane struct {
	Type   string `yaml:"type" doc:"memory (a single instance; the default) or redis (several instances behave as one)." default:"memory"`
	URL    string `yaml:"url" doc:"With type redis: redis://[user:password@]host:port[/db], or rediss:// for TLS. Use ${REDIS_URL} to keep it out of the file."`
	Prefix string `yaml:"prefix" doc:"With type redis: prefix of every key and channel, so several deployments can share one Redis." default:"relay"`
}

// Plugin is an external handler process.
type Plugin struct {
	Name    string            `yaml:"name" doc:"Name that routes use: {handler: plugin, plugin: NAME}. Required."`
	Command string            `yaml:"command" doc:"Executable to start: a path (relative to relay.yaml's directory) or a name on PATH. Required."`
	Args    []string          `yaml:"args" doc:"Arguments for the command."`
	Env     map[string]string `yaml:"env" doc:"Environment variables for the plugin, added to relay's own."`
}

// Log configures the process log.
type Log struct {
	Level  string `yaml:"level" doc:"debug, info, warn or error." default:"info"`
	Format string `yaml:"format" doc:"json (Cloud Logging compatible, with severity) or text." default:"json"`
	// TokenSecret keys the ids that name tokens in logs.
	TokenSecret string `yaml:"token_secret" doc:"Key of the HMAC that names a token (a room) in logs, so that instances and restarts name it alike. Write ${VAR}. Empty: a random key per process, so ids match only within one process."`
	// TraceProject turns X-Cloud-Trace-Context into Cloud Logging's trace fields.
	TraceProject string `yaml:"trace_project" doc:"Google Cloud project id for trace correlation: when a connection's upgrade request carries X-Cloud-Trace-Context, the JSON log lines about that connection carry logging.googleapis.com/trace (projects/PROJECT/traces/TRACE_ID), logging.googleapis.com/spanId and logging.googleapis.com/trace_sampled, so that Cloud Logging groups them under the request. Empty: the GOOGLE_CLOUD_PROJECT environment variable (Cloud Run does not set it: set it on the service); when that is empty too, no trace fields."`
}

// Shutdown configures the graceful stop.
type Shutdown struct {
	Timeout time.Duration `yaml:"timeout" doc:"Longest a graceful shutdown may take before the process exits anyway. Cloud Run allows 10s." default:"8s"`
}

// Default returns the built-in configuration that `relay serve` runs on when
// no relay.yaml exists: it serves the original seed clients with any Origin.
func Default() *Config {
	return &Config{
		Listen:      ":8080",
		Path:        "/socket",
		Wire:        WireSeed,
		OnDuplicate: DuplicateReplace,
		Auth:        defaultAuth(),
		Limits: Limits{
			MaxFrameBytes:             64 << 10,
			SendQueue:                 256,
			SendQueueBytes:            4 << 20,
			WriteTimeout:              10 * time.Second,
			MessagesPerSecond:         100,
			Burst:                     200,
			MaxFragments:              128,
			MessageTimeout:            30 * time.Second,
			MaxConnections:            50000,
			MaxConnectionsPerToken:    16,
			MaxConnectionsPerIP:       1000,
			ConnectionsPerSecondPerIP: 20,
			ConnectionBurstPerIP:      200,
			UpgradesPerSecond:         1000,
			UpgradeBurst:              2000,
			HeaderTimeout:             10 * time.Second,
			IdleTimeout:               30 * time.Second,
			MaxConnectionAge:          55 * time.Minute,
			MaxConnectionAgeJitter:    0.1,
		},
		ClientIP:  ClientIP{Preset: ClientIPAuto},
		Heartbeat: Heartbeat{Interval: 25 * time.Second, Timeout: 60 * time.Second},
		History:   History{Size: 256, TTL: 5 * time.Minute, MaxTokens: 100000, MaxBytes: 256 << 20, MaxTokenBytes: 4 << 20},
		Log:       Log{Level: "info", Format: "json"},
		Shutdown:  Shutdown{Timeout: 8 * time.Second},
		Unmatched: FateForward,
		Backplane: Backplane{Type: BackplaneMemory, Prefix: "relay"},
		API:       defaultAPI(),
	}
}

// WireFor returns the wire a plain connection of env speaks.
func (c *Config) WireFor(env string) string {
	if e, ok := c.Envs[env]; ok && e.Wire != "" {
		return e.Wire
	}
	return c.Wire
}

// ValidEnvName reports whether name may name an env: 1 to 32 of a-z, 0-9, _
// and -. The same rule holds for envs in relay.yaml, connections and "to".
func ValidEnvName(name string) bool {
	if len(name) == 0 || len(name) > 32 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// EnvAllowed reports whether env may connect (any env when no envs are listed).
func (c *Config) EnvAllowed(env string) bool {
	if len(c.Envs) == 0 {
		return true
	}
	_, ok := c.Envs[env]
	return ok
}
