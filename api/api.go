// Package api is relay's server API under /api/v1 (docs/api.md): a backend
// publishes to a token, asks who is online, reads history and disconnects
// sessions; an operator reads counters. It is a plain net/http handler over
// core.ServerAPI, so that it runs on the relay's own listener (mounted by
// core.Server.Mount) or on one of its own (api.listen), and the admin
// console can call the same handlers.
package api

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

// Prefix is where the API lives.
const Prefix = "/api/v1"

// OpenAPI is the API's OpenAPI 3.1 document, served at Prefix/openapi.json
// and kept as docs/api.openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// Error codes of the API's own refusals (the route's refusals keep the
// codes of relay.error, docs/protocol.md).
const (
	ErrUnauthorized     = "unauthorized"
	ErrNotFound         = "not_found"
	ErrMethodNotAllowed = "method_not_allowed"
	ErrBodyTooLarge     = "body_too_large"
	ErrBadRequest       = "bad_request"
	ErrTooManyMessages  = "too_many_messages"
	ErrBadCode          = "bad_code"
	ErrBackplane        = "unavailable"
)

// Handler serves the API. Build it with New.
type Handler struct {
	relay  *core.ServerAPI
	cfg    config.API
	log    *slog.Logger
	keys   [][sha256.Size]byte
	routes map[string]map[string]http.HandlerFunc // path -> method -> handler
}

// Route is one method and path the API answers.
type Route struct{ Method, Path string }

// New returns the API of relay, configured by cfg (its keys must be set:
// without keys the API is off and nothing should serve it).
func New(relay *core.ServerAPI, cfg config.API, log *slog.Logger) *Handler {
	h := &Handler{relay: relay, cfg: cfg, log: log}
	for _, k := range cfg.Keys {
		h.keys = append(h.keys, sha256.Sum256([]byte(k)))
	}
	h.routes = map[string]map[string]http.HandlerFunc{
		"/publish":       {http.MethodPost: h.publish},
		"/publish/batch": {http.MethodPost: h.publishBatch},
		"/presence":      {http.MethodGet: h.presence},
		"/history":       {http.MethodGet: h.history},
		"/disconnect":    {http.MethodPost: h.disconnect},
		"/stats":         {http.MethodGet: h.stats},
		"/openapi.json":  {http.MethodGet: h.openapi},
	}
	return h
}

// Routes lists every method and path the handler answers, in order.
func (h *Handler) Routes() []Route {
	var out []Route
	for path, methods := range h.routes {
		for m := range methods {
			out = append(out, Route{Method: m, Path: Prefix + path})
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return strings.Compare(a.Path+" "+a.Method, b.Path+" "+b.Method) })
	return out
}

// ServeHTTP authenticates the request and dispatches it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	path, ok := strings.CutPrefix(r.URL.Path, Prefix)
	methods := h.routes[path]
	if !ok || methods == nil {
		writeError(w, http.StatusNotFound, ErrNotFound, "no such API path: see "+Prefix+"/openapi.json")
		return
	}
	// The document describes the API and holds no secret: tools fetch it
	// without a key.
	if path != "/openapi.json" && !h.Authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="relay api"`)
		writeError(w, http.StatusUnauthorized, ErrUnauthorized, "the API needs Authorization: Bearer <one of api.keys>")
		return
	}
	fn := methods[r.Method]
	if fn == nil {
		allow := make([]string, 0, len(methods))
		for m := range methods {
			allow = append(allow, m)
		}
		slices.Sort(allow)
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, ErrMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, strings.Join(allow, " or ")))
		return
	}
	fn(w, r)
}

// Authorized reports whether r carries one of api.keys as its bearer key
// (the admin console can check its requests with it too). It compares the
// key with every configured one in constant time: digests of equal
// length, and no early exit.
func (h *Handler) Authorized(r *http.Request) bool {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || key == "" {
		return false
	}
	sum := sha256.Sum256([]byte(key))
	match := 0
	for i := range h.keys {
		match |= subtle.ConstantTimeCompare(sum[:], h.keys[i][:])
	}
	return match == 1
}

// apiError is every refusal's body; route, ref (and status, in a batch
// result) appear when the routes refused a message.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Route   string `json:"route,omitempty"`
	Ref     string `json:"ref,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"internal","message":"cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, apiError{Error: code, Message: message})
}

// decodeBody reads r's JSON body into v: at most api.max_body_bytes, one
// object, no field v does not know. It answers the refusal itself and
// reports whether the body was good.
func (h *Handler) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(h.cfg.MaxBodyBytes)))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, ErrBodyTooLarge,
			fmt.Sprintf("the body is larger than api.max_body_bytes (%d bytes)", h.cfg.MaxBodyBytes))
		return false
	case err != nil:
		writeError(w, http.StatusBadRequest, ErrBadRequest, "cannot read the body: "+err.Error())
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, ErrBadRequest, "the body must be a JSON object as "+Prefix+"/openapi.json describes: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, ErrBadRequest, "the body holds more than one JSON value")
		return false
	}
	return true
}

// query reads r's query parameters: each at most once, none but allowed.
// It answers the refusal itself.
func query(w http.ResponseWriter, r *http.Request, allowed ...string) (map[string]string, bool) {
	q := r.URL.Query()
	out := make(map[string]string, len(q))
	for name, values := range q {
		if !slices.Contains(allowed, name) {
			writeError(w, http.StatusBadRequest, ErrBadRequest, fmt.Sprintf("unknown query parameter %q (known: %s)", name, strings.Join(allowed, ", ")))
			return nil, false
		}
		if len(values) > 1 {
			writeError(w, http.StatusBadRequest, ErrBadRequest, fmt.Sprintf("query parameter %q given more than once", name))
			return nil, false
		}
		out[name] = values[0]
	}
	return out, true
}

// checkToken refuses a missing or oversized token.
func checkToken(w http.ResponseWriter, token string) bool {
	switch {
	case token == "":
		writeError(w, http.StatusBadRequest, ErrBadRequest, "token is required: the pairing key of the clients")
		return false
	case len(token) > core.MaxTokenBytes:
		writeError(w, http.StatusBadRequest, ErrBadRequest, fmt.Sprintf("token is longer than %d bytes", core.MaxTokenBytes))
		return false
	}
	return true
}

// message is one message to publish, as the body of /publish and each
// item of /publish/batch.
type message struct {
	Token string          `json:"token"`
	Type  string          `json:"type"`
	Data  json.RawMessage `json:"data,omitempty"`
	To    []string        `json:"to,omitempty"`
	ID    string          `json:"id,omitempty"`
}

func (m *message) request() core.PublishRequest {
	return core.PublishRequest{Token: m.Token, Type: m.Type, Data: m.Data, To: m.To, ID: m.ID}
}

// published is the answer for one message: accepted (seq) or refused.
type published struct {
	Seq       uint64 `json:"seq,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Dropped   bool   `json:"dropped,omitempty"`
	Status    int    `json:"status,omitempty"` // in a batch: the HTTP status this message alone would get
	*apiError
}

// outcome turns a publish outcome into an HTTP status and body.
func outcome(o core.PublishOutcome) (int, published) {
	if o.Err == nil {
		return http.StatusOK, published{Seq: o.Seq, Duplicate: o.Duplicate, Dropped: o.Dropped}
	}
	return refusalStatus(o.Err.Code, o.Route), published{apiError: &apiError{Error: o.Err.Code, Message: o.Err.Message, Route: o.Route, Ref: o.Ref}}
}

// refusalStatus is the HTTP status of a message refused with code by
// route ("" when no route decided): a route's refusal is 422 (429 for its
// rate limit), whatever its code; without a route, a malformed message is
// 400, a backplane that could not take it 503 (retry; with the same id
// after unconfirmed), and unknown_type (unmatched: reject) 422.
func refusalStatus(code, route string) int {
	if code == core.ErrUnavailable || code == core.ErrUnconfirmed {
		return http.StatusServiceUnavailable
	}
	if route != "" {
		if code == core.ErrRateLimited {
			return http.StatusTooManyRequests
		}
		return http.StatusUnprocessableEntity
	}
	switch code {
	case core.ErrInvalidMessage, core.ErrInvalidJSON, core.ErrReservedType:
		return http.StatusBadRequest
	}
	return http.StatusUnprocessableEntity
}

func (h *Handler) publish(w http.ResponseWriter, r *http.Request) {
	var m message
	if !h.decodeBody(w, r, &m) {
		return
	}
	out := h.relay.Publish(r.Context(), []core.PublishRequest{m.request()})
	status, body := outcome(out[0])
	if body.apiError != nil {
		writeJSON(w, status, body.apiError)
		return
	}
	writeJSON(w, status, body)
}

type batchRequest struct {
	Messages []message `json:"messages"`
}

type batchResponse struct {
	Results []published `json:"results"`
}

func (h *Handler) publishBatch(w http.ResponseWriter, r *http.Request) {
	var b batchRequest
	if !h.decodeBody(w, r, &b) {
		return
	}
	switch n := len(b.Messages); {
	case n == 0:
		writeError(w, http.StatusBadRequest, ErrBadRequest, "messages is required: a list of 1 to api.max_batch messages")
		return
	case n > h.cfg.MaxBatch:
		writeError(w, http.StatusBadRequest, ErrTooManyMessages, fmt.Sprintf("%d messages, more than api.max_batch (%d)", n, h.cfg.MaxBatch))
		return
	}
	reqs := make([]core.PublishRequest, len(b.Messages))
	for i := range b.Messages {
		reqs[i] = b.Messages[i].request()
	}
	outs := h.relay.Publish(r.Context(), reqs)
	res := batchResponse{Results: make([]published, len(outs))}
	for i, o := range outs {
		status, body := outcome(o)
		body.Status = status
		res.Results[i] = body
	}
	writeJSON(w, http.StatusOK, res)
}

type presenceResponse struct {
	TokenID string   `json:"token_id"`
	Envs    []string `json:"envs"`
}

func (h *Handler) presence(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "token")
	if !ok || !checkToken(w, q["token"]) {
		return
	}
	envs, err := h.relay.Presence(r.Context(), q["token"])
	if err != nil {
		h.backplaneFailed(w, "presence", err)
		return
	}
	writeJSON(w, http.StatusOK, presenceResponse{TokenID: h.relay.TokenID(h.relay.Room(q["token"])), Envs: envs})
}

type historyMessage struct {
	Seq  uint64          `json:"seq"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data,omitempty"`
	From string          `json:"from"`
	To   []string        `json:"to,omitempty"`
	ID   string          `json:"id,omitempty"`
	TS   int64           `json:"ts"`
}

type historyResponse struct {
	TokenID  string           `json:"token_id"`
	Messages []historyMessage `json:"messages"`
	Last     uint64           `json:"last"`
	Complete bool             `json:"complete"`
	More     bool             `json:"more"`
}

func (h *Handler) history(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "token", "since", "limit")
	if !ok || !checkToken(w, q["token"]) {
		return
	}
	var since uint64
	if s, given := q["since"]; given {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, ErrBadRequest, "since must be a non-negative integer (a seq; 0 for everything retained)")
			return
		}
		since = n
	}
	limit := h.cfg.MaxHistory
	if s, given := q["limit"]; given {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, ErrBadRequest, fmt.Sprintf("limit must be an integer from 1 to api.max_history (%d)", h.cfg.MaxHistory))
			return
		}
		limit = min(n, h.cfg.MaxHistory)
	}
	res, err := h.relay.History(r.Context(), q["token"], since, limit)
	if err != nil {
		h.backplaneFailed(w, "history", err)
		return
	}
	out := historyResponse{TokenID: h.relay.TokenID(h.relay.Room(q["token"])), Messages: make([]historyMessage, len(res.Messages)),
		Last: res.Last, Complete: res.Complete}
	for i, m := range res.Messages {
		typ, data := m.TypeAndData()
		out.Messages[i] = historyMessage{Seq: m.Seq, Type: typ, Data: data, From: m.From, To: m.To, ID: m.ID, TS: m.TS}
	}
	// limit cut the list: the next page starts after its last seq.
	out.More = len(res.Messages) == limit && res.Messages[len(res.Messages)-1].Seq < res.Last
	writeJSON(w, http.StatusOK, out)
}

type disconnectRequest struct {
	Token string `json:"token"`
	Env   string `json:"env,omitempty"`
	Code  *int   `json:"code,omitempty"`
}

type disconnectResponse struct {
	TokenID string   `json:"token_id"`
	Envs    []string `json:"envs"`
	Code    int      `json:"code"`
}

func (h *Handler) disconnect(w http.ResponseWriter, r *http.Request) {
	var d disconnectRequest
	if !h.decodeBody(w, r, &d) || !checkToken(w, d.Token) {
		return
	}
	if d.Env != "" && !config.ValidEnvName(d.Env) {
		writeError(w, http.StatusBadRequest, ErrBadRequest, "env must match [a-z0-9_-]{1,32}, or be absent for every env")
		return
	}
	code := core.CloseDisconnected
	if d.Code != nil {
		code = *d.Code
	}
	if !core.ValidDisconnectCode(code) {
		writeError(w, http.StatusBadRequest, ErrBadCode, fmt.Sprintf("code %d: must be 1000, 1012 or 4000–4999 (4000–4499: the client reconnects; 4500–4999: it does not)", code))
		return
	}
	envs, err := h.relay.Disconnect(r.Context(), d.Token, d.Env, code)
	if err != nil {
		h.backplaneFailed(w, "disconnect", err)
		return
	}
	writeJSON(w, http.StatusOK, disconnectResponse{TokenID: h.relay.TokenID(h.relay.Room(d.Token)), Envs: envs, Code: code})
}

func (h *Handler) stats(w http.ResponseWriter, r *http.Request) {
	if _, ok := query(w, r); !ok {
		return
	}
	st, err := h.relay.Stats()
	if err != nil {
		h.log.Error("server API: stats", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "cannot read the counters")
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *Handler) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(OpenAPI)
}

// backplaneFailed answers 503 when the backplane (Redis) cannot answer.
func (h *Handler) backplaneFailed(w http.ResponseWriter, what string, err error) {
	h.log.Warn("server API: backplane failed", "op", what, "err", err)
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, ErrBackplane, "relay cannot reach its backplane right now; retry")
}
