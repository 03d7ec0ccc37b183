package config

import (
	"net"
	"strings"
)

// MinMetricsTokenBytes is the shortest metrics.token accepted.
const MinMetricsTokenBytes = 16

// MetricsEndpoint configures where /metrics is served and who may read it.
type MetricsEndpoint struct {
	Listen string `yaml:"listen" doc:"Address of a listener of its own for /metrics (such as 127.0.0.1:9090), so that it is not reachable where clients connect. Empty: /metrics is served on listen, beside the socket."`
	Token  string `yaml:"token" doc:"When set, /metrics answers only requests with Authorization: Bearer <token> (401 otherwise); at least 16 bytes. Write ${VAR}."`
}

func (c *Config) metricsProblems() Problems {
	var ps Problems
	add := func(path, msg string) { ps = append(ps, Problem{Path: path, Message: msg}) }
	m := c.Metrics
	if m.Listen != "" {
		if _, port, err := net.SplitHostPort(m.Listen); err != nil || !validPort(port, 0) {
			add("metrics.listen", "must be host:port such as 127.0.0.1:9090 or :9090")
		} else if m.Listen == c.Listen && port != "0" {
			add("metrics.listen", "must differ from listen (leave it empty to serve /metrics on listen)")
		}
	}
	// The value is never quoted: it comes from ${VAR}.
	if m.Token != "" && (len(m.Token) < MinMetricsTokenBytes || strings.TrimSpace(m.Token) != m.Token) {
		add("metrics.token", "must be at least 16 bytes, without surrounding spaces")
	}
	return ps
}
