package handlers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// The webhook handler signs its requests and tells the endpoint which pair
// sent the message and who the sender is.
func TestWebhookSignsAndIdentifies(t *testing.T) {
	const secret = "webhook-secret-0123456789abcdef-0123"
	srv := newHook(t, answer(200, ""))
	h := build(t, webhookConfig(srv.URL)+"\nsecret: "+secret)
	m := msg("ping", `{"n":1}`)
	m.Claims = map[string]any{"role": "editor"}
	if _, err := h.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	body := srv.raw.Load().([]byte)
	sig := srv.hdr.Load().(http.Header).Values("X-Relay-Signature")
	if len(sig) != 1 {
		t.Fatalf("X-Relay-Signature = %v", sig)
	}
	ts, got, _ := strings.Cut(strings.TrimPrefix(sig[0], "t="), ",v1=")
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	if want := hex.EncodeToString(mac.Sum(nil)); got != want {
		t.Fatalf("signature %s does not verify (want v1=%s)", sig[0], want)
	}
	var req struct {
		Pair   string
		Claims map[string]any
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("relay-pair:tok-1"))
	if req.Pair != hex.EncodeToString(sum[:16]) || req.Claims["role"] != "editor" {
		t.Fatalf("pair %q claims %v", req.Pair, req.Claims)
	}
	if strings.Contains(string(body), "tok-1") {
		t.Fatal("the token was sent")
	}
	if _, err := tryBuild(webhookConfig(srv.URL)+"\nsecret: short", nil); err == nil || strings.Contains(err.Error(), "short") {
		t.Fatalf("a short secret: %v", err)
	}
}
