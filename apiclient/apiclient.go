// Package apiclient calls relay's server API (docs/api.md) from Go: publish
// to a token, read its presence and history, disconnect its sessions, read
// an instance's counters.
//
//	c := apiclient.New("http://relay.internal:8081", os.Getenv("RELAY_API_KEY"))
//	seq, err := c.Publish(ctx, apiclient.Message{Token: "user-42", Type: "materialReady", Data: json.RawMessage(`{"id":7}`)})
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client calls one relay's API. The zero value is not usable: use New.
type Client struct {
	base string
	key  string
	// HTTP is the client requests go through; http.DefaultClient by default.
	HTTP *http.Client
}

// New returns a client of the relay at base (scheme://host[:port], without
// /api/v1) that presents key.
func New(base, key string) *Client {
	return &Client{base: strings.TrimSuffix(base, "/"), key: key, HTTP: http.DefaultClient}
}

// Message is a message to publish.
type Message struct {
	Token string          `json:"token"`
	Type  string          `json:"type"`
	Data  json.RawMessage `json:"data,omitempty"`
	To    []string        `json:"to,omitempty"`
	ID    string          `json:"id,omitempty"`
}

// Error is a refusal by the API: Status is the HTTP status, Code the
// error code (the relay.error code when the routes refused a message,
// with Route and Ref).
type Error struct {
	Status  int    `json:"status,omitempty"`
	Code    string `json:"error"`
	Message string `json:"message"`
	Route   string `json:"route,omitempty"`
	Ref     string `json:"ref,omitempty"`
}

func (e *Error) Error() string {
	s := fmt.Sprintf("relay api: %d %s: %s", e.Status, e.Code, e.Message)
	if e.Route != "" {
		s += " (route " + e.Route + ")"
	}
	if e.Ref != "" {
		s += " [ref " + e.Ref + "]"
	}
	return s
}

// Result is what became of one published message: accepted with Seq, or
// refused with Err.
type Result struct {
	Seq       uint64
	Duplicate bool // an earlier message with the same id got Seq
	Dropped   bool // the route let nothing through
	Err       *Error
}

type published struct {
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	Dropped   bool   `json:"dropped"`
	Status    int    `json:"status"`
	Code      string `json:"error"`
	Message   string `json:"message"`
	Route     string `json:"route"`
	Ref       string `json:"ref"`
}

// Publish publishes m and returns the seq it got. A refusal is an *Error.
func (c *Client) Publish(ctx context.Context, m Message) (Result, error) {
	var p published
	if err := c.do(ctx, http.MethodPost, "/publish", nil, m, &p); err != nil {
		return Result{}, err
	}
	return Result{Seq: p.Seq, Duplicate: p.Duplicate, Dropped: p.Dropped}, nil
}

// PublishBatch publishes msgs in order, in one request; results[i] is
// msgs[i]'s. err is set only when the request as a whole failed.
func (c *Client) PublishBatch(ctx context.Context, msgs []Message) ([]Result, error) {
	var out struct {
		Results []published `json:"results"`
	}
	body := struct {
		Messages []Message `json:"messages"`
	}{msgs}
	if err := c.do(ctx, http.MethodPost, "/publish/batch", nil, body, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(msgs) {
		return nil, fmt.Errorf("relay api: %d results for %d messages", len(out.Results), len(msgs))
	}
	results := make([]Result, len(msgs))
	for i, p := range out.Results {
		results[i] = Result{Seq: p.Seq, Duplicate: p.Duplicate, Dropped: p.Dropped}
		if p.Code != "" {
			results[i].Err = &Error{Status: p.Status, Code: p.Code, Message: p.Message, Route: p.Route, Ref: p.Ref}
		}
	}
	return results, nil
}

// Presence returns the token's envs online.
func (c *Client) Presence(ctx context.Context, token string) ([]string, error) {
	var out struct {
		Envs []string `json:"envs"`
	}
	err := c.do(ctx, http.MethodGet, "/presence", url.Values{"token": {token}}, nil, &out)
	return out.Envs, err
}

// HistoryMessage is one retained message.
type HistoryMessage struct {
	Seq  uint64          `json:"seq"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data,omitempty"`
	From string          `json:"from"`
	To   []string        `json:"to,omitempty"`
	ID   string          `json:"id,omitempty"`
	TS   int64           `json:"ts"`
}

// History is a token's retained messages after a seq.
type History struct {
	Messages []HistoryMessage `json:"messages"`
	Last     uint64           `json:"last"`
	Complete bool             `json:"complete"` // nothing after since was evicted
	More     bool             `json:"more"`     // limit cut the list: ask again after the last seq
}

// History returns the token's messages with a seq above since (0: all
// retained), at most limit of them (0: the relay's api.max_history).
func (c *Client) History(ctx context.Context, token string, since uint64, limit int) (History, error) {
	q := url.Values{"token": {token}}
	if since > 0 {
		q.Set("since", strconv.FormatUint(since, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var h History
	err := c.do(ctx, http.MethodGet, "/history", q, nil, &h)
	return h, err
}

// Disconnect closes the token's sessions of env ("" every env) with code
// (0: the relay's default, 4506) and returns the envs that were online.
func (c *Client) Disconnect(ctx context.Context, token, env string, code int) ([]string, error) {
	body := map[string]any{"token": token}
	if env != "" {
		body["env"] = env
	}
	if code != 0 {
		body["code"] = code
	}
	var out struct {
		Envs []string `json:"envs"`
	}
	err := c.do(ctx, http.MethodPost, "/disconnect", nil, body, &out)
	return out.Envs, err
}

// Stats returns the counters of the instance that answers, as JSON fields.
func (c *Client) Stats(ctx context.Context) (map[string]any, error) {
	var out map[string]any
	err := c.do(ctx, http.MethodGet, "/stats", nil, nil, &out)
	return out, err
}

// maxAnswer bounds what the client reads of an answer.
const maxAnswer = 16 << 20

func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	u := c.base + "/api/v1" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("relay api: encoding the request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("relay api: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("relay api: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("relay api: %s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{}
		if json.Unmarshal(answer, e) != nil || e.Code == "" {
			e.Code, e.Message = "http_"+strconv.Itoa(resp.StatusCode), strings.TrimSpace(string(answer))
		}
		e.Status = resp.StatusCode
		return e
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("relay api: %s %s: the answer is not the expected JSON: %w", method, path, err)
	}
	return nil
}

// AsError returns err's *Error, if it is one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
