package core

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/pairrelay/relay/auth"
)

const (
	refreshType = "relay.refresh"
	// expiryWarning is how long before its credential expires a session is
	// told (relay.error token_expired) so that it can send relay.refresh;
	// half the remaining time when that is shorter.
	expiryWarning = 30 * time.Second
)

// sessionAuth is what a session whose credential expires needs to warn,
// close at expiry, and take a refreshed credential.
type sessionAuth struct {
	provider auth.Provider
	req      auth.Request // the connection's request, to check a new credential against
	key      string       // the pairing key the credential proved; a refresh must prove the same

	mu      sync.Mutex
	expires time.Time
	timer   *time.Timer
	gen     uint64 // bumped by every (re)arm, so that a timer that fired late does nothing
}

// armExpiry makes s warn before expires and close with 4501 at it.
func (s *Session) armExpiry(a *sessionAuth) {
	s.authState = a
	a.mu.Lock()
	defer a.mu.Unlock()
	s.scheduleLocked(a, false)
}

// scheduleLocked sets the timer for the next step: the warning, or when it
// was given (or there is no time for it), the close.
func (s *Session) scheduleLocked(a *sessionAuth, warned bool) {
	a.gen++
	gen := a.gen
	if a.timer != nil {
		a.timer.Stop()
	}
	left := time.Until(a.expires)
	warnIn := left - min(expiryWarning, left/2)
	if warned || warnIn <= 0 {
		a.timer = time.AfterFunc(max(left, 0), func() { s.expire(a, gen) })
		return
	}
	a.timer = time.AfterFunc(warnIn, func() { s.warnExpiry(a, gen) })
}

func (s *Session) warnExpiry(a *sessionAuth, gen uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if gen != a.gen {
		return
	}
	if s.wire == wireV1 {
		secs := int(time.Until(a.expires).Round(time.Second) / time.Second)
		s.sendText(encodeSystem("relay.error", errorData{Code: ErrTokenExpired,
			Message: "the credential expires in " + strconv.Itoa(secs) + "s: send relay.refresh with a new one to stay connected"}))
	}
	s.scheduleLocked(a, true)
}

func (s *Session) expire(a *sessionAuth, gen uint64) {
	a.mu.Lock()
	stale := gen != a.gen
	a.mu.Unlock()
	if stale {
		return
	}
	s.hub.metrics.drops.WithLabelValues("token_expired").Inc()
	s.closeWith(CloseUnauthorized)
}

// stopExpiry ends the timers of a session that is over.
func (s *Session) stopExpiry() {
	a := s.authState
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	if a.timer != nil {
		a.timer.Stop()
	}
}

// refreshAuth takes relay.refresh {token}: a valid credential for the same
// pairing key and env moves the expiry (and the claims); anything else is
// refused with relay.error and leaves the session as it was.
func (s *Session) refreshAuth(m *Message) {
	a := s.authState
	if a == nil {
		s.refuse(m.ID, &ClientError{Code: ErrUnauthorized, Message: "this connection has no expiring credential to refresh"}, "")
		return
	}
	var data struct {
		Token string `json:"token"`
	}
	if json.Unmarshal(m.Data, &data) != nil || data.Token == "" {
		s.refuse(m.ID, &ClientError{Code: ErrInvalidMessage, Message: `relay.refresh needs data {"token": "<new credential>"}`}, "")
		return
	}
	req := a.req
	req.Credential = data.Token
	ctx, cancel := context.WithTimeout(context.Background(), authTimeout)
	id, err := a.provider.Authenticate(ctx, &req)
	cancel()
	switch {
	case err != nil:
		ae := auth.AsError(err)
		s.refuse(m.ID, &ClientError{Code: ae.Code, Message: ae.Message}, "")
		return
	case id.Key != a.key:
		s.refuse(m.ID, &ClientError{Code: ErrUnauthorized, Message: "the new credential is for another pairing key"}, "")
		return
	case !id.EnvAllowed(s.env):
		s.refuse(m.ID, &ClientError{Code: ErrUnauthorized, Message: "the new credential does not allow env " + s.env}, "")
		return
	}
	s.claims = id.Claims // read only by this reader goroutine
	a.mu.Lock()
	if id.Expires.IsZero() {
		// The new credential does not expire: no more timers.
		a.gen++
		if a.timer != nil {
			a.timer.Stop()
		}
	} else {
		a.expires = id.Expires
		s.scheduleLocked(a, false)
	}
	a.mu.Unlock()
	if m.ID != "" {
		s.ack(m.ID, 0)
	}
}
