package core

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// TestPlainGETProbes: the plain GETs a platform's health checker sends (WeChat
// Cloud Hosting probes / and the socket path) get 200 and a tiny body, are not
// counted as refused upgrades and log nothing; a WebSocket attempt that lost
// its Upgrade header on the way still gets 426.
func TestPlainGETProbes(t *testing.T) {
	var logBuf lockedBuffer
	r := startRelayLog(t, slog.New(slog.NewJSONHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	r.t = t
	get := func(path string, header http.Header) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, r.http+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, path := range []string{"/", "/socket", "/socket?token=t&env=h5", "/socket?v=1"} {
		status, body := get(path, nil)
		if status != http.StatusOK || body != `{"status":"ok"}` {
			t.Errorf("GET %s = %d %q, want 200 {\"status\":\"ok\"}", path, status, body)
		}
	}
	if refused := scrape(t, r, `relay_upgrades_refused_total{reason="upgrade_required"}`); refused != "" {
		t.Errorf("probes counted as refused upgrades: %s", refused)
	}

	// What a proxy that drops hop-by-hop headers forwards of a real attempt.
	stripped := http.Header{"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}}
	for _, h := range []http.Header{stripped, {"Upgrade": {"h2c"}}, {"Connection": {"Upgrade"}}} {
		status, body := get("/socket?token=t&env=h5", h)
		if status != http.StatusUpgradeRequired || !strings.Contains(body, `"upgrade_required"`) {
			t.Errorf("GET /socket with %v = %d %q, want 426 upgrade_required", h, status, body)
		}
	}
	if refused := scrape(t, r, `relay_upgrades_refused_total{reason="upgrade_required"}`); refused != "3" {
		t.Errorf("refused upgrades = %q, want 3", refused)
	}
	for _, e := range logBuf.entries(t) {
		t.Errorf("a probe was logged: %v", e)
	}
	r.dial("token=t&env=h5") // the socket path still upgrades
}

// scrape returns the value of series in r's /metrics, "" when absent.
func scrape(t *testing.T, r *testRelay, series string) string {
	t.Helper()
	resp, err := http.Get(r.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(text), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}
