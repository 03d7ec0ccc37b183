package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pairrelay/relay/core"
)

// hook is a real HTTP endpoint on 127.0.0.1 that answers with reply and
// records what it received.
type hook struct {
	*httptest.Server
	calls atomic.Int64
	last  atomic.Value // webhookRequest
	raw   atomic.Value // []byte, the last request body
	hdr   atomic.Value // http.Header
}

func newHook(t *testing.T, reply func(n int64, w http.ResponseWriter, r *http.Request)) *hook {
	t.Helper()
	h := &hook{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := h.calls.Add(1)
		var req webhookRequest
		body, _ := io.ReadAll(r.Body)
		h.raw.Store(body)
		if err := json.Unmarshal(body, &req); err == nil {
			h.last.Store(req)
		}
		h.hdr.Store(r.Header.Clone())
		reply(n, w, r)
	}))
	t.Cleanup(h.Close)
	return h
}

func answer(status int, body string) func(int64, http.ResponseWriter, *http.Request) {
	return func(_ int64, w http.ResponseWriter, _ *http.Request) {
		if body != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func webhookConfig(url string, extra ...string) string {
	return "handler: webhook\nurl: " + url + "\n" + strings.Join(extra, "\n")
}

func TestWebhookAnswers(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		want   string   // outcome
		check  []string // per message out: type|data|to
	}{
		{"200 empty passes unchanged", 200, "", "pass", []string{`addMaterial|{"id":1}|[]`}},
		{"200 whitespace passes unchanged", 200, " \n", "pass", []string{`addMaterial|{"id":1}|[]`}},
		{"replace all", 200, `{"type":"material.added","data":{"id":1,"ok":true},"to":["miniapp"]}`, "pass",
			[]string{`material.added|{"id":1,"ok":true}|[miniapp]`}},
		{"replace data only", 200, `{"data":[1,2]}`, "pass", []string{`addMaterial|[1,2]|[]`}},
		{"replace data with null", 200, `{"data":null}`, "pass", []string{`addMaterial|null|[]`}},
		{"empty object keeps all", 201, `{}`, "pass", []string{`addMaterial|{"id":1}|[]`}},
		{"fan-out", 200, `[{"type":"a"},{"type":"b","data":2,"to":["pc"]}]`, "fanout",
			[]string{`a|{"id":1}|[]`, `b|2|[pc]`}},
		{"empty array drops", 200, `[]`, "drop", nil},
		{"204 drops", 204, "", "drop", nil},
		{"400 with code", 400, `{"code":"not_allowed","message":"materials are closed"}`, "reject:not_allowed", nil},
		{"403 without code", 403, `{"message":"no"}`, "reject:rejected", nil},
		{"422 with a bad code", 422, `{"code":"Bad Code!","message":"m"}`, "reject:rejected", nil},
		{"409 with text", 409, "conflict: already added", "reject:rejected", nil},
		{"404 empty", 404, "", "reject:rejected", nil},
		{"500", 500, `{"code":"oops"}`, "fail", nil},
		{"503", 503, "", "fail", nil},
		{"302", 302, "", "fail", nil},
		{"not JSON", 200, "OK", "fail", nil},
		{"unknown field", 200, `{"typ":"x"}`, "fail", nil},
		{"reserved type", 200, `{"type":"relay.ack"}`, "fail", nil},
		{"bad env in to", 200, `{"to":["Mini App"]}`, "fail", nil},
		{"two values", 200, `{} {}`, "fail", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newHook(t, answer(tc.status, tc.body))
			h := build(t, webhookConfig(srv.URL+"/hook", "headers:\n  Authorization: Bearer s3cret\n  X-Relay: test"))
			m := msg("addMaterial", `{"id":1}`)
			out, err := h.Handle(context.Background(), m)
			if got := outcome(out, err); got != tc.want {
				t.Fatalf("outcome = %s (err %v), want %s", got, err, tc.want)
			}
			if len(out) != len(tc.check) {
				t.Fatalf("%d messages, want %d", len(out), len(tc.check))
			}
			for i, o := range out {
				to := "[" + strings.Join(o.To, " ") + "]"
				if got := o.Type + "|" + string(o.Data) + "|" + to; got != tc.check[i] {
					t.Errorf("message %d = %s, want %s", i, got, tc.check[i])
				}
				if o.From != "h5" || o.ID != "c-1" || o.Token != "tok-1" || o.TS != m.TS {
					t.Errorf("message %d lost the original's sender: %+v", i, o)
				}
			}
			if tc.want == "pass" && tc.body == "" && out[0] != m {
				t.Errorf("an empty answer should pass the same message")
			}
			if string(m.Data) != `{"id":1}` || m.Type != "addMaterial" {
				t.Errorf("the original message was changed: %s %s", m.Type, m.Data)
			}
			req := srv.last.Load().(webhookRequest)
			if req.Type != "addMaterial" || string(req.Data) != `{"id":1}` || req.From != "h5" || req.ID != "c-1" || req.TS != m.TS || req.To != nil {
				t.Errorf("webhook got %+v", req)
			}
			hdr := srv.hdr.Load().(http.Header)
			if hdr.Get("Authorization") != "Bearer s3cret" || hdr.Get("X-Relay") != "test" || hdr.Get("Content-Type") != "application/json" {
				t.Errorf("headers = %v", hdr)
			}
		})
	}
}

func TestWebhookRejectionText(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"code":"not_allowed","message":"materials are closed"}`, "not_allowed: materials are closed"},
		{`{"code":"quota"}`, "quota: refused by the webhook (HTTP 400)"},
		{"line one\nline two", "rejected: line one line two"},
		{strings.Repeat("é", 300), "rejected: " + strings.Repeat("é", 100) + "…"},
		{"", "rejected: refused by the webhook (HTTP 400)"},
	} {
		srv := newHook(t, answer(400, tc.body))
		h := build(t, webhookConfig(srv.URL))
		_, err := h.Handle(context.Background(), msg("x", ""))
		if err == nil || err.Error() != tc.want {
			t.Errorf("body %.20q: error = %v, want %s", tc.body, err, tc.want)
		}
	}
}

func TestWebhookRequestBody(t *testing.T) {
	srv := newHook(t, answer(200, ""))
	h := build(t, webhookConfig(srv.URL))
	m := msg("ping", "") // no data
	m.ID = ""
	if _, err := h.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(srv.raw.Load().([]byte), &got); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if fmt.Sprint(keys) != "[from pair ts type]" {
		t.Errorf("body keys = %v, want [from pair ts type] for a message without data, to, id and claims", keys)
	}
	if _, ok := got["token"]; ok {
		t.Fatal("the token was sent")
	}
	m.To = []string{}
	if _, err := h.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if raw := string(srv.raw.Load().([]byte)); !strings.Contains(raw, `"to":[]`) {
		t.Errorf("an empty to was left out: %s", raw)
	}
}

func TestWebhookTimeoutIsAFailure(t *testing.T) {
	srv := newHook(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	h := build(t, webhookConfig(srv.URL, "timeout: 200ms"))
	start := time.Now()
	_, err := h.Handle(context.Background(), msg("x", ""))
	took := time.Since(start)
	if err == nil || rejectCode(err) != "" {
		t.Fatalf("err = %v, want a failure (not a rejection)", err)
	}
	if !strings.Contains(err.Error(), "no answer within the timeout (200ms)") {
		t.Errorf("err = %v", err)
	}
	if took > 2*time.Second {
		t.Errorf("took %s for a 200ms timeout", took)
	}
}

func TestWebhookHonoursTheRouteDeadline(t *testing.T) {
	srv := newHook(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	h := build(t, webhookConfig(srv.URL, "timeout: 3s", "retries: 3"))
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := h.Handle(ctx, msg("x", ""))
	if err == nil || rejectCode(err) != "" {
		t.Fatalf("err = %v, want a failure", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s with a 150ms deadline", took)
	}
	if n := srv.calls.Load(); n != 1 {
		t.Errorf("%d attempts, want no retry past the deadline", n)
	}
}

func TestWebhook5xx(t *testing.T) {
	flaky := func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "internal stack trace")
			return
		}
		_, _ = io.WriteString(w, `{"type":"ok"}`)
	}
	t.Run("no retries: failure", func(t *testing.T) {
		srv := newHook(t, flaky)
		h := build(t, webhookConfig(srv.URL))
		_, err := h.Handle(context.Background(), msg("x", ""))
		if err == nil || rejectCode(err) != "" || err.Error() != "webhook: answered HTTP 503" {
			t.Fatalf("err = %v, want the failure webhook: answered HTTP 503", err)
		}
	})
	t.Run("retried: second attempt succeeds", func(t *testing.T) {
		srv := newHook(t, flaky)
		h := build(t, webhookConfig(srv.URL, "retries: 2"))
		out, err := h.Handle(context.Background(), msg("x", ""))
		if err != nil || len(out) != 1 || out[0].Type != "ok" {
			t.Fatalf("out %v, err %v", out, err)
		}
		if n := srv.calls.Load(); n != 2 {
			t.Errorf("%d attempts, want 2", n)
		}
	})
	t.Run("retries run out", func(t *testing.T) {
		srv := newHook(t, answer(502, ""))
		h := build(t, webhookConfig(srv.URL, "retries: 2"))
		_, err := h.Handle(context.Background(), msg("x", ""))
		if err == nil || err.Error() != "webhook: 3 attempts, the last: answered HTTP 502" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("4xx is not retried", func(t *testing.T) {
		srv := newHook(t, answer(429, `{"code":"slow_down","message":"later"}`))
		h := build(t, webhookConfig(srv.URL, "retries: 2"))
		_, err := h.Handle(context.Background(), msg("x", ""))
		if rejectCode(err) != "slow_down" || srv.calls.Load() != 1 {
			t.Fatalf("err = %v after %d calls", err, srv.calls.Load())
		}
	})
}

func TestWebhookOversizedAnswer(t *testing.T) {
	big := `{"data":"` + strings.Repeat("x", 1<<20) + `"}` // just over the default 1 MiB
	srv := newHook(t, answer(200, big))
	h := build(t, webhookConfig(srv.URL, "retries: 2"))
	_, err := h.Handle(context.Background(), msg("x", ""))
	if err == nil || rejectCode(err) != "" || !strings.Contains(err.Error(), "answer too large: more than 1048576 bytes") {
		t.Fatalf("err = %v, want a failure for the size", err)
	}
	if n := srv.calls.Load(); n != 1 {
		t.Errorf("%d attempts: a too large answer is not worth retrying", n)
	}
	small := newHook(t, answer(200, `{"data":"`+strings.Repeat("x", 100)+`"}`))
	h = build(t, webhookConfig(small.URL, "max_response_bytes: 64"))
	if _, err := h.Handle(context.Background(), msg("x", "")); err == nil || !strings.Contains(err.Error(), "more than 64 bytes") {
		t.Fatalf("err = %v", err)
	}
}

func TestWebhookTooManyMessages(t *testing.T) {
	srv := newHook(t, answer(200, "[{},{},{}]"))
	h := build(t, webhookConfig(srv.URL, "max_messages: 2"))
	if _, err := h.Handle(context.Background(), msg("x", "")); err == nil || !strings.Contains(err.Error(), "3 messages, more than max_messages (2)") {
		t.Fatalf("err = %v", err)
	}
}

func TestWebhookUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	h := build(t, webhookConfig("http://"+addr+"/hook?key=s3cret", "retries: 1"))
	_, err = h.Handle(context.Background(), msg("x", ""))
	if err == nil || rejectCode(err) != "" {
		t.Fatalf("err = %v, want a failure", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("the error shows the URL: %v", err)
	}
	if !strings.Contains(err.Error(), "2 attempts") {
		t.Errorf("err = %v, want 2 attempts", err)
	}
}

// TestWebhookConcurrent sends from many goroutines through one client.
func TestWebhookConcurrent(t *testing.T) {
	srv := newHook(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"data":{"seen":true}}`)
	})
	h := build(t, webhookConfig(srv.URL))
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		go func() {
			var err error
			for i := 0; i < 20 && err == nil; i++ {
				var out []*core.Message
				out, err = h.Handle(context.Background(), msg("x", `{}`))
				if err == nil && string(out[0].Data) != `{"seen":true}` {
					err = fmt.Errorf("data %s", out[0].Data)
				}
			}
			errs <- err
		}()
	}
	for g := 0; g < 16; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestWebhookDocsDescribeTheAnswers keeps the answer format, which endpoint
// authors need and TestWebhookAnswers pins down, in the generated page.
func TestWebhookDocsDescribeTheAnswers(t *testing.T) {
	page, err := os.ReadFile("../docs/handlers/webhook.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, answer := range []string{
		"a 2xx with an empty body passes it on unchanged",
		"204 drops it",
		"a 2xx with a JSON object {type?, data?, to?} replaces the fields the object names",
		"a 2xx with a JSON array of such objects fans it out",
		"a 4xx rejects it, and the sender's relay.error carries the code and message of a body {code, message}",
		"a 3xx or 5xx",
	} {
		if !strings.Contains(string(page), answer) {
			t.Errorf("docs/handlers/webhook.md does not say %q", answer)
		}
	}
}
