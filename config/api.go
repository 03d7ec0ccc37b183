package config

import (
	"net"
	"strings"
)

// API limits that no config may exceed: the main listener's HTTP server
// refuses larger bodies before the API sees them.
const (
	MinAPIKeyBytes   = 16
	MaxAPIBodyBytes  = 4 << 20
	MaxAPIBatchLimit = 1000
)

// API configures the server API under /api/v1 (docs/api.md).
type API struct {
	Keys         []string `yaml:"keys" doc:"Bearer keys that may call the server API (Authorization: Bearer <key>), each at least 16 bytes; write them as ${VAR}, such as [\"${RELAY_API_KEY}\"]. Empty: the API is off and /api/v1 answers 404."`
	Listen       string   `yaml:"listen" doc:"Address of a listener of its own for /api/v1 (such as 127.0.0.1:8081), so that it is not reachable where clients connect. Empty: the API is served on listen, beside the socket."`
	Env          string   `yaml:"env" doc:"Env that messages published through the API come from: routes match it in match.from, and receivers see it in from. It never receives them itself." default:"server"`
	MaxBodyBytes int      `yaml:"max_body_bytes" doc:"Largest request body the API accepts; a larger one gets 413. At most 4 MiB." default:"1048576"`
	MaxBatch     int      `yaml:"max_batch" doc:"Most messages one POST /api/v1/publish/batch may carry; more get 400. At most 1000." default:"100"`
	MaxHistory   int      `yaml:"max_history" doc:"Most messages one GET /api/v1/history returns (its limit parameter is capped to it)." default:"256"`
}

func defaultAPI() API {
	return API{Env: "server", MaxBodyBytes: 1 << 20, MaxBatch: 100, MaxHistory: 256}
}

// Enabled reports whether the server API is on (some key is configured).
func (a *API) Enabled() bool { return len(a.Keys) > 0 }

func (c *Config) apiProblems() Problems {
	var ps Problems
	add := func(path, msg string) { ps = append(ps, Problem{Path: path, Message: msg}) }
	a := c.API
	for i, k := range a.Keys {
		// The value is never quoted: it comes from ${VAR}.
		if k == "" {
			add(index("api.keys", i), "is empty: set the environment variable it names (such as RELAY_API_KEY)")
		} else if len(k) < MinAPIKeyBytes || strings.TrimSpace(k) != k {
			add(index("api.keys", i), "must be at least 16 bytes, without surrounding spaces")
		}
	}
	if a.Listen != "" {
		if _, port, err := net.SplitHostPort(a.Listen); err != nil || !validPort(port, 0) {
			add("api.listen", "must be host:port such as 127.0.0.1:8081 or :8081")
		} else if a.Listen == c.Listen && port != "0" {
			add("api.listen", "must differ from listen (leave it empty to serve the API on listen)")
		} else if a.Listen == c.Metrics.Listen && port != "0" {
			add("api.listen", "must differ from metrics.listen")
		}
	}
	if a.Enabled() && a.Listen == "" && (c.Path == "/api/v1" || strings.HasPrefix(c.Path, "/api/v1/")) {
		add("path", "must not be under /api/v1, where the server API is served (or give the API api.listen)")
	}
	if !ValidEnvName(a.Env) {
		add("api.env", "env name must be 1 to 32 of a-z, 0-9, _ and -")
	}
	if a.MaxBodyBytes < 1024 || a.MaxBodyBytes > MaxAPIBodyBytes {
		add("api.max_body_bytes", "must be between 1024 and 4194304 (4 MiB)")
	}
	if a.MaxBatch < 1 || a.MaxBatch > MaxAPIBatchLimit {
		add("api.max_batch", "must be between 1 and 1000")
	}
	if a.MaxHistory < 1 || a.MaxHistory > 10000 {
		add("api.max_history", "must be between 1 and 10000")
	}
	return ps
}
