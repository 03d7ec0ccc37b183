package core

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
)

const hookSecret = "hook-secret-0123456789abcdef-0123456789"

// connectBackend is a connect webhook on loopback: it checks relay's
// signature and answers by the token it is asked about.
type connectBackend struct {
	t       *testing.T
	url     string
	mu      sync.Mutex
	calls   map[string]int // by token
	headers []http.Header
}

func startConnectBackend(t *testing.T) *connectBackend {
	t.Helper()
	b := &connectBackend{t: t, calls: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.url = "http://" + ln.Addr().String() + "/relay/connect"
	srv := &http.Server{Handler: http.HandlerFunc(b.serve)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

// verify checks X-Relay-Signature as a backend would.
func verifySignature(sig string, body []byte, secret string) bool {
	ts, mac, ok := strings.Cut(strings.TrimPrefix(sig, "t="), ",v1=")
	if !ok {
		return false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		return false
	}
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(ts + "."))
	h.Write(body)
	want := hex.EncodeToString(h.Sum(nil))
	return hmac.Equal([]byte(mac), []byte(want))
}

func (b *connectBackend) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if !verifySignature(r.Header.Get("X-Relay-Signature"), body, hookSecret) {
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	var q struct {
		Token, Env, IP, Origin string
		Headers                map[string]string
	}
	if err := json.Unmarshal(body, &q); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	b.calls[q.Token]++
	b.headers = append(b.headers, http.Header{"Forwarded": {strings.Join(mapKeys(q.Headers), ",")}, "Ua": {q.Headers["User-Agent"]}})
	b.mu.Unlock()
	switch {
	case strings.HasPrefix(q.Token, "ticket-"):
		// Two different tickets of one order pair by the key the backend
		// names; ticket-a is the H5 page's alone.
		envs := []string{q.Env}
		if q.Token == "ticket-a" {
			envs = []string{"h5"}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"key": "order-7", "envs": envs,
			"expires_at": time.Now().Add(time.Hour).Unix(), "meta": map[string]any{"user": "u-" + q.Token[7:], "ip": q.IP}})
	case q.Token == "deny":
		w.WriteHeader(http.StatusForbidden)
	case q.Token == "expired":
		_ = json.NewEncoder(w).Encode(map[string]any{"key": "k", "expires_at": time.Now().Add(-time.Minute).Unix()})
	case q.Token == "slow":
		<-r.Context().Done() // relay gives up first
	case q.Token == "no-key":
		_, _ = w.Write([]byte(`{"envs":["h5"]}`))
	default:
		w.WriteHeader(http.StatusInternalServerError)
	}
}

func (b *connectBackend) count(token string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[token]
}

func mapKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestWebhookAuth(t *testing.T) {
	b := startConnectBackend(t)
	r := startAuthRelay(t, func(c *config.Config) {
		c.Auth = config.Auth{Provider: config.AuthWebhook, Webhook: config.WebhookAuth{
			URL: b.url, Timeout: 300 * time.Millisecond, CacheTTL: time.Hour, Headers: []string{"User-Agent"}, Secret: hookSecret}}
	})
	r.srv.hub.SetPipeline(pipelineFrom(t, "routes: [{match: {type: who}, handlers: [{handler: test-claims}]}]"))
	r.secrets = append(r.secrets, "ticket-a", "ticket-b")
	hdr := http.Header{"User-Agent": {"miniprogram/8.0"}, "Cookie": {"session=private"}}

	t.Run("admit and pair by the backend's key", func(t *testing.T) {
		h5, _ := r.admit(t, tokenQuery("ticket-a", "h5"), hdr)
		mp, hello := r.admit(t, tokenQuery("ticket-b", "miniapp"), nil)
		if peers := hello["peers"].([]any); len(peers) != 1 || peers[0] != "h5" {
			t.Fatalf("peers %v: the two tickets did not pair", peers)
		}
		h5.readType("relay.presence")
		h5.send(`{"type":"who"}`)
		if data, _ := json.Marshal(mp.readType("who")["data"]); string(data) != `{"ip":"127.0.0.1","user":"u-a"}` {
			t.Fatalf("handler saw %s, want the backend's meta", data)
		}
		b.mu.Lock()
		first := b.headers[0]
		b.mu.Unlock()
		if first.Get("Forwarded") != "User-Agent" || first.Get("Ua") != "miniprogram/8.0" {
			t.Fatalf("backend got headers %v, want only the allow-listed User-Agent", first)
		}
	})
	t.Run("the backend's envs bind the ticket", func(t *testing.T) {
		// The backend allows ticket-a for h5 only.
		if status, code := r.refusal(t, tokenQuery("ticket-a", "miniapp"), nil); status != http.StatusForbidden || code != "env_not_allowed" {
			t.Fatalf("%d %s, want 403 env_not_allowed", status, code)
		}
	})
	t.Run("cache", func(t *testing.T) {
		before := b.count("ticket-a")
		c, _ := r.admit(t, tokenQuery("ticket-a", "h5"), nil)
		c.conn.Close()
		if n := b.count("ticket-a"); n != before {
			t.Fatalf("%d calls for ticket-a after a cached admit, want %d", n, before)
		}
		for range 2 {
			if status, _ := r.refusal(t, tokenQuery("deny", "h5"), nil); status != http.StatusUnauthorized {
				t.Fatalf("deny: %d", status)
			}
		}
		if n := b.count("deny"); n != 1 {
			t.Fatalf("%d calls for a refused token, want 1 (refusals are cached too)", n)
		}
	})
	for _, tc := range []struct{ token, code string }{
		{"deny", "unauthorized"},
		{"expired", "token_expired"},
		{"slow", "unauthorized"},
		{"no-key", "unauthorized"},
		{"broken", "unauthorized"},
	} {
		t.Run("refuse "+tc.token, func(t *testing.T) {
			if status, code := r.refusal(t, tokenQuery(tc.token, "h5"), nil); status != http.StatusUnauthorized || code != tc.code {
				t.Fatalf("%d %s, want 401 %s", status, code, tc.code)
			}
		})
	}
	t.Run("failures are not cached", func(t *testing.T) {
		before := b.count("broken")
		_, _ = r.refusal(t, tokenQuery("broken", "h5"), nil)
		if n := b.count("broken"); n != before+1 {
			t.Fatalf("%d calls, want %d: a failing backend must be asked again", n, before+1)
		}
	})
	if !strings.Contains(r.log.String(), "connect webhook failed") {
		t.Fatalf("backend failures were not logged:\n%s", r.log.String())
	}
}

func TestWeChatAuth(t *testing.T) {
	r := startAuthRelay(t, func(c *config.Config) {
		c.Auth = config.Auth{Provider: config.AuthWeChat, WeChat: config.WeChatAuth{AppIDs: []string{"wxA"}, BindToken: true, BindTTL: time.Hour}}
	})
	r.srv.hub.SetPipeline(pipelineFrom(t, "routes: [{match: {type: who}, handlers: [{handler: test-claims}]}]"))
	wx := func(appid, openid string) http.Header {
		return http.Header{"X-WX-APPID": {appid}, "X-WX-OPENID": {openid}}
	}
	mp, _ := r.admit(t, tokenQuery("room-1", "miniapp"), wx("wxA", "o-alice"))
	shared := http.Header{"X-WX-APPID": {"wxOther"}, "X-WX-OPENID": {"o-x"}, "X-WX-FROM-APPID": {"wxA"},
		"X-WX-FROM-OPENID": {"o-alice"}, "X-WX-FROM-UNIONID": {"u-alice"}}
	mp2, hello := r.admit(t, tokenQuery("room-1", "pc"), shared)
	if peers := hello["peers"].([]any); len(peers) != 1 {
		t.Fatalf("peers %v", peers)
	}
	mp.readType("relay.presence")
	mp2.send(`{"type":"who"}`)
	if data, _ := json.Marshal(mp.readType("who")["data"]); string(data) != `{"appid":"wxA","openid":"o-alice","unionid":"u-alice"}` {
		t.Fatalf("handler saw %s: the X-WX-FROM-* identity must win", data)
	}
	for _, tc := range []struct {
		name string
		h    http.Header
		q    string
	}{
		{"no identity headers", nil, tokenQuery("room-2", "h5")},
		{"no appid", http.Header{"X-WX-OPENID": {"o-bob"}}, tokenQuery("room-2", "h5")},
		{"wrong AppID", wx("wxEvil", "o-bob"), tokenQuery("room-2", "h5")},
		{"token bound to another openid", wx("wxA", "o-mallory"), tokenQuery("room-1", "h5")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, code := r.refusal(t, tc.q, tc.h); status != http.StatusUnauthorized || code != "unauthorized" {
				t.Fatalf("%d %s, want 401 unauthorized", status, code)
			}
		})
	}
	c, _ := r.admit(t, tokenQuery("room-2", "h5"), wx("wxA", "o-bob")) // a new token binds to its first user
	c.conn.Close()

	// The token may come as the first frame; the gateway's headers of the
	// upgrade request still count.
	r.testRelay.t = t
	ff := r.dial("env=h5", wx("wxA", "o-carol"))
	ff.send(`{"type":"relay.auth","data":{"token":"room-3"}}`)
	if hello := ff.readJSON(); hello["type"] != "relay.hello" {
		t.Fatalf("first-frame token with gateway headers: %v", hello)
	}
	ff = r.dial("env=h5", wx("wxA", "o-mallory"))
	ff.send(`{"type":"relay.auth","data":{"token":"room-3"}}`)
	if e := ff.readJSON(); e["type"] != "relay.error" {
		t.Fatalf("a token bound to carol, from mallory: %v", e)
	}
	ff.expectClose(CloseUnauthorized)
}
