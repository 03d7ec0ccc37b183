package handlers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pairrelay/relay/auth"
	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

func init() {
	core.RegisterHandler(core.HandlerSpec{
		Name:    "webhook",
		Summary: "POSTs each message to an HTTP endpoint, whose answer passes, replaces, fans out, drops or rejects it.",
		New: func() core.Handler {
			return &Webhook{Timeout: 3 * time.Second, MaxResponseBytes: 1 << 20, MaxMessages: 100}
		},
	})
}

// Webhook asks an HTTP endpoint what to do with each message. The request
// and what each answer does are described in URL's doc tag, from which
// docs/handlers/webhook.md is generated; TestWebhookAnswers covers each case.
// With a secret the request is signed (X-Relay-Signature, as the connect
// webhook's).
type Webhook struct {
	URL              string            `yaml:"url" doc:"Endpoint (http or https) that receives each message as a POST with a JSON body {type, data, from, to, id, ts, pair, claims}, with data, to, id and claims only when the message has them: pair is 32 hex digits of the SHA-256 of relay-pair: and the sender's room (its token; with auth, auth: and its pairing key), the same for both sides of a pair; claims is the sender's auth identity. The answer decides what happens to the message: a 2xx with an empty body passes it on unchanged; 204 drops it; a 2xx with a JSON object {type?, data?, to?} replaces the fields the object names (any other key is a failure); a 2xx with a JSON array of such objects fans it out, one message per item, each keeping the sender and id of the original ([] drops it); a 4xx rejects it, and the sender's relay.error carries the code and message of a body {code, message} (code rejected when the body has no valid code, and the body's text as message when it is not such JSON); a 3xx or 5xx, no answer within timeout, or a body larger than max_response_bytes or not JSON is a failure, which the route's on_error decides about. Required."`
	Headers          map[string]string `yaml:"headers" doc:"Headers sent with each request, e.g. Authorization: Bearer ${WEBHOOK_SECRET}."`
	Timeout          time.Duration     `yaml:"timeout" doc:"Longest one attempt may take (the route's timeout bounds all attempts together)." default:"3s"`
	Retries          int               `yaml:"retries" doc:"Further attempts after a network error, a timeout or a 5xx answer, with a short backoff (100ms, 200ms, 400ms…, at most 10 retries), while the route's timeout allows. The receiver may then see a message twice: use its id." default:"0"`
	MaxResponseBytes int64             `yaml:"max_response_bytes" doc:"Largest answer body read; a larger one is a failure (relay stops reading there). Each message of the answer must also meet limits.max_frame_bytes, or the webhook has failed." default:"1048576"`
	MaxMessages      int               `yaml:"max_messages" doc:"Most messages an answer may fan out to; more is a failure." default:"100"`
	Secret           string            `yaml:"secret" doc:"Key of the X-Relay-Signature header (t=UNIX_SECONDS,v1=hex HMAC-SHA256 of the timestamp, a dot and the body) that lets the endpoint check a request comes from relay; at least 32 bytes. Write ${VAR}. Empty: requests are not signed. See docs/auth.md."`

	client *http.Client
	header http.Header
	host   string
}

const (
	webhookBackoff    = 100 * time.Millisecond
	webhookMaxBackoff = 2 * time.Second
	maxBodyInError    = 200 // bytes of a body quoted in an error
)

// Provision checks the endpoint and builds the HTTP client.
func (w *Webhook) Provision(_ context.Context, env core.ProvisionEnv) error {
	if w.URL == "" {
		return errors.New("url: is required: the endpoint that receives the messages")
	}
	u, err := url.Parse(w.URL)
	if err != nil {
		return fmt.Errorf("url: %v", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url: must be an http:// or https:// address, got %q", w.URL)
	}
	switch {
	case w.Timeout <= 0:
		return fmt.Errorf("timeout: must be more than 0, got %s", w.Timeout)
	case w.Retries < 0 || w.Retries > 10:
		return fmt.Errorf("retries: must be between 0 and 10, got %d", w.Retries)
	case w.MaxResponseBytes < 1:
		return fmt.Errorf("max_response_bytes: must be 1 or more, got %d", w.MaxResponseBytes)
	case w.MaxMessages < 1:
		return fmt.Errorf("max_messages: must be 1 or more, got %d", w.MaxMessages)
	case w.Secret != "" && len(w.Secret) < config.MinJWTSecretBytes:
		// The value is never quoted: it may come from ${VAR}.
		return fmt.Errorf("secret: must be at least %d bytes, got %d", config.MinJWTSecretBytes, len(w.Secret))
	}
	w.header = http.Header{}
	for _, k := range sortedKeys(w.Headers) {
		if !validHeaderName(k) {
			return fmt.Errorf("headers: %q is not a valid header name", k)
		}
		if strings.ContainsAny(w.Headers[k], "\r\n\x00") {
			return fmt.Errorf("headers: %s: value must be a single line", k)
		}
		if http.CanonicalHeaderKey(k) == "Host" {
			w.host = w.Headers[k]
			continue
		}
		w.header.Set(k, w.Headers[k])
	}
	if w.header.Get("Content-Type") == "" {
		w.header.Set("Content-Type", "application/json")
	}
	if w.header.Get("User-Agent") == "" {
		w.header.Set("User-Agent", "relay-webhook")
	}
	w.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                  http.ProxyFromEnvironment,
			DialContext:            (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:      true,
			MaxIdleConns:           100,
			MaxIdleConnsPerHost:    64,
			MaxConnsPerHost:        256,
			IdleConnTimeout:        90 * time.Second,
			TLSHandshakeTimeout:    5 * time.Second,
			ExpectContinueTimeout:  time.Second,
			MaxResponseHeaderBytes: 64 << 10,
		},
		// A redirected POST would become a GET: a redirect is an answer of its own (a failure).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if env.Transport != nil {
		w.client.Transport = env.Transport
	}
	return nil
}

var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func validHeaderName(k string) bool { return headerName.MatchString(k) }

// Close drops the client's idle connections.
func (w *Webhook) Close() error {
	if w.client != nil {
		w.client.CloseIdleConnections()
	}
	return nil
}

// webhookRequest is the body POSTed for a message.
type webhookRequest struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data,omitempty"`
	From string          `json:"from"`
	To   *[]string       `json:"to,omitempty"` // absent: every other env; [] stays []
	ID   string          `json:"id,omitempty"`
	TS   int64           `json:"ts"`
	Pair string          `json:"pair,omitempty"`
	// Claims is the sender's identity from auth.
	Claims map[string]any `json:"claims,omitempty"`
}

// pairID names a room for a backend without revealing its token: both
// sides of a pair send the same one.
func pairID(token string) string {
	if token == "" {
		return ""
	}
	// Prefixed, so that it differs from the Redis key tag of the token.
	sum := sha256.Sum256([]byte("relay-pair:" + token))
	return hex.EncodeToString(sum[:16])
}

// webhookReply is one message of an answer; absent fields keep the original's.
type webhookReply struct {
	Type *string         `json:"type"`
	Data json.RawMessage `json:"data"`
	To   *[]string       `json:"to"`
}

// webhookStatus is an answer that ended an attempt without a result.
type webhookStatus struct {
	code int
}

// Error leaves the body out: failures reach the sender, and an error page
// may tell more about the endpoint than the sender should know.
func (e *webhookStatus) Error() string {
	return fmt.Sprintf("answered HTTP %d", e.code)
}

// Handle POSTs the message and acts on the answer.
func (w *Webhook) Handle(ctx context.Context, m *core.Message) ([]*core.Message, error) {
	req := webhookRequest{Type: m.Type, Data: m.Data, From: m.From, ID: m.ID, TS: m.TS, Pair: pairID(m.Token), Claims: m.Claims}
	if m.To != nil {
		req.To = &m.To
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var status int
	var answer []byte
	attempts := 0
retry:
	for {
		attempts++
		status, answer, err = w.post(ctx, body)
		retryable := err != nil && !errors.Is(err, errTooLarge) || status >= 500
		if !retryable || attempts > w.Retries || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(min(webhookBackoff<<(attempts-1), webhookMaxBackoff))
		select {
		case <-ctx.Done():
			t.Stop()
			break retry
		case <-t.C:
		}
	}
	switch {
	case err != nil:
	case status == http.StatusNoContent:
		return nil, nil
	case status >= 200 && status < 300:
		return w.replies(m, answer)
	case status >= 400 && status < 500:
		return nil, rejection(status, answer)
	default:
		err = &webhookStatus{code: status}
	}
	if attempts > 1 {
		return nil, fmt.Errorf("webhook: %d attempts, the last: %w", attempts, err)
	}
	return nil, fmt.Errorf("webhook: %w", err)
}

var errTooLarge = errors.New("answer too large")

// post makes one attempt; a network error, a timeout and a body too large
// are errors, any status is a status.
func (w *Webhook) post(parent context.Context, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(parent, w.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header = w.header.Clone()
	if w.Secret != "" {
		// Signed per attempt, so that a retry carries a fresh timestamp.
		req.Header.Set(auth.SignatureHeader, auth.Sign([]byte(w.Secret), time.Now(), body))
	}
	if w.host != "" {
		req.Host = w.host
	}
	resp, err := w.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL, which may hold a secret
		}
		return 0, nil, w.attemptError(parent, ctx, "no answer", err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, w.MaxResponseBytes+1))
	if err != nil {
		return 0, nil, w.attemptError(parent, ctx, "answer not read", err)
	}
	if int64(len(answer)) > w.MaxResponseBytes {
		return 0, nil, fmt.Errorf("%w: more than %d bytes (HTTP %d)", errTooLarge, w.MaxResponseBytes, resp.StatusCode)
	}
	return resp.StatusCode, answer, nil
}

// attemptError words a failed attempt, telling timeouts apart.
func (w *Webhook) attemptError(parent, ctx context.Context, what string, err error) error {
	switch {
	case parent.Err() != nil:
		return fmt.Errorf("%s before the route's timeout", what)
	case ctx.Err() != nil:
		return fmt.Errorf("%s within the timeout (%s)", what, w.Timeout)
	}
	return err
}

// replies turns a 2xx answer into the messages that go on.
func (w *Webhook) replies(m *core.Message, answer []byte) ([]*core.Message, error) {
	answer = bytes.TrimSpace(answer)
	if len(answer) == 0 {
		return []*core.Message{m}, nil
	}
	var items []webhookReply
	switch answer[0] {
	case '{':
		var one webhookReply
		if err := strictJSON(answer, &one); err != nil {
			return nil, fmt.Errorf("webhook answer: %v", err)
		}
		items = []webhookReply{one}
	case '[':
		if err := strictJSON(answer, &items); err != nil {
			return nil, fmt.Errorf("webhook answer: %v", err)
		}
		if len(items) > w.MaxMessages {
			return nil, fmt.Errorf("webhook answer: %d messages, more than max_messages (%d)", len(items), w.MaxMessages)
		}
	default:
		return nil, fmt.Errorf("webhook answer: want empty, a JSON object or an array, got %s", snippet(answer))
	}
	out := make([]*core.Message, len(items))
	for i, it := range items {
		msg, err := apply(m, it)
		if err != nil {
			if len(items) > 1 || answer[0] == '[' {
				err = fmt.Errorf("item %d: %v", i, err)
			}
			return nil, fmt.Errorf("webhook answer: %v", err)
		}
		out[i] = msg
	}
	return out, nil
}

// apply makes a copy of m with the fields an answer names.
func apply(m *core.Message, r webhookReply) (*core.Message, error) {
	c := *m
	if r.Type != nil {
		if *r.Type == "" || strings.HasPrefix(*r.Type, "relay.") {
			return nil, fmt.Errorf("type %q: want a non-empty type not starting with relay.", *r.Type)
		}
		c.Type = *r.Type
	}
	if r.Data != nil {
		c.Data = bytes.Clone(r.Data)
	}
	if r.To != nil {
		for _, env := range *r.To {
			if !config.ValidEnvName(env) {
				return nil, fmt.Errorf("to: %q is not an env name ([a-z0-9_-]{1,32})", env)
			}
		}
		c.To = *r.To
	}
	return &c, nil
}

func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("text after the JSON value")
	}
	return nil
}

var codeRE = regexp.MustCompile(`^[a-z][a-z0-9_.]{0,63}$`)

// rejection turns a 4xx answer into the sender's relay.error.
func rejection(status int, body []byte) error {
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && (e.Code != "" || e.Message != "") {
		code := core.ErrRejected
		if codeRE.MatchString(e.Code) {
			code = e.Code
		}
		msg := e.Message
		if msg == "" {
			msg = fmt.Sprintf("refused by the webhook (HTTP %d)", status)
		}
		return core.Reject(code, "%s", truncate(msg, 500))
	}
	if t := snippet(body); t != "" {
		return core.Reject(core.ErrRejected, "%s", t)
	}
	return core.Reject(core.ErrRejected, "refused by the webhook (HTTP %d)", status)
}

// snippet is the start of a body, as one line of text, for messages.
func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	return truncate(s, maxBodyInError)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
