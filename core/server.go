package core

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"os"
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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pairrelay/relay/auth"
	"github.com/pairrelay/relay/config"
)

const (
	maxTokenLen = 256
	// authKeyPrefix starts the room of every authenticated connection, so
	// that a client of an env without auth can never join one by naming
	// its pairing key as a raw token.
	authKeyPrefix    = "auth:"
	authTimeout      = 5 * time.Second
	authFrameType    = "relay.auth"
	subprotocolV1    = "relay.v1"
	connRequestLocal = "relay.conn"
)

// Server is relay's HTTP side: the WebSocket endpoint, health and metrics.
// It is the only part of relay that knows about Fiber.
type Server struct {
	cfg     *config.Config
	log     *slog.Logger
	hub     *Hub
	metrics *Metrics
	// metricsHandler serves /metrics (behind metrics.token when set).
	metricsHandler http.Handler
	app            *fiber.App
	draining       atomic.Bool
	// firstFrameTimeout is how long a v1 connection that presented no
	// credential has to send it as a relay.auth frame (nanoseconds; tests
	// shorten it).
	firstFrameTimeout atomic.Int64
	ctx               context.Context // ends with Shutdown: background work stops
	stop              context.CancelFunc
	bgDone            sync.WaitGroup

	// nil: auth is configured but SetAuth was not called (every connection
	// is refused). Atomic because tests set it while the listener runs.
	auth atomic.Pointer[auth.Set]

	budget   MemoryBudget
	pressure atomic.Bool // memory use above the budget's high-water mark

	adm *admission // client addresses, connection rates and counts (admission.go)
}

// connRequest is what the upgrade guard learned, handed to the session.
type connRequest struct {
	token  string
	env    string
	wire   wireKind
	since  *uint64
	ip     string         // the client's address (client_ip), as auth and logs see it
	ipKey  netip.Addr     // what max_connections_per_ip counts it under
	claims map[string]any // what auth lets handlers see; nil without auth

	// firstFrame is set when the credential is to come as the first frame
	// ({"type":"relay.auth","data":{"token":…}}): the request to complete
	// with it, checked by provider.
	firstFrame *auth.Request
	provider   auth.Provider
	// expires is when the credential stops being valid (zero: never);
	// authReq then is the request a relay.refresh credential is checked as.
	expires time.Time
	authReq auth.Request
	key     string // the pairing key the credential proved
}

// NewServer builds a server relaying through bp.
func NewServer(cfg *config.Config, log *slog.Logger, bp Backplane) *Server {
	metrics := NewMetrics()
	s := &Server{cfg: cfg, log: log, metrics: metrics, hub: NewHub(cfg, log, bp, metrics)}
	ips, why := newClientIPs(cfg.ClientIP, os.Getenv)
	ips.why = why
	s.adm = newAdmission(log, &cfg.Limits, ips, metrics)
	metrics.registerAdmission(s.adm)
	if !cfg.UsesAuth() {
		s.auth.Store(auth.None())
	}
	s.firstFrameTimeout.Store(int64(5 * time.Second))
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
	if cfg.Path != "/" {
		// WeChat Cloud Hosting (and other platforms) probe / with a plain
		// GET; answer it as cheaply as /healthz instead of with a 404.
		s.app.Get("/", probeAnswer)
	}
	s.app.Get("/readyz", s.ready)
	s.metricsHandler = metricsGuard(cfg.Metrics.Token, promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	if cfg.Metrics.Listen == "" {
		s.app.Get("/metrics", adaptor.HTTPHandler(s.metricsHandler))
	}
	s.app.Get(cfg.Path, s.guard, websocket.New(s.serveConn, websocket.Config{
		Subprotocols:    []string{subprotocolV1},
		ReadBufferSize:  512,
		WriteBufferSize: 4096,
		WriteBufferPool: &sync.Pool{},
	}))
	if stats, ok := bp.(interface{ Stats() MemoryStats }); ok {
		metrics.registerHistory(stats.Stats)
	}
	// A backplane with series of its own (Redis: its memory, OOM refusals).
	if c, ok := bp.(prometheus.Collector); ok {
		metrics.Registry.MustRegister(c)
	}
	metrics.registerMemory(s)
	metrics.registerBackplane(bp)
	ctx, cancel := context.WithCancel(context.Background())
	s.ctx, s.stop = ctx, cancel
	s.bgDone.Add(1)
	go func() { defer s.bgDone.Done(); s.hub.heartbeat(ctx) }()
	s.bgDone.Add(1)
	go func() { defer s.bgDone.Done(); s.adm.sweep(ctx, time.Minute) }()
	if ages := s.hub.ages; ages != nil {
		s.bgDone.Add(1)
		go func() { defer s.bgDone.Done(); ages.run(ctx) }()
	}
	return s
}

// SetAuth gives the server the auth providers built from its config (see
// auth.Build). Call it before Serve. Without it a config that names a
// provider other than none refuses every connection.
func (s *Server) SetAuth(a *auth.Set) { s.auth.Store(a) }

// authFor returns env's provider, nil when the server has none.
func (s *Server) authFor(env string) auth.Provider {
	if a := s.auth.Load(); a != nil {
		return a.For(env)
	}
	return nil
}

// ClientAddresses says where the server finds a connection's client
// address: the preset in use (auto resolved), why it was chosen, and the
// header it reads ("" for the TCP peer only), for relay serve's log.
func (s *Server) ClientAddresses() (preset, why, header string) {
	return s.adm.ips.preset, s.adm.ips.why, s.adm.ips.header
}

// Hub returns the server's session hub.
func (s *Server) Hub() *Hub { return s.hub }

// MetricsHandler serves /metrics with metrics.token applied, for a listener
// of its own (metrics.listen); any other path is 404.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metricsHandler)
	return mux
}

// Mount serves h at prefix and every path below it on the main listener,
// beside the socket (the server API when api.listen is empty). Call it
// before Serve.
func (s *Server) Mount(prefix string, h http.Handler) {
	fh := adaptor.HTTPHandler(h)
	s.app.All(prefix, fh)
	s.app.All(prefix+"/*", fh)
}

// metricsGuard lets only requests with Authorization: Bearer token reach
// next; an empty token lets everyone.
func metricsGuard(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="relay metrics"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"unauthorized","message":"/metrics needs Authorization: Bearer <metrics.token>"}`))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Serve accepts connections on ln until Shutdown. Each connection is
// wrapped so that a session can watch its client's frames (frameguard.go).
func (s *Server) Serve(ln net.Listener) error {
	return s.app.Listener(guardListener{Listener: ln, adm: s.adm})
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
	if a := s.auth.Load(); a != nil {
		// A JWKS URL that fails is reported; only with no key at all does
		// the instance stop taking clients.
		if problems, fatal := a.Problems(); fatal {
			return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "auth keys unavailable", "problems": problems})
		} else if len(problems) > 0 {
			return c.JSON(fiber.Map{"status": "ready", "warnings": problems})
		}
	}
	return c.JSON(fiber.Map{"status": "ready"})
}

// plainProbe tells a health checker's (or a browser tab's) GET, which carries
// no WebSocket header at all, from a WebSocket attempt that lost its upgrade
// on the way (a proxy that drops the hop-by-hop Upgrade header still forwards
// Sec-WebSocket-Key): the first is answered 200 so that platforms probing the
// socket path see a healthy service and nothing is counted as refused, the
// second keeps 426 so that its client learns what went wrong.
func plainProbe(c *fiber.Ctx) bool {
	for _, h := range []string{fiber.HeaderUpgrade, fiber.HeaderSecWebSocketKey, fiber.HeaderSecWebSocketVersion, fiber.HeaderSecWebSocketProtocol} {
		if c.Get(h) != "" {
			return false
		}
	}
	return !strings.Contains(strings.ToLower(c.Get(fiber.HeaderConnection)), "upgrade")
}

// probeAnswer is the cheap answer to a platform's plain-GET health check: a
// fixed 15-byte body, no logging, no metric.
func probeAnswer(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.SendString(`{"status":"ok"}`)
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
		if plainProbe(c) {
			return probeAnswer(c)
		}
		return refuse(fiber.StatusUpgradeRequired, "upgrade_required",
			"this endpoint speaks WebSocket: open it with a WebSocket client")
	}
	if s.draining.Load() {
		c.Set(fiber.HeaderRetryAfter, "1")
		return refuse(fiber.StatusServiceUnavailable, "restarting", "relay is restarting: reconnect")
	}
	// Before anything that costs: a flood is refused at the price of a
	// token bucket.
	ip := s.adm.clientIP(c)
	if status, code, message, retry := s.adm.limitRate(ip); status != 0 {
		c.Set(fiber.HeaderRetryAfter, retry)
		return refuse(status, code, message)
	}
	env := c.Query("env")
	prov := s.authFor(env)
	cred, _, cerr := auth.Credential(c.Query("token"), c.Get(fiber.HeaderSecWebSocketProtocol), c.Get(fiber.HeaderAuthorization))
	if cerr != nil {
		return refuse(fiber.StatusBadRequest, cerr.Code, cerr.Message)
	}
	authenticated := prov == nil || prov.Authenticated()
	if !authenticated {
		// Provider none: the token is the pairing key, checked as it always was.
		switch {
		case cred == "":
			return refuse(fiber.StatusBadRequest, "missing_token", "query parameter token is required")
		case len(cred) > maxTokenLen:
			return refuse(fiber.StatusBadRequest, "bad_token", "token is longer than 256 bytes")
		case s.auth.Load().AnyAuthenticated() && strings.HasPrefix(cred, authKeyPrefix):
			// Authenticated rooms live under this prefix: a raw token must
			// never name one of them.
			return refuse(fiber.StatusBadRequest, "bad_token", "tokens starting with "+authKeyPrefix+" are reserved")
		}
	}
	switch {
	case env == "":
		return refuse(fiber.StatusBadRequest, "missing_env", "query parameter env is required")
	case !config.ValidEnvName(env):
		return refuse(fiber.StatusBadRequest, "bad_env", "env must match [a-z0-9_-]{1,32}")
	}
	req := &connRequest{env: env, ip: ip.String(), ipKey: limitKey(ip)}
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
	if prov == nil {
		// auth is configured but the server was given no providers: fail closed.
		return refuse(fiber.StatusServiceUnavailable, "auth_unavailable", "relay cannot check credentials")
	}
	if cred == "" && authenticated && req.wire == wireV1 {
		// A v1 client may send its credential as the first frame instead,
		// so that it is in no URL or header; the session checks it.
		req.firstFrame = &auth.Request{Env: env, IP: req.ip, Origin: c.Get(fiber.HeaderOrigin), Header: keptHeaders(c, prov)}
		req.provider = prov
		return s.admit(c, req, refuse)
	}
	ctx, cancel := context.WithTimeout(context.Background(), authTimeout)
	id, err := prov.Authenticate(ctx, &auth.Request{Credential: cred, Env: env, IP: req.ip, Origin: c.Get(fiber.HeaderOrigin),
		Header: func(name string) string { return c.Get(name) }})
	cancel()
	if err != nil {
		ae := auth.AsError(err)
		if ae != err {
			s.log.Warn("auth provider failed", "env", env, "err", err.Error())
		}
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="relay"`)
		return refuse(fiber.StatusUnauthorized, ae.Code, ae.Message)
	}
	if !id.EnvAllowed(env) {
		return refuse(fiber.StatusForbidden, "env_not_allowed", "the credential does not allow env "+env)
	}
	req.token, req.claims = id.Key, id.Claims
	if authenticated {
		req.token = authKeyPrefix + id.Key
	}
	if !id.Expires.IsZero() {
		req.provider, req.expires, req.key = prov, id.Expires, id.Key
		req.authReq = auth.Request{Env: env, IP: req.ip, Origin: c.Get(fiber.HeaderOrigin), Header: keptHeaders(c, prov)}
	}
	return s.admit(c, req, refuse)
}

// admit applies the connection limits to a request that passed every check
// and lets it upgrade.
func (s *Server) admit(c *fiber.Ctx, req *connRequest, refuse func(int, string, string) error) error {
	// Counted from here, before draining is checked again, so that Shutdown
	// waits for every upgrade it did not refuse.
	open := s.hub.open.Add(1)
	if max := s.cfg.Limits.MaxConnections; (max > 0 && open > int64(max)) || s.draining.Load() {
		s.hub.open.Add(-1)
		c.Set(fiber.HeaderRetryAfter, "5")
		return refuse(fiber.StatusServiceUnavailable, "server_full", "relay has no room for more connections")
	}
	if !s.adm.acquireClient(req.ipKey) {
		s.hub.open.Add(-1)
		c.Set(fiber.HeaderRetryAfter, "5")
		return refuse(fiber.StatusTooManyRequests, "too_many_connections", "too many connections from this address")
	}
	c.Locals(connRequestLocal, req)
	if s.cfg.Log.TraceProject != "" {
		// Beside req rather than in it: req lives as long as its session, and
		// only sessions with the header should pay for it.
		if t := parseCloudTrace(c.Get(traceHeader)); t != nil {
			c.Locals(traceLocal, t)
		}
	}
	err := c.Next()
	if !c.Context().Hijacked() {
		s.hub.open.Add(-1)
		s.adm.releaseClient(req.ipKey)
	}
	return err
}

// keptHeaders copies the request headers prov reads, for checks after the
// upgrade (Fiber's are gone once the upgrade handler returns). Only those:
// a session may keep them for its whole life. nil when prov reads none.
func keptHeaders(c *fiber.Ctx, prov auth.Provider) func(string) string {
	hr, ok := prov.(auth.HeaderReader)
	if !ok || len(hr.Headers()) == 0 {
		return nil
	}
	kept := map[string]string{}
	for _, name := range hr.Headers() {
		if v := c.Get(name); v != "" {
			kept[textproto.CanonicalMIMEHeaderKey(name)] = v
		}
	}
	return func(name string) string { return kept[textproto.CanonicalMIMEHeaderKey(name)] }
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

// serveConn starts the session of an upgraded connection and returns:
// contrib/websocket recycles conn then, so only its WebSocket connection is
// kept.
func (s *Server) serveConn(conn *websocket.Conn) {
	req := conn.Locals(connRequestLocal).(*connRequest)
	trace, _ := conn.Locals(traceLocal).(*traceRef)
	go s.runSession(conn.Conn, req, trace)
}

// runSession runs one session to its end and closes its connection.
func (s *Server) runSession(conn *fws.Conn, req *connRequest, trace *traceRef) {
	h := s.hub
	born := time.Now() // the connection's age counts from here
	defer func() {
		// Closing twice is harmless; closing never is a leaked socket.
		_ = conn.NetConn().Close()
		s.adm.releaseClient(req.ipKey)
		h.open.Add(-1)
	}()
	defer s.recoverSession(conn)
	// Before anything reads a frame (a relay.auth frame included): the
	// guard must see the stream from its first byte.
	if g := guardOf(conn.NetConn()); g != nil {
		g.arm(fragmentCap(&s.cfg.Limits), s.cfg.Limits.MessageTimeout)
	}
	sess := &Session{hub: h, conn: conn, id: h.newSessionID(), env: req.env, wire: req.wire, metrics: s.metrics.forEnv(req.env), trace: trace}
	if req.firstFrame != nil {
		if code := s.authFirstFrame(sess, req); code != 0 {
			s.closeAtOnce(sess, code)
			return
		}
	}
	sess.token, sess.tokenHash, sess.claims = req.token, hashToken(req.token), req.claims
	if !s.cfg.EnvAllowed(req.env) {
		s.closeAtOnce(sess, CloseEnvNotAllowed)
		return
	}
	if code := h.join(sess, req.since); code != 0 {
		s.closeAtOnce(sess, code)
		return
	}
	if !req.expires.IsZero() {
		sess.armExpiry(&sessionAuth{provider: req.provider, req: req.authReq, key: req.key, expires: req.expires})
		defer sess.stopExpiry()
	}
	if h.ages != nil {
		h.ages.add(sess, born)
		defer h.ages.remove(sess)
	}
	sess.metrics.connections.Inc()
	sess.log().Debug("session open", "session", sess.id, "token", sess.tokenHash, "env", sess.env, "wire", sess.wire.String(), "ip", req.ip)
	sess.run()
	sess.metrics.connections.Dec()
	sess.log().Debug("session closed", "session", sess.id, "token", sess.tokenHash, "env", sess.env)
}

// authFirstFrame reads the relay.auth frame a v1 client sends instead of a
// credential in the upgrade request, and authenticates it. A refusal is told
// with relay.error (the close code follows).
func (s *Server) authFirstFrame(sess *Session, req *connRequest) int {
	conn := sess.conn
	conn.SetReadLimit(auth.MaxCredentialBytes + 256)
	_ = conn.SetReadDeadline(time.Now().Add(time.Duration(s.firstFrameTimeout.Load())))
	// The refusal is counted by closeAtOnce, under its close code.
	fail := func(code, message string) int {
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = conn.WriteMessage(websocket.TextMessage, encodeSystem("relay.error", errorData{Code: code, Message: message}))
		if code == "env_not_allowed" {
			return CloseEnvNotAllowed
		}
		return CloseUnauthorized
	}
	op, text, err := conn.ReadMessage()
	if err != nil {
		return fail(ErrUnauthorized, "no credential: send {\"type\":\"relay.auth\",\"data\":{\"token\":…}} as the first frame within 5s, or present it when connecting")
	}
	var frame struct {
		Type string `json:"type"`
		Data struct {
			Token string `json:"token"`
		} `json:"data"`
	}
	if op != websocket.TextMessage || json.Unmarshal(text, &frame) != nil || frame.Type != authFrameType || frame.Data.Token == "" {
		return fail(ErrUnauthorized, "the first frame must be {\"type\":\"relay.auth\",\"data\":{\"token\":…}}")
	}
	r := *req.firstFrame
	r.Credential = frame.Data.Token
	ctx, cancel := context.WithTimeout(context.Background(), authTimeout)
	id, err := req.provider.Authenticate(ctx, &r)
	cancel()
	if err != nil {
		ae := auth.AsError(err)
		if ae != err {
			sess.log().Warn("auth provider failed", "env", req.env, "err", err.Error())
		}
		return fail(ae.Code, ae.Message)
	}
	if !id.EnvAllowed(req.env) {
		return fail("env_not_allowed", "the credential does not allow env "+req.env)
	}
	req.token, req.claims = authKeyPrefix+id.Key, id.Claims
	if !id.Expires.IsZero() {
		req.expires, req.key, req.authReq = id.Expires, id.Key, *req.firstFrame
	}
	return 0
}

// closeAtOnce refuses a session that never joined its room.
func (s *Server) closeAtOnce(sess *Session, code int) {
	s.metrics.rejected.WithLabelValues(closeCodeLabel(code)).Inc()
	s.metrics.closes.WithLabelValues(closeCodeLabel(code)).Inc()
	sess.log().Info("session refused", "token", sess.tokenHash, "env", sess.env, "code", code, "reason", closeReasons[code])
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
