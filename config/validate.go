package config

import (
	"fmt"
	"maps"
	"math"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	minFrameBytes = 64
	maxFrameBytes = 16 << 20
	maxShutdown   = time.Hour
	minMemory     = 16 << 20
)

// Validate reports every problem in c at once, each with its YAML path. A
// Config from Parse carries file lines as well; one built in code has none.
func (c *Config) Validate() error {
	return c.problems().orNil()
}

// related names, for a rule that compares two keys, the other key: when the
// checked key is absent from the file (a default), its problem points at the
// line that changed the other one. When the other key failed to decode, the
// rule is not applied: it would judge the file by a default.
var related = map[string]string{
	"limits.send_queue_bytes":        "limits.max_frame_bytes",
	"limits.burst":                   "limits.messages_per_second",
	"limits.connection_burst_per_ip": "limits.connections_per_second_per_ip",
	"limits.upgrade_burst":           "limits.upgrades_per_second",
	"heartbeat.timeout":              "heartbeat.interval",
	"history.max_bytes":              "limits.max_frame_bytes",
	"history.max_token_bytes":        "limits.max_frame_bytes",
}

func (c *Config) problems() Problems {
	var ps Problems
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	oneOf := func(path, value string, allowed ...string) {
		if !slices.Contains(allowed, value) {
			add(path, "must be %s, got %q", orList(allowed), value)
		}
	}

	if _, port, err := net.SplitHostPort(c.Listen); err != nil || !validPort(port, 0) {
		add("listen", "must be host:port such as :8080 or 127.0.0.1:8080, got %q", c.Listen)
	}
	if !strings.HasPrefix(c.Path, "/") {
		add("path", "must start with /, got %q", c.Path)
	}
	oneOf("wire", c.Wire, WireSeed, WireV1)
	for _, name := range slices.Sorted(maps.Keys(c.Envs)) {
		if !ValidEnvName(name) {
			add(join("envs", name), "env name must be 1 to 32 of a-z, 0-9, _ and -")
		}
		if w := c.Envs[name].Wire; w != "" {
			oneOf(join(join("envs", name), "wire"), w, WireSeed, WireV1)
		}
	}
	ps = append(ps, c.authProblems()...)
	ps = append(ps, c.metricsProblems()...)
	ps = append(ps, c.apiProblems()...)
	ps = append(ps, c.clientIPProblems()...)
	oneOf("on_duplicate", c.OnDuplicate, DuplicateReplace, DuplicateReject)
	for i, o := range c.Origins {
		if strings.TrimSpace(o) == "" {
			add(index("origins", i), "must not be empty (list no origins to allow any)")
		}
	}

	l := c.Limits
	if l.MaxFrameBytes < minFrameBytes || l.MaxFrameBytes > maxFrameBytes {
		add("limits.max_frame_bytes", "must be between %d and %d (16 MiB), got %d", minFrameBytes, maxFrameBytes, l.MaxFrameBytes)
	}
	if l.SendQueue < 1 {
		add("limits.send_queue", "must be at least 1, got %d", l.SendQueue)
	}
	if l.SendQueueBytes < l.MaxFrameBytes {
		add("limits.send_queue_bytes", "must be at least limits.max_frame_bytes (%d) so that one frame fits, got %d", l.MaxFrameBytes, l.SendQueueBytes)
	}
	if l.WriteTimeout <= 0 {
		add("limits.write_timeout", "must be more than 0, got %s", l.WriteTimeout)
	}
	switch mps := l.MessagesPerSecond; {
	case math.IsNaN(mps) || math.IsInf(mps, 0):
		add("limits.messages_per_second", "must be a finite number (0 disables the limit), got %v", mps)
	case mps < 0:
		add("limits.messages_per_second", "must be at least 0 (0 disables the limit), got %v", mps)
	case mps > 0 && l.Burst < 1:
		add("limits.burst", "must be at least 1 when limits.messages_per_second is set, got %d", l.Burst)
	}
	for _, rate := range []struct {
		path, burstPath string
		perSecond       float64
		burst           int
	}{
		{"limits.connections_per_second_per_ip", "limits.connection_burst_per_ip", l.ConnectionsPerSecondPerIP, l.ConnectionBurstPerIP},
		{"limits.upgrades_per_second", "limits.upgrade_burst", l.UpgradesPerSecond, l.UpgradeBurst},
	} {
		switch r := rate.perSecond; {
		case math.IsNaN(r) || math.IsInf(r, 0):
			add(rate.path, "must be a finite number (0 disables the limit), got %v", r)
		case r < 0:
			add(rate.path, "must be at least 0 (0 disables the limit), got %v", r)
		case r > 0 && rate.burst < 1:
			add(rate.burstPath, "must be at least 1 when %s is set, got %d", rate.path, rate.burst)
		}
	}
	if l.HeaderTimeout <= 0 {
		add("limits.header_timeout", "must be more than 0, got %s", l.HeaderTimeout)
	}
	if l.IdleTimeout <= 0 {
		add("limits.idle_timeout", "must be more than 0, got %s", l.IdleTimeout)
	}
	if l.MessageTimeout < 0 {
		add("limits.message_timeout", "must be at least 0 (0 disables the limit), got %s", l.MessageTimeout)
	}
	for _, limit := range []struct {
		path string
		n    int
	}{
		{"limits.max_connections", l.MaxConnections},
		{"limits.max_connections_per_token", l.MaxConnectionsPerToken},
		{"limits.max_connections_per_ip", l.MaxConnectionsPerIP},
		{"limits.max_fragments", l.MaxFragments},
	} {
		if limit.n < 0 {
			add(limit.path, "must be at least 0 (0 disables the cap), got %d", limit.n)
		}
	}

	if l.MaxConnectionAge < 0 || (l.MaxConnectionAge > 0 && l.MaxConnectionAge < time.Second) {
		add("limits.max_connection_age", "must be 0 (no age limit) or at least 1s, got %s", l.MaxConnectionAge)
	}
	if j := l.MaxConnectionAgeJitter; math.IsNaN(j) || j < 0 || j > 0.5 {
		add("limits.max_connection_age_jitter", "must be a fraction from 0 to 0.5, got %v", j)
	}

	if l.Memory < -1 {
		add("limits.memory", "must be a number of bytes, 0 (a share of the memory cgroup limit) or -1 (no budget), got %d", l.Memory)
	} else if l.Memory > 0 && l.Memory < minMemory {
		add("limits.memory", "must be at least %d (16 MiB) when set, got %d", minMemory, l.Memory)
	}

	h := c.Heartbeat
	if h.Interval <= 0 {
		add("heartbeat.interval", "must be more than 0, got %s", h.Interval)
	}
	if h.Timeout <= h.Interval {
		add("heartbeat.timeout", "must be more than heartbeat.interval (%s) or live peers are dropped between pings, got %s", h.Interval, h.Timeout)
	}

	hist := c.History
	if hist.Size < 0 {
		add("history.size", "must be at least 0 (0 turns history off), got %d", hist.Size)
	}
	if hist.TTL <= 0 {
		add("history.ttl", "must be more than 0, got %s", hist.TTL)
	}
	if hist.MaxTokens < 1 {
		add("history.max_tokens", "must be at least 1, got %d", hist.MaxTokens)
	}
	if hist.MaxBytes < int64(c.Limits.MaxFrameBytes) && hist.Size > 0 {
		add("history.max_bytes", "must be at least limits.max_frame_bytes (%d) so that one message fits, got %d", c.Limits.MaxFrameBytes, hist.MaxBytes)
	}
	if hist.MaxTokenBytes < int64(c.Limits.MaxFrameBytes) && hist.Size > 0 {
		add("history.max_token_bytes", "must be at least limits.max_frame_bytes (%d) so that one message fits, got %d", c.Limits.MaxFrameBytes, hist.MaxTokenBytes)
	}

	oneOf("backplane.type", c.Backplane.Type, BackplaneMemory, BackplaneRedis)
	if c.Backplane.Type == BackplaneRedis {
		if u, err := url.Parse(c.Backplane.URL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			add("backplane.url", "must be a redis:// or rediss:// URL with a host when backplane.type is redis")
		}
	}
	if c.Backplane.Prefix == "" {
		add("backplane.prefix", "must not be empty")
	}
	plugins := map[string]string{}
	for i, pl := range c.Plugins {
		pp := index("plugins", i)
		switch {
		case pl.Name == "":
			add(pp+".name", "is required")
		case !ValidEnvName(pl.Name):
			add(pp+".name", "must be 1 to 32 of a-z, 0-9, _ and -, got %q", pl.Name)
		case plugins[pl.Name] != "":
			add(pp+".name", "%q is already the name of %s", pl.Name, plugins[pl.Name])
		default:
			plugins[pl.Name] = pp
		}
		if pl.Command == "" {
			add(pp+".command", "is required: the plugin's executable")
		}
	}
	oneOf("unmatched", c.Unmatched, FateForward, FateReject, FateDrop)
	names := map[string]string{}
	for i := range c.Routes {
		r := &c.Routes[i]
		rp := index("routes", i)
		switch _, err := path.Match(r.Match.Type, ""); {
		case r.Match.Type == "":
			add(rp+".match.type", "is required: a message type such as addMaterial, or a glob such as material.*")
		case err != nil:
			add(rp+".match.type", "is not a valid glob: %v", err)
		}
		for j, env := range r.Match.From {
			if !ValidEnvName(env) {
				add(index(rp+".match.from", j), "env name must be 1 to 32 of a-z, 0-9, _ and -, got %q", env)
			}
		}
		for j, env := range r.To {
			if !ValidEnvName(env) {
				add(index(rp+".to", j), "env name must be 1 to 32 of a-z, 0-9, _ and -, got %q", env)
			}
		}
		oneOf(rp+".on_error", r.OnError, FateReject, FatePass, FateDrop)
		if r.Timeout <= 0 {
			add(rp+".timeout", "must be more than 0, got %s", r.Timeout)
		}
		if r.Name != "" {
			if prev, dup := names[r.Name]; dup {
				add(rp+".name", "%q is already the name of %s", r.Name, prev)
			}
			names[r.Name] = rp
		}
	}

	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf("log.format", c.Log.Format, "json", "text")
	if p := c.Log.TraceProject; strings.ContainsAny(p, "/ \t\r\n") {
		add("log.trace_project", "must be a Google Cloud project id (such as my-project), got %q", p)
	}

	if t := c.Shutdown.Timeout; t <= 0 || t > maxShutdown {
		add("shutdown.timeout", "must be more than 0 and at most 1h, got %s", t)
	}
	return ps
}

// validPort reports whether s is a decimal port number no lower than min.
func validPort(s string, min int) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= min && n <= 65535
}

func orList(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// applyRouteDefaults fills what a route left out.
func (c *Config) applyRouteDefaults() {
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.OnError == "" {
			r.OnError = FateReject
		}
		if r.Timeout == 0 {
			r.Timeout = 5 * time.Second
		}
	}
}
