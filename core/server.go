package core

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	fws "github.com/fasthttp/websocket"
	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pairrelay/relay/config"
)

const (
	maxTokenLen      = 256
	subprotocolV1    = "relay.v1"
	connRequestLocal = "relay.conn"
)

// Server is relay's HTTP side: the WebSocket endpoint, health and metrics.
// It is the only part of relay that knows about Fiber.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	hub      *Hub
	metrics  *Metrics
	app      *fiber.App
	draining atomic.Bool
	ctx      context.Context // ends with Shutdown: background work stops
	stop     context.CancelFunc
	bgDone   sync.WaitGroup

	budget   MemoryBudget
	pressure atomic.Bool // memory use above the budget's high-water mark

	ipMu    sync.Mutex
	ipConns map[string]int
}

// connRequest is what the upgrade guard learned, handed to the session.
type connRequest struct {
	token string
	env   string
	wire  wireKind
	since *uint64
	ip    string
}

// NewServer builds a server relaying through bp.
func NewServer(cfg *config.Config, log *slog.Logger, bp Backplane) *Server {
	metrics := NewMetrics()
	s := &Server{cfg: cfg, log: log, metrics: metrics, hub: NewHub(cfg, log, bp, metrics),
		ipConns: make(map[string]int)}
	s.app = fiber.New(fiber.Config{
		// Fiber's strings point into fasthttp's request buffers, which are
		// reused once a request ends; a session outlives its upgrade
		// request, so everything it keeps must be a copy.
		Immutable:             true,
		DisableStartupMessage: true,
		ErrorHandler:          s.httpErrorHandler,
		// Returns fasthttp's 4 KiB read buffer once a request is read, so an
		// upgraded connection reads straight from its socket and does not
		// hold it for its whole life.
		ReduceMemoryUsage: true,
	})
	// A session runs on a goroutine of its own after the upgrade handler
	// returns, which lets fasthttp recycle the request's context (several
	// KiB) at once instead of holding it until the session ends. fasthttp
	// must then leave the connection open; the session closes it.
	s.app.Server().KeepHijackedConns = true
	s.app.Get("/healthz", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	s.app.Get("/readyz", s.ready)
	s.app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{})))
	s.app.Get(cfg.Path, s.guard, websocket.New(s.serveConn, websocket.Config{
		Subprotocols:    []string{subprotocolV1},
		ReadBufferSize:  512,
		WriteBufferSize: 4096,
		WriteBufferPool: &sync.Pool{},
	}))
	if stats, ok := bp.(interface{ Stats() MemoryStats }); ok {
		metrics.registerHistory(stats.Stats)
	}
	metrics.registerMemory(s)
	ctx, cancel := context.WithCancel(context.Background())
	s.ctx, s.stop = ctx, cancel
	s.bgDone.Add(1)
	go func() { defer s.bgDone.Done(); s.hub.heartbeat(ctx) }()
	return s
}

// Hub returns the server's session hub.
func (s *Server) Hub() *Hub { return s.hub }

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Serve accepts connections on ln until Shutdown. Each connection is
// wrapped so that a session can watch its client's frames (frameguard.go).
func (s *Server) Serve(ln net.Listener) error {
	return s.app.Listener(guardListener{ln})
}

// Shutdown stops accepting, closes every session with 1012 after what is
// already queued for it, and waits for them until ctx ends; sessions still
// open then are cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	httpDone := make(chan error, 1)
	// Fiber does not track hijacked connections, so this only closes the
	// listener and idle HTTP connections; sessions are closed below.
	go func() { httpDone <- s.app.ShutdownWithContext(ctx) }()

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var err error
	for s.hub.open.Load() > 0 {
		// Repeated because an upgrade that passed the guard just before
		// draining began may join after a previous round.
		s.hub.each(func(sess *Session) { sess.closeWith(CloseRestarting) })
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("shutdown: sessions still open at the deadline were cut")
			}
			s.hub.each(func(sess *Session) { _ = sess.conn.NetConn().Close() })
			<-tick.C
		case <-tick.C:
		}
	}
	s.stop()
	s.bgDone.Wait()
	select {
	case httpErr := <-httpDone:
		if err == nil && httpErr != nil {
			err = httpErr
		}
	case <-ctx.Done():
	}
	return err
}

func (s *Server) ready(c *fiber.Ctx) error {
	if s.draining.Load() {
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "draining"})
	}
	// A shared backplane (Redis) that is down makes this instance unable to
	// accept messages: load balancers should send new clients elsewhere.
	if r, ok := s.hub.bp.(interface{ Ready() bool }); ok && !r.Ready() {
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "backplane unavailable"})
	}
	// Near its memory budget the instance should get no new connections;
	// those it has keep working (see SetMemoryBudget).
	if s.pressure.Load() {
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "memory pressure"})
	}
	return c.JSON(fiber.Map{"status": "ready"})
}

// httpError answers a refused request with a JSON body clients can show.
func httpError(c *fiber.Ctx, status int, code, message string) error {
	return c.Status(status).JSON(fiber.Map{"error": code, "message": message})
}

func (s *Server) httpErrorHandler(c *fiber.Ctx, err error) error {
	var fe *fiber.Error
	if errors.As(err, &fe) {
		return httpError(c, fe.Code, strings.ReplaceAll(strings.ToLower(fe.Message), " ", "_"), fe.Message)
	}
	s.log.Error("http handler failed", "path", c.Path(), "err", err)
	return httpError(c, fiber.StatusInternalServerError, "internal", "internal error")
}

// guard checks an upgrade request before it becomes a WebSocket, where a
// refusal can still be an HTTP status with a JSON body.
func (s *Server) guard(c *fiber.Ctx) error {
	refuse := func(status int, code, message string) error {
		s.metrics.rejected.WithLabelValues(code).Inc()
		return httpError(c, status, code, message)
	}
	if !websocket.IsWebSocketUpgrade(c) {
		return refuse(fiber.StatusUpgradeRequired, "upgrade_required",
			"this endpoint speaks WebSocket: open it with a WebSocket client")
	}
	if s.draining.Load() {
		c.Set(fiber.HeaderRetryAfter, "1")
		return refuse(fiber.StatusServiceUnavailable, "restarting", "relay is restarting: reconnect")
	}
	token := c.Query("token")
	switch {
	case token == "":
		return refuse(fiber.StatusBadRequest, "missing_token", "query parameter token is required")
	case len(token) > maxTokenLen:
		return refuse(fiber.StatusBadRequest, "bad_token", "token is longer than 256 bytes")
	}
	env := c.Query("env")
	switch {
	case env == "":
		return refuse(fiber.StatusBadRequest, "missing_env", "query parameter env is required")
	case !config.ValidEnvName(env):
		return refuse(fiber.StatusBadRequest, "bad_env", "env must match [a-z0-9_-]{1,32}")
	}
	req := &connRequest{token: token, env: env, ip: c.IP()}
	switch v := c.Query("v"); {
	case v != "" && v != "1":
		return refuse(fiber.StatusBadRequest, "unsupported_version", "v must be 1 (or absent for the env's configured wire)")
	case v == "1" || offersSubprotocol(c.Get(fiber.HeaderSecWebSocketProtocol), subprotocolV1):
		req.wire = wireV1
	case s.cfg.WireFor(env) == config.WireV1:
		req.wire = wireV1
	}
	if since := c.Query("since"); since != "" {
		n, err := strconv.ParseUint(since, 10, 64)
		if err != nil {
			return refuse(fiber.StatusBadRequest, "bad_since", "since must be a non-negative integer (the last seq received)")
		}
		req.since = &n
	}
	if origin := c.Get(fiber.HeaderOrigin); origin != "" && !s.originAllowed(origin) {
		return refuse(fiber.StatusForbidden, "origin_not_allowed", "Origin "+origin+" is not allowed")
	}
	// Counted from here, before draining is checked again, so that Shutdown
	// waits for every upgrade it did not refuse.
	open := s.hub.open.Add(1)
	if max := s.cfg.Limits.MaxConnections; (max > 0 && open > int64(max)) || s.draining.Load() {
		s.hub.open.Add(-1)
		c.Set(fiber.HeaderRetryAfter, "5")
		return refuse(fiber.StatusServiceUnavailable, "server_full", "relay has no room for more connections")
	}
	if !s.acquireIP(req.ip) {
		s.hub.open.Add(-1)
		return refuse(fiber.StatusTooManyRequests, "too_many_connections", "too many connections from this address")
	}
	c.Locals(connRequestLocal, req)
	err := c.Next()
	if !c.Context().Hijacked() {
		s.hub.open.Add(-1)
		s.releaseIP(req.ip)
	}
	return err
}

func offersSubprotocol(header, want string) bool {
	for _, p := range strings.Split(header, ",") {
		if strings.TrimSpace(p) == want {
			return true
		}
	}
	return false
}

func (s *Server) originAllowed(origin string) bool {
	if len(s.cfg.Origins) == 0 {
		return true
	}
	for _, o := range s.cfg.Origins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

func (s *Server) acquireIP(ip string) bool {
	max := s.cfg.Limits.MaxConnectionsPerIP
	if max <= 0 {
		return true
	}
	s.ipMu.Lock()
	defer s.ipMu.Unlock()
	if s.ipConns[ip] >= max {
		return false
	}
	s.ipConns[ip]++
	return true
}

func (s *Server) releaseIP(ip string) {
	if s.cfg.Limits.MaxConnectionsPerIP <= 0 {
		return
	}
	s.ipMu.Lock()
	defer s.ipMu.Unlock()
	if s.ipConns[ip]--; s.ipConns[ip] <= 0 {
		delete(s.ipConns, ip)
	}
}

// serveConn starts the session of an upgraded connection and returns:
// contrib/websocket recycles conn then, so only its WebSocket connection is
// kept.
func (s *Server) serveConn(conn *websocket.Conn) {
	req := conn.Locals(connRequestLocal).(*connRequest)
	go s.runSession(conn.Conn, req)
}

// runSession runs one session to its end and closes its connection.
func (s *Server) runSession(conn *fws.Conn, req *connRequest) {
	h := s.hub
	defer func() {
		// Closing twice is harmless; closing never is a leaked socket.
		_ = conn.NetConn().Close()
		s.releaseIP(req.ip)
		h.open.Add(-1)
	}()
	defer s.recoverSession(conn)
	sess := &Session{hub: h, conn: conn, id: h.newSessionID(), token: req.token,
		tokenHash: hashToken(req.token), env: req.env, wire: req.wire, metrics: s.metrics.forEnv(req.env)}
	if !s.cfg.EnvAllowed(req.env) {
		s.closeAtOnce(sess, CloseEnvNotAllowed)
		return
	}
	if code := h.join(sess, req.since); code != 0 {
		s.closeAtOnce(sess, code)
		return
	}
	sess.metrics.connections.Inc()
	s.log.Debug("session open", "session", sess.id, "token", sess.tokenHash, "env", sess.env, "wire", sess.wire.String())
	sess.run()
	sess.metrics.connections.Dec()
	s.log.Debug("session closed", "session", sess.id, "token", sess.tokenHash, "env", sess.env)
}

// closeAtOnce refuses a session that never joined its room.
func (s *Server) closeAtOnce(sess *Session, code int) {
	s.metrics.rejected.WithLabelValues(closeCodeLabel(code)).Inc()
	s.metrics.closes.WithLabelValues(closeCodeLabel(code)).Inc()
	s.log.Info("session refused", "token", sess.tokenHash, "env", sess.env, "code", code, "reason", closeReasons[code])
	_ = sess.conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(code, closeReasons[code]), time.Now().Add(time.Second))
	// Give the peer a moment to read the close frame before the socket goes.
	_ = sess.conn.SetReadDeadline(time.Now().Add(closeGrace))
	for {
		if _, _, err := sess.conn.NextReader(); err != nil {
			return
		}
	}
}

func (s *Server) recoverSession(conn *fws.Conn) {
	if r := recover(); r != nil {
		s.log.Error("session panicked", "panic", r, "stack", string(debug.Stack()))
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseInternalServerErr, "internal error"), time.Now().Add(time.Second))
	}
}
