package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pairrelay/relay/api"
	"github.com/pairrelay/relay/apiclient"
	"github.com/pairrelay/relay/config"
)

// routes: orders are checked by a schema, everything else passes.
const routesYAML = `
routes:
  - name: orders
    match: {type: order}
    handlers:
      - handler: validate
        schema:
          type: object
          required: [qty]
          properties: {qty: {type: integer, minimum: 1}}
`

func TestPublishReachesThePairWithSeq(t *testing.T) {
	r := startRelay(t, routesYAML, nil)
	h5 := dial(t, r.ws, "token=pair-1&env=h5")
	mini := dial(t, r.ws, "token=pair-1&env=miniapp")
	other := dial(t, r.ws, "token=pair-2&env=h5")
	ctx := context.Background()

	res, err := r.client.Publish(ctx, apiclient.Message{Token: "pair-1", Type: "materialReady", Data: json.RawMessage(`{"id":7}`), ID: "m-1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Seq == 0 || res.Duplicate || res.Dropped {
		t.Fatalf("publish: %+v, want a seq", res)
	}
	for _, c := range []*wsClient{h5, mini} {
		f := c.next()
		if f["type"] != "materialReady" || f["from"] != "server" || f["id"] != "m-1" ||
			uint64(f["seq"].(float64)) != res.Seq || fmt.Sprint(f["data"]) != "map[id:7]" {
			t.Fatalf("client got %v, want materialReady from server with seq %d", f, res.Seq)
		}
	}
	// A repeat of the id is not published again and names the first seq.
	again, err := r.client.Publish(ctx, apiclient.Message{Token: "pair-1", Type: "materialReady", Data: json.RawMessage(`{"id":7}`), ID: "m-1"})
	if err != nil || !again.Duplicate || again.Seq != res.Seq {
		t.Fatalf("repeat: %+v, %v; want duplicate of seq %d", again, err, res.Seq)
	}
	// to narrows the receivers; the route checks what it matches.
	to, err := r.client.Publish(ctx, apiclient.Message{Token: "pair-1", Type: "order", Data: json.RawMessage(`{"qty":2}`), To: []string{"miniapp"}})
	if err != nil || to.Seq != res.Seq+1 {
		t.Fatalf("publish to miniapp: %+v, %v; want seq %d", to, err, res.Seq+1)
	}
	if f := mini.next(); f["type"] != "order" || uint64(f["seq"].(float64)) != to.Seq {
		t.Fatalf("miniapp got %v", f)
	}
	// h5 was not addressed: the next thing it gets is the next message.
	last, err := r.client.Publish(ctx, apiclient.Message{Token: "pair-1", Type: "bye"})
	if err != nil {
		t.Fatal(err)
	}
	if f := h5.next(); f["type"] != "bye" || uint64(f["seq"].(float64)) != last.Seq {
		t.Fatalf("h5 got %v, want bye (the order was for miniapp only)", f)
	}
	// Another token hears nothing of it: its first frame is its own message.
	if _, err := r.client.Publish(ctx, apiclient.Message{Token: "pair-2", Type: "mine"}); err != nil {
		t.Fatal(err)
	}
	if f := other.next(); f["type"] != "mine" {
		t.Fatalf("pair-2 got %v, want only its own message", f)
	}

	// The history has what was published, in order, with to.
	hist, err := r.client.History(ctx, "pair-1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, m := range hist.Messages {
		types = append(types, m.Type)
	}
	if fmt.Sprint(types) != "[materialReady order bye]" || !hist.Complete || hist.More || hist.Last != last.Seq ||
		fmt.Sprint(hist.Messages[1].To) != "[miniapp]" || hist.Messages[0].From != "server" {
		t.Fatalf("history %+v", hist)
	}
	// since and limit bound it.
	page, err := r.client.History(ctx, "pair-1", res.Seq, 1)
	if err != nil || len(page.Messages) != 1 || page.Messages[0].Seq != to.Seq || !page.Complete || !page.More {
		t.Fatalf("history since %d limit 1: %+v, %v", res.Seq, page, err)
	}

	// Presence names both envs.
	envs, err := r.client.Presence(ctx, "pair-1")
	if err != nil || fmt.Sprint(envs) != "[h5 miniapp]" {
		t.Fatalf("presence %v, %v", envs, err)
	}
	if envs, err := r.client.Presence(ctx, "nobody"); err != nil || envs == nil || len(envs) != 0 {
		t.Fatalf("presence of an empty token: %v, %v; want []", envs, err)
	}
}

func TestRouteRejectionIsA4xxWithTheRoutesError(t *testing.T) {
	r := startRelay(t, routesYAML+"unmatched: reject\n", nil)
	h5 := dial(t, r.ws, "token=pair-1&env=h5")
	ctx := context.Background()

	_, err := r.client.Publish(ctx, apiclient.Message{Token: "pair-1", Type: "order", Data: json.RawMessage(`{"qty":0}`)})
	e, ok := apiclient.AsError(err)
	if !ok || e.Status != http.StatusUnprocessableEntity || e.Code != "invalid_message" || e.Route != "orders" ||
		e.Ref == "" || !strings.Contains(e.Message, "qty") {
		t.Fatalf("rejected order: %v; want 422 invalid_message from route orders with a ref", err)
	}
	// A type no route matches, with unmatched: reject.
	_, err = r.client.Publish(ctx, apiclient.Message{Token: "pair-1", Type: "stray"})
	if e, ok := apiclient.AsError(err); !ok || e.Status != http.StatusUnprocessableEntity || e.Code != "unknown_type" {
		t.Fatalf("unmatched type: %v; want 422 unknown_type", err)
	}
	// Nothing refused reached the client: the next frame is the good order.
	good, err := r.client.Publish(ctx, apiclient.Message{Token: "pair-1", Type: "order", Data: json.RawMessage(`{"qty":3}`)})
	if err != nil {
		t.Fatal(err)
	}
	if f := h5.next(); f["type"] != "order" || uint64(f["seq"].(float64)) != good.Seq {
		t.Fatalf("h5 got %v, want only the accepted order", f)
	}

	// A batch answers each message as /publish would, in order.
	results, err := r.client.PublishBatch(ctx, []apiclient.Message{
		{Token: "pair-1", Type: "order", Data: json.RawMessage(`{"qty":1}`)},
		{Token: "pair-1", Type: "order", Data: json.RawMessage(`{"qty":"x"}`)},
		{Token: "pair-1", Type: "relay.fake"},
		{Token: "pair-1", Type: "order", Data: json.RawMessage(`{"qty":2}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if results[0].Err != nil || results[0].Seq != good.Seq+1 || results[3].Err != nil || results[3].Seq != good.Seq+2 {
		t.Fatalf("batch accepted: %+v", results)
	}
	if e := results[1].Err; e == nil || e.Status != 422 || e.Route != "orders" {
		t.Fatalf("batch result 1: %+v, want 422 from orders", results[1])
	}
	if e := results[2].Err; e == nil || e.Status != 400 || e.Code != "reserved_type" {
		t.Fatalf("batch result 2: %+v, want 400 reserved_type", results[2])
	}
	for _, want := range []uint64{good.Seq + 1, good.Seq + 2} {
		if f := h5.next(); uint64(f["seq"].(float64)) != want {
			t.Fatalf("h5 got %v, want seq %d", f, want)
		}
	}
}

func TestDisconnectClosesWithTheGivenCode(t *testing.T) {
	r := startRelay(t, "", nil)
	h5 := dial(t, r.ws, "token=pair-1&env=h5")
	mini := dial(t, r.ws, "token=pair-1&env=miniapp")
	ctx := context.Background()

	envs, err := r.client.Disconnect(ctx, "pair-1", "miniapp", 4321)
	if err != nil || fmt.Sprint(envs) != "[miniapp]" {
		t.Fatalf("disconnect miniapp: %v, %v", envs, err)
	}
	if code := mini.closeCode(); code != 4321 {
		t.Fatalf("miniapp closed with %d, want 4321", code)
	}
	h5.waitPresence("miniapp", false)
	// Without env and code: every env, with 4506.
	if _, err := r.client.Disconnect(ctx, "pair-1", "", 0); err != nil {
		t.Fatal(err)
	}
	if code := h5.closeCode(); code != 4506 {
		t.Fatalf("h5 closed with %d, want 4506 (disconnected by the server)", code)
	}
	for _, code := range []int{999, 1001, 1011, 3000, 3999, 5000} {
		_, err := r.client.Disconnect(ctx, "pair-1", "", code)
		if e, ok := apiclient.AsError(err); !ok || e.Status != 400 || e.Code != api.ErrBadCode {
			t.Errorf("code %d: %v, want 400 bad_code", code, err)
		}
	}
}

func TestAPIKeys(t *testing.T) {
	r := startRelay(t, "", nil)
	for _, tc := range []struct {
		name, key string
		want      int
	}{
		{"no key", "", 401},
		{"wrong key", "test-api-key-0123456780", 401},
		{"a prefix of the key", testKey[:20], 401},
		{"the key", testKey, 200},
	} {
		status, body := call(t, http.MethodGet, r.base+"/api/v1/stats", tc.key, "")
		if status != tc.want {
			t.Errorf("%s: %d %v, want %d", tc.name, status, body, tc.want)
		}
		if status == 401 && body["error"] != "unauthorized" {
			t.Errorf("%s: body %v", tc.name, body)
		}
	}
	// A non-bearer scheme carrying the key is refused too.
	req, _ := http.NewRequest(http.MethodGet, r.base+"/api/v1/stats", nil)
	req.Header.Set("Authorization", "Basic "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("Basic scheme: %d, want 401 with WWW-Authenticate", resp.StatusCode)
	}

	// Without keys the API is off: /api/v1 is not served at all.
	cfg := config.Default()
	off := startRelayConfig(t, cfg, nil)
	for _, path := range []string{"/api/v1/stats", "/api/v1/openapi.json", "/api/v1/publish"} {
		req, _ := http.NewRequest(http.MethodGet, off.base+path, nil)
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("API off: GET %s = %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestStatsCountsConnections(t *testing.T) {
	r := startRelay(t, "", nil)
	dial(t, r.ws, "token=pair-1&env=h5")
	dial(t, r.ws, "token=pair-1&env=miniapp")
	dial(t, r.ws, "token=pair-2&env=h5")
	st, err := r.client.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st["connections"] != 3.0 || st["rooms"] != 2.0 || fmt.Sprint(st["envs"]) != "map[h5:2 miniapp:1]" || st["backplane"] != "memory" {
		t.Fatalf("stats %v", st)
	}
	// API messages count as messages in (from api.env), refusals as errors.
	if _, err := r.client.PublishBatch(context.Background(), []apiclient.Message{{Token: "pair-1", Type: "a"}, {Token: "pair-1", Type: "relay.b"}}); err != nil {
		t.Fatal(err)
	}
	st, err = r.client.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st["messages_in"] != 2.0 || fmt.Sprint(st["errors"]) != "map[reserved_type:1]" {
		t.Fatalf("stats after a batch of two, one refused: %v", st)
	}
}

// Every bad input gets a clear 4xx with {error, message}.
func TestBadInput(t *testing.T) {
	r := startRelay(t, "api:\n  max_batch: 2\n  max_body_bytes: 2048\n", nil)
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"not JSON", "POST", "/publish", `{"token":`, 400, "bad_request"},
		{"two values", "POST", "/publish", `{"token":"a","type":"t"} {}`, 400, "bad_request"},
		{"an array", "POST", "/publish", `[]`, 400, "bad_request"},
		{"unknown field", "POST", "/publish", `{"token":"a","type":"t","tok":"b"}`, 400, "bad_request"},
		{"no token", "POST", "/publish", `{"type":"t"}`, 400, "invalid_message"},
		{"long token", "POST", "/publish", `{"token":"` + long + `","type":"t"}`, 400, "invalid_message"},
		{"no type", "POST", "/publish", `{"token":"a"}`, 400, "invalid_message"},
		{"reserved type", "POST", "/publish", `{"token":"a","type":"relay.ping"}`, 400, "reserved_type"},
		{"long type", "POST", "/publish", `{"token":"a","type":"` + long + `"}`, 400, "invalid_message"},
		{"long id", "POST", "/publish", `{"token":"a","type":"t","id":"` + long + `"}`, 400, "invalid_message"},
		{"bad env in to", "POST", "/publish", `{"token":"a","type":"t","to":["H5"]}`, 400, "invalid_message"},
		{"to not a list", "POST", "/publish", `{"token":"a","type":"t","to":"h5"}`, 400, "bad_request"},
		{"body too large", "POST", "/publish", `{"token":"a","type":"t","data":"` + strings.Repeat("x", 3000) + `"}`, 413, "body_too_large"},
		{"empty batch", "POST", "/publish/batch", `{"messages":[]}`, 400, "bad_request"},
		{"batch without messages", "POST", "/publish/batch", `{}`, 400, "bad_request"},
		{"batch too long", "POST", "/publish/batch", `{"messages":[{"token":"a","type":"t"},{"token":"a","type":"t"},{"token":"a","type":"t"}]}`, 400, "too_many_messages"},
		{"presence without token", "GET", "/presence", "", 400, "bad_request"},
		{"presence with a long token", "GET", "/presence?token=" + long, "", 400, "bad_request"},
		{"presence twice the token", "GET", "/presence?token=a&token=b", "", 400, "bad_request"},
		{"presence unknown parameter", "GET", "/presence?token=a&env=h5", "", 400, "bad_request"},
		{"history bad since", "GET", "/history?token=a&since=-1", "", 400, "bad_request"},
		{"history bad limit", "GET", "/history?token=a&limit=0", "", 400, "bad_request"},
		{"history limit not a number", "GET", "/history?token=a&limit=ten", "", 400, "bad_request"},
		{"disconnect bad env", "POST", "/disconnect", `{"token":"a","env":"H5!"}`, 400, "bad_request"},
		{"disconnect bad code", "POST", "/disconnect", `{"token":"a","code":1006}`, 400, "bad_code"},
		{"disconnect code not a number", "POST", "/disconnect", `{"token":"a","code":"4000"}`, 400, "bad_request"},
		{"disconnect without token", "POST", "/disconnect", `{}`, 400, "bad_request"},
		{"stats with a parameter", "GET", "/stats?x=1", "", 400, "bad_request"},
		{"wrong method", "GET", "/publish", "", 405, "method_not_allowed"},
		{"wrong method on stats", "DELETE", "/stats", "", 405, "method_not_allowed"},
		{"unknown path", "GET", "/nothing", "", 404, "not_found"},
		{"the prefix itself", "GET", "", "", 404, "not_found"},
	} {
		status, body := call(t, tc.method, r.base+"/api/v1"+tc.path, testKey, tc.body)
		if status != tc.status || body["error"] != tc.code || body["message"] == "" {
			t.Errorf("%s: %d %v, want %d %s with a message", tc.name, status, body, tc.status, tc.code)
		}
	}
}

// The document served, the one in docs/ and the routes the handler serves
// all agree.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	r := startRelay(t, "", nil)
	inDocs, err := os.ReadFile("../docs/api.openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if string(inDocs) != string(api.OpenAPI) {
		t.Fatal("docs/api.openapi.json differs from api/openapi.json: copy api/openapi.json over it")
	}
	req, _ := http.NewRequest(http.MethodGet, r.base+"/api/v1/openapi.json", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("GET /api/v1/openapi.json without a key: %d, %v, openapi %q", resp.StatusCode, err, doc.OpenAPI)
	}
	documented := map[api.Route]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[api.Route{Method: strings.ToUpper(method), Path: path}] = true
		}
	}
	served := map[api.Route]bool{}
	for _, rt := range r.api.Routes() {
		served[rt] = true
		if !documented[rt] {
			t.Errorf("%s %s is served but not in the OpenAPI document", rt.Method, rt.Path)
		}
	}
	for rt := range documented {
		if !served[rt] {
			t.Errorf("%s %s is documented but the handler does not list it", rt.Method, rt.Path)
		}
		// Over real HTTP, with an empty body: whatever it says, it is
		// neither "no such path" nor "no such method".
		status, body := call(t, rt.Method, r.base+rt.Path, testKey, "")
		if status == 404 || status == 405 {
			t.Errorf("documented %s %s answers %d %v", rt.Method, rt.Path, status, body)
		}
	}
	if len(documented) < 7 {
		t.Fatalf("only %d operations documented", len(documented))
	}
}

// With auth, rooms are keyed by the credential's key: the API takes that
// key (the JWT's sub) and reaches the clients that proved it, never a
// client that names the key as a raw token.
func TestAuthRoomsByPairingKey(t *testing.T) {
	secret := "api-test-secret-0123456789abcdef-0123"
	r := startRelay(t, `
auth:
  provider: jwt
  jwt:
    algorithms: [HS256]
    secret: "`+secret+`"
    key_claim: sub
`, nil)
	sign := func(sub string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	h5 := dial(t, r.ws, "env=h5&token="+sign("user-42"))
	ctx := context.Background()
	res, err := r.client.Publish(ctx, apiclient.Message{Token: "user-42", Type: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if f := h5.next(); f["type"] != "hello" || uint64(f["seq"].(float64)) != res.Seq {
		t.Fatalf("h5 got %v", f)
	}
	envs, err := r.client.Presence(ctx, "user-42")
	if err != nil || !slices.Equal(envs, []string{"h5"}) {
		t.Fatalf("presence %v, %v", envs, err)
	}
	// The answers name the room by its log id, never by the key.
	status, body := call(t, "GET", r.base+"/api/v1/presence?token=user-42", testKey, "")
	if status != 200 || body["token_id"] == "" || strings.Contains(fmt.Sprint(body), "user-42") {
		t.Fatalf("presence answer %d %v", status, body)
	}
	if _, err := r.client.Disconnect(ctx, "user-42", "", 4000); err != nil {
		t.Fatal(err)
	}
	if code := h5.closeCode(); code != 4000 {
		t.Fatalf("h5 closed with %d, want 4000", code)
	}
}
