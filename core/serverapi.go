package core

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pairrelay/relay/config"
)

// ServerAPI is what a backend or an operator does with a running relay
// through the server API (package api) and the admin console: publish to
// a token as env api.env, read its presence and history, disconnect its
// sessions, read counters. Tokens are pairing keys, as a backend knows
// them; Room turns one into the room the hub and the backplane know.
type ServerAPI struct {
	s         *Server
	authRooms bool // rooms are keyed by authKeyPrefix + the pairing key
}

// API returns the server's API surface.
func (s *Server) API() *ServerAPI { return &ServerAPI{s: s, authRooms: s.cfg.UsesAuth()} }

// Room is the room a pairing key names. With auth configured for any env,
// an authenticated connection joins the room of its credential's key under
// authKeyPrefix, so the key maps the same way; without auth the key is
// the token clients connect with. (In a config where some envs use
// provider none and others authenticate, the none envs' rooms are not
// reachable through the API: they never pair with authenticated ones.)
func (a *ServerAPI) Room(key string) string {
	if a.authRooms {
		return authKeyPrefix + key
	}
	return key
}

// TokenID names a room in logs and answers without revealing its token.
func (a *ServerAPI) TokenID(room string) string { return hashToken(room) }

// PublishRequest is one message the API publishes to the room of Token (a
// pairing key), as env api.env.
type PublishRequest struct {
	Token string
	Type  string
	Data  json.RawMessage
	To    []string
	ID    string
}

// PublishOutcome is what became of one PublishRequest: accepted with Seq
// (Duplicate: an earlier message with the same id was, with that seq;
// Dropped: the route dropped it, nothing was published), or refused with
// Err (Route names the route that refused, Ref the log line).
type PublishOutcome struct {
	Seq       uint64
	Duplicate bool
	Dropped   bool
	Route     string
	Err       *ClientError
	Ref       string
}

// Bounds of what the API publishes, the same as a client's (docs/protocol.md).
const (
	MaxTokenBytes = maxTokenLen
	MaxTypeBytes  = maxTypeLen
	MaxIDBytes    = maxIDLen
)

// checkRequest applies the rules a v1 client's message meets in parseV1,
// and the token's.
func (a *ServerAPI) checkRequest(r *PublishRequest) *ClientError {
	switch {
	case r.Token == "":
		return clientErr(ErrInvalidMessage, `field "token" is required`)
	case len(r.Token) > maxTokenLen:
		return clientErr(ErrInvalidMessage, `field "token" is longer than %d bytes`, maxTokenLen)
	case r.Type == "":
		return clientErr(ErrInvalidMessage, `field "type" is required`)
	case len(r.Type) > maxTypeLen:
		return clientErr(ErrInvalidMessage, `field "type" is longer than %d bytes`, maxTypeLen)
	case strings.HasPrefix(r.Type, "relay."):
		return clientErr(ErrReservedType, `type %q is reserved: names starting with "relay." belong to the relay`, r.Type)
	case len(r.ID) > maxIDLen:
		return clientErr(ErrInvalidMessage, `field "id" is longer than %d bytes`, maxIDLen)
	case len(r.Data) > 0 && !json.Valid(r.Data):
		return clientErr(ErrInvalidJSON, `field "data" is not valid JSON`)
	}
	for _, env := range r.To {
		if !config.ValidEnvName(env) {
			return clientErr(ErrInvalidMessage, `field "to": %q is not an env name ([a-z0-9_-]{1,32})`, env)
		}
	}
	return nil
}

// Publish routes each request as a message from env api.env and publishes
// what its route makes of it, exactly as a client's message goes
// (Hub.route, then the backplane's one publish call for all of them), in
// order. Each request stands alone: one refused does not hold back the
// others. len(result) == len(reqs).
func (a *ServerAPI) Publish(ctx context.Context, reqs []PublishRequest) []PublishOutcome {
	h := a.s.hub
	env := a.s.cfg.API.Env
	// Counted as messages in from api.env, beside the clients' envs.
	a.s.metrics.forEnv(env).messagesIn.Add(float64(len(reqs)))
	out := make([]PublishOutcome, len(reqs))
	items := make([]pubItem, len(reqs))
	now := time.Now().UnixMilli()
	for i := range reqs {
		r := &reqs[i]
		if cerr := a.checkRequest(r); cerr != nil {
			items[i] = pubItem{id: r.ID, refusal: cerr}
			continue
		}
		data := r.Data
		if len(data) == 0 {
			data = nil
		}
		m := &Message{Type: r.Type, Data: data, To: r.To, ID: r.ID, Token: a.Room(r.Token), From: env, TS: now}
		items[i] = h.route(nil, m)
	}
	var batches [][]*Message
	var which []int
	for i := range items {
		if items[i].publish && len(items[i].out) > 0 {
			batches = append(batches, items[i].out)
			which = append(which, i)
		}
	}
	results := make([]BatchResult, len(batches))
	if h.batch != nil && len(batches) > 0 {
		h.batch.PublishBatches(ctx, batches, results)
	} else {
		for k, b := range batches {
			results[k].PublishResult, results[k].Err = h.bp.Publish(ctx, b)
		}
	}
	published := make(map[int]*BatchResult, len(which))
	for k, i := range which {
		published[i] = &results[k]
	}
	for i := range items {
		it, o := &items[i], &out[i]
		o.Route = it.route
		switch r := published[i]; {
		case it.refusal != nil:
			o.Err = it.refusal
		case !it.publish:
			o.Seq, o.Duplicate = it.seq, true // a repeat the routes did not run for
		case r == nil:
			o.Dropped = true // the route let nothing through
		case r.Err != nil:
			o.Err = publishRefusal(r.Err)
			h.metrics.drops.WithLabelValues(o.Err.Code).Inc()
			h.log.Warn("server API: publish failed", "token", hashToken(a.Room(reqs[i].Token)), "code", o.Err.Code, "err", r.Err)
		default:
			o.Seq, o.Duplicate = r.Seq, r.Duplicate
			if r.Duplicate {
				h.metrics.drops.WithLabelValues("duplicate").Inc()
			}
		}
		if o.Err != nil {
			o.Ref = newRef()
			a.logRefusal(&reqs[i], o)
		}
	}
	return out
}

// logRefusal logs a refused API message as a session logs its client's,
// within the process's budget of refusal lines.
func (a *ServerAPI) logRefusal(r *PublishRequest, o *PublishOutcome) {
	h := a.s.hub
	h.metrics.errors.WithLabelValues(o.Err.Code).Inc()
	if !h.refusalLog.Allow() {
		return
	}
	attrs := []any{"ref", o.Ref, "code", o.Err.Code, "reason", o.Err.Message,
		"token", hashToken(a.Room(r.Token)), "env", a.s.cfg.API.Env, "route", o.Route, "via", "api"}
	if o.Err.cause != nil {
		h.log.Warn("message refused: handler failed", append(attrs, "err", o.Err.cause.Error())...)
	} else {
		h.log.Info("message refused", attrs...)
	}
}

// Presence returns the envs of the key's room online on any instance.
func (a *ServerAPI) Presence(ctx context.Context, key string) ([]string, error) {
	envs, err := a.s.hub.bp.Presence(ctx, a.Room(key))
	if envs == nil && err == nil {
		envs = []string{}
	}
	return envs, err
}

// History returns at most limit messages of the key's room after since
// (0: from the oldest retained), as a resuming client would get them.
func (a *ServerAPI) History(ctx context.Context, key string, since uint64, limit int) (HistoryResult, error) {
	return a.s.hub.bp.History(ctx, a.Room(key), since, limit)
}

// Disconnect closes the sessions of the key's room of env ("" every env)
// with code, on every instance. It returns the envs that were online.
func (a *ServerAPI) Disconnect(ctx context.Context, key, env string, code int) ([]string, error) {
	if !ValidDisconnectCode(code) {
		return nil, fmt.Errorf("close code %d: must be 1000, 1012 or between 4000 and 4999", code)
	}
	room := a.Room(key)
	online, err := a.Presence(ctx, key)
	if err != nil {
		return nil, err
	}
	if env != "" {
		if !slices.Contains(online, env) {
			online = []string{}
		} else {
			online = []string{env}
		}
	}
	if err := a.s.hub.bp.Disconnect(ctx, room, env, code); err != nil {
		return nil, err
	}
	a.s.hub.log.Info("server API: disconnect", "token", hashToken(room), "env", env, "code", code, "online", len(online))
	return online, nil
}

// TypeAndData is what a v1 receiver sees of m's type and data (a seed
// client's text parsed as relay parses it).
func (m *Message) TypeAndData() (string, json.RawMessage) { return m.typeAndData() }

// Stats are an instance's counters, for the API's /stats and the console.
type Stats struct {
	Instance    string             `json:"instance"`
	Backplane   string             `json:"backplane"`
	Connections int64              `json:"connections"`
	Rooms       int                `json:"rooms"`
	Envs        map[string]int     `json:"envs"`
	MessagesIn  float64            `json:"messages_in"`
	MessagesOut float64            `json:"messages_out"`
	Drops       map[string]float64 `json:"drops"`
	Errors      map[string]float64 `json:"errors"`
	Closes      map[string]float64 `json:"closes"`
	Refused     map[string]float64 `json:"upgrades_refused"`
	Draining    bool               `json:"draining"`
}

// Stats reads this instance's counters (other instances have their own).
func (a *ServerAPI) Stats() (Stats, error) {
	h := a.s.hub
	st := Stats{Instance: h.instance, Backplane: a.s.cfg.Backplane.Type, Connections: h.open.Load(),
		Envs: map[string]int{}, Drops: map[string]float64{}, Errors: map[string]float64{},
		Closes: map[string]float64{}, Refused: map[string]float64{}, Draining: a.s.draining.Load()}
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		st.Rooms += len(sh.rooms)
		for _, r := range sh.rooms {
			r.mu.Lock()
			for env := range r.sessions {
				st.Envs[env]++
			}
			r.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	families, err := a.s.metrics.Registry.Gather()
	if err != nil {
		return st, fmt.Errorf("reading metrics: %w", err)
	}
	byLabel := map[string]map[string]float64{
		"relay_drops_total": st.Drops, "relay_errors_total": st.Errors,
		"relay_closes_total": st.Closes, "relay_upgrades_refused_total": st.Refused,
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			v := m.GetCounter().GetValue()
			switch name := f.GetName(); name {
			case "relay_messages_in_total":
				st.MessagesIn += v
			case "relay_messages_out_total":
				st.MessagesOut += v
			default:
				if into := byLabel[name]; into != nil && len(m.GetLabel()) == 1 {
					into[m.GetLabel()[0].GetValue()] += v
				}
			}
		}
	}
	return st, nil
}
