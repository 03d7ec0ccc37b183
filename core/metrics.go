package core

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the relay's Prometheus series, on a registry of their own so
// that several servers can live in one process (tests).
type Metrics struct {
	Registry     *prometheus.Registry
	connections  *prometheus.GaugeVec
	messagesIn   *prometheus.CounterVec
	messagesOut  *prometheus.CounterVec
	drops        *prometheus.CounterVec
	errors       *prometheus.CounterVec
	closes       *prometheus.CounterVec
	replacements prometheus.Counter
	rejected     *prometheus.CounterVec
	resumes      *prometheus.CounterVec
	// Connections closed before their upgrade by limits.header_timeout or
	// limits.idle_timeout.
	pendingTimeouts *prometheus.CounterVec

	handlerResults  *prometheus.CounterVec
	handlerDuration *prometheus.HistogramVec

	envMu    sync.Mutex
	envs     map[string]*envMetrics
	envLimit int
}

// envMetrics are one env's series, resolved once so the per-message cost
// is an atomic add.
type envMetrics struct {
	connections prometheus.Gauge
	messagesIn  prometheus.Counter
	messagesOut prometheus.Counter
}

// maxEnvLabels bounds the env label's values when any env may connect, so
// clients cannot grow the series without limit.
const maxEnvLabels = 32

// NewMetrics creates the relay's series.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_connections", Help: "Open WebSocket sessions by env."}, []string{"env"}),
		messagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_messages_in_total", Help: "Frames received from clients by env."}, []string{"env"}),
		messagesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_messages_out_total", Help: "Frames queued to clients by env."}, []string{"env"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_drops_total", Help: "Messages not relayed, by reason."}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_errors_total", Help: "relay.error answers by code (seed senders included, who do not see them)."}, []string{"code"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_closes_total", Help: "Connections closed by the relay, by close code."}, []string{"code"}),
		replacements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_replacements_total", Help: "Sessions replaced by a newer connection of the same token+env."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_upgrades_refused_total", Help: "Connection attempts refused before or at upgrade, by reason."}, []string{"reason"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_resumes_total", Help: "Reconnects with since, by whether the history still covered them."}, []string{"resumed"}),
		pendingTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_pending_timeouts_total", Help: "Connections closed before an upgrade because a request header took longer than limits.header_timeout (timeout=header) or a kept-alive connection waited longer than limits.idle_timeout (timeout=idle)."},
			[]string{"timeout"}),
		handlerResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_handler_results_total", Help: "Handler calls by route, handler and result (passed, dropped, fanout, rejected, failed)."},
			[]string{"route", "handler", "result"}),
		handlerDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "relay_handler_duration_seconds", Help: "Time one handler call took, by route and handler.",
			Buckets: []float64{0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5}},
			[]string{"route", "handler"}),
		envs:     make(map[string]*envMetrics),
		envLimit: maxEnvLabels,
	}
	m.Registry.MustRegister(m.connections, m.messagesIn, m.messagesOut, m.drops, m.errors, m.closes,
		m.replacements, m.rejected, m.resumes, m.pendingTimeouts, m.handlerResults, m.handlerDuration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) forEnv(env string) *envMetrics {
	m.envMu.Lock()
	defer m.envMu.Unlock()
	if e := m.envs[env]; e != nil {
		return e
	}
	label := env
	if len(m.envs) >= m.envLimit {
		label = "other"
		if e := m.envs[label]; e != nil {
			return e
		}
	}
	e := &envMetrics{
		connections: m.connections.WithLabelValues(label),
		messagesIn:  m.messagesIn.WithLabelValues(label),
		messagesOut: m.messagesOut.WithLabelValues(label),
	}
	m.envs[label] = e
	return e
}

// registerHistory exports the in-memory history's size.
func (m *Metrics) registerHistory(stats func() MemoryStats) {
	gauge := func(name, help string, value func(MemoryStats) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(value(stats())) })
	}
	m.Registry.MustRegister(
		gauge("relay_history_tokens", "Tokens with history held.", func(s MemoryStats) int64 { return s.Tokens }),
		gauge("relay_history_messages", "Messages held in history.", func(s MemoryStats) int64 { return s.Messages }),
		gauge("relay_history_bytes", "Memory the history holds: messages, their bytes and the id index.", func(s MemoryStats) int64 { return s.Bytes }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "relay_history_evictions_total",
			Help: "Idle tokens forgotten to stay within history.max_tokens."},
			func() float64 { return float64(stats().Evictions) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "relay_history_trimmed_total",
			Help: "Messages dropped from the history to stay within its byte budget (idle tokens first), a token's history.max_token_bytes, or under memory pressure."},
			func() float64 { return float64(stats().Trimmed) }),
	)
}

// registerBackplane exports whether the backplane can be reached, the same
// signal /readyz answers on, so that dashboards and alerts see a Redis outage
// on every instance: a backplane with a Ready method (Redis) reports it, the
// in-process one is always up.
func (m *Metrics) registerBackplane(bp Backplane) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "relay_backplane_up",
		Help: "1 while the backplane answers (Redis: its health check passes), 0 while it is unreachable; always 1 for the memory backplane."},
		func() float64 {
			if r, ok := bp.(interface{ Ready() bool }); ok && !r.Ready() {
				return 0
			}
			return 1
		}))
}

// registerMemory exports the memory budget, what is in use, and what the
// send queues of all sessions hold.
func (m *Metrics) registerMemory(s *Server) {
	gauge := func(name, help string, value func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, value)
	}
	q := &s.hub.queues
	m.Registry.MustRegister(
		gauge("relay_memory_budget_bytes", "The memory budget (limits.memory, or a share of the cgroup limit); 0: none.",
			func() float64 { return float64(s.budget.Limit) }),
		gauge("relay_memory_in_use_bytes", "Memory relay needs: what the Go runtime holds from the OS, with the heap counted as what the last collection found live.",
			func() float64 { return float64(memoryInUse()) }),
		gauge("relay_memory_pressure", "1 while memory use is above 90% of the budget: /readyz answers 503 and relay sheds.",
			func() float64 {
				if s.pressure.Load() {
					return 1
				}
				return 0
			}),
		gauge("relay_send_queue_bytes", "Bytes queued or being written to all connections together.",
			func() float64 { return float64(q.bytes.Load()) }),
		gauge("relay_send_queue_budget_bytes", "Bytes all send queues may hold together (a quarter of the memory budget); 0: no bound.",
			func() float64 { return float64(q.limit.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "relay_send_queue_shed_total",
			Help: "Connections closed with 4008 because the send queues together were over their budget (the widest first)."},
			func() float64 { return float64(q.shed.Load()) }),
	)
}

// registerAdmission exports what the listener holds: every accepted
// connection counts toward limits.max_connections, upgraded or not.
func (m *Metrics) registerAdmission(a *admission) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "relay_listener_connections",
			Help: "Connections accepted and not yet closed, upgraded or not: what limits.max_connections bounds."},
			func() float64 { return float64(a.conns.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "relay_pending_connections",
			Help: "Connections accepted and not (yet) upgraded: HTTP requests in progress and kept-alive HTTP connections."},
			func() float64 { return float64(a.pending.Load()) }),
	)
}
