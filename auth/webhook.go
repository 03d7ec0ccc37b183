package auth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/pairrelay/relay/config"
)

const (
	// SignatureHeader carries t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">.
	SignatureHeader  = "X-Relay-Signature"
	maxWebhookAnswer = 64 << 10
	maxWebhookCache  = 10000
)

// Sign returns the X-Relay-Signature value for body sent at ts: the
// timestamp, and the HMAC-SHA256 with secret of the timestamp, a dot and the
// body. A backend recomputes it, compares in constant time and refuses old
// timestamps, so a captured request cannot be replayed later.
func Sign(secret []byte, ts time.Time, body []byte) string {
	t := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(t))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "t=" + t + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

func init() { Register(config.AuthWebhook, newWebhook) }

// webhookProvider asks a backend about each connection (a connect proxy)
// and caches its answers for a while.
type webhookProvider struct {
	cfg    config.WebhookAuth
	client *http.Client
	log    *slog.Logger

	mu    sync.Mutex
	cache map[[32]byte]webhookAnswer
	calls int // requests sent, for tests
}

type webhookAnswer struct {
	id    *Identity
	err   *Error
	until time.Time
}

func newWebhook(a config.Auth, at string, opts Options) (Provider, error) {
	return &webhookProvider{cfg: a.Webhook, client: opts.Client, log: opts.Log.With("auth", "webhook"),
		cache: map[[32]byte]webhookAnswer{}}, nil
}

func (p *webhookProvider) Authenticated() bool { return true }
func (p *webhookProvider) Headers() []string   { return p.cfg.Headers }
func (p *webhookProvider) Close()              {}

func (p *webhookProvider) Authenticate(ctx context.Context, req *Request) (*Identity, error) {
	if req.Credential == "" {
		return nil, refuse("a token is required")
	}
	// The cache key is a hash: the cache never holds credentials in clear.
	key := sha256.Sum256([]byte(req.Env + "\x00" + req.Credential))
	now := time.Now()
	if p.cfg.CacheTTL > 0 {
		p.mu.Lock()
		a, ok := p.cache[key]
		p.mu.Unlock()
		if ok && now.Before(a.until) {
			if a.err != nil {
				return nil, a.err
			}
			return a.id, nil
		}
	}
	id, refusal, err := p.ask(ctx, req)
	if err != nil {
		// Not cached: the next connection asks again.
		p.log.Warn("auth: the connect webhook failed; connection refused", "env", req.Env, "err", err.Error())
		return nil, refuse("the credential could not be checked")
	}
	if p.cfg.CacheTTL > 0 {
		until := now.Add(p.cfg.CacheTTL)
		if id != nil && !id.Expires.IsZero() && id.Expires.Before(until) {
			until = id.Expires
		}
		p.store(key, webhookAnswer{id: id, err: refusal, until: until})
	}
	if refusal != nil {
		return nil, refusal
	}
	return id, nil
}

// ask posts the connection to the backend. A refusal is its 401/403 or an
// expired answer; err is anything else (the backend failed).
func (p *webhookProvider) ask(ctx context.Context, req *Request) (*Identity, *Error, error) {
	headers := map[string]string{}
	for _, name := range p.cfg.Headers {
		if v := req.header(name); v != "" {
			headers[name] = v
		}
	}
	body, err := json.Marshal(struct {
		Token   string            `json:"token"`
		Env     string            `json:"env"`
		IP      string            `json:"ip"`
		Origin  string            `json:"origin,omitempty"`
		Headers map[string]string `json:"headers"`
	}{req.Credential, req.Env, req.IP, req.Origin, headers})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	if p.cfg.Secret != "" {
		hr.Header.Set(SignatureHeader, Sign([]byte(p.cfg.Secret), time.Now(), body))
	}
	p.mu.Lock()
	p.calls++
	p.mu.Unlock()
	resp, err := p.client.Do(hr)
	if err != nil {
		// The URL is the operator's; the error text names it, never the token.
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxWebhookAnswer+1))
	if err != nil {
		return nil, nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, refuse("the auth backend refused the credential"), nil
	default:
		return nil, nil, fmt.Errorf("the backend answered HTTP %d", resp.StatusCode)
	}
	if len(raw) > maxWebhookAnswer {
		return nil, nil, errors.New("the backend's answer is larger than 64 KiB")
	}
	var ans struct {
		Key       string         `json:"key"`
		Envs      []string       `json:"envs"`
		ExpiresAt int64          `json:"expires_at"` // unix seconds; 0: no expiry
		Meta      map[string]any `json:"meta"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, nil, fmt.Errorf("the backend's answer is not the expected JSON object: %w", err)
	}
	switch {
	case ans.Key == "":
		return nil, nil, errors.New("the backend admitted the connection without a key")
	case len(ans.Key) > MaxKeyBytes:
		return nil, nil, fmt.Errorf("the backend's key is longer than %d bytes", MaxKeyBytes)
	}
	id := &Identity{Key: ans.Key, Envs: ans.Envs, Claims: ans.Meta}
	if ans.Envs != nil && len(ans.Envs) == 0 {
		id.Envs = []string{} // an empty list allows no env, unlike an absent one
	}
	if ans.ExpiresAt > 0 {
		id.Expires = time.Unix(ans.ExpiresAt, 0)
		if !time.Now().Before(id.Expires) {
			return nil, &Error{Code: "token_expired", Message: "the credential has expired"}, nil
		}
	}
	return id, nil, nil
}

func (p *webhookProvider) store(key [32]byte, a webhookAnswer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.cache) >= maxWebhookCache {
		now := time.Now()
		for k, v := range p.cache {
			if !now.Before(v.until) {
				delete(p.cache, k)
			}
		}
		// Still full of live answers: forget some; they are asked again.
		for k := range p.cache {
			if len(p.cache) < maxWebhookCache*9/10 {
				break
			}
			delete(p.cache, k)
		}
	}
	p.cache[key] = a
}
