package deploy

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
	"github.com/goccy/go-yaml"
)

const (
	dashboardFile = "observability/grafana-dashboard.json"
	rulesFile     = "observability/relay-alerts.yaml"
)

// query is one PromQL expression and where it is used.
type query struct{ where, expr string }

// dashboardQueries returns every expression of the Grafana dashboard: panel
// targets and template variable queries.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	text, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(text, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Errorf("%s: want a title and a uid", dashboardFile)
	}
	var qs []query
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("%s: panel %q: id %d missing or repeated", dashboardFile, p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("%s: panel %q queries nothing", dashboardFile, p.Title)
		}
		for _, tg := range p.Targets {
			qs = append(qs, query{dashboardFile + ": panel " + p.Title, tg.Expr})
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			qs = append(qs, query{dashboardFile + ": variable " + v.Name, v.Definition})
		}
	}
	return qs
}

// ruleQueries returns every alert expression of the rules file.
func ruleQueries(t *testing.T) []query {
	t.Helper()
	text, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(text, &rules); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var qs []query
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			qs = append(qs, query{rulesFile + ": " + r.Alert, r.Expr})
		}
	}
	return qs
}

var (
	metricName = regexp.MustCompile(`\b(relay_[a-z0-9_]+|go_[a-z0-9_]+|process_[a-z0-9_]+)\b(\{[^}]*\})?`)
	labelName  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	// Labels Prometheus adds when it scrapes, and the histogram bucket's.
	scrapeLabels = map[string]bool{"instance": true, "job": true, "le": true}
)

// exposition is what a /metrics scrape says about each metric family:
// its type and the label names its series carry.
type exposition struct {
	types  map[string]string
	labels map[string]map[string]bool // series name → label names
}

func scrape(t *testing.T, p *relayProcess) exposition {
	t.Helper()
	status, text := p.get(t, "/metrics", nil)
	if status != http.StatusOK {
		t.Fatalf("/metrics: %d", status)
	}
	e := exposition{types: map[string]string{}, labels: map[string]map[string]bool{}}
	for line := range strings.SplitSeq(text, "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(rest)
			e.types[f[0]] = f[1]
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, labels, _ := strings.Cut(strings.Fields(line)[0], "{")
		if e.labels[name] == nil {
			e.labels[name] = map[string]bool{}
		}
		for _, m := range labelName.FindAllStringSubmatch(labels, -1) {
			e.labels[name][m[1]] = true
		}
	}
	return e
}

// missing returns what q names that the scrape lacks: metrics with no series
// (a histogram's _bucket, _sum and _count count as its series) and label
// names no series of the metric carries.
func (e exposition) missing(q query) []string {
	var out []string
	for _, m := range metricName.FindAllStringSubmatch(q.expr, -1) {
		name := m[1]
		series, ok := e.labels[name]
		if !ok {
			out = append(out, name+" (no series)")
			continue
		}
		for _, l := range labelName.FindAllStringSubmatch(m[2], -1) {
			if !series[l[1]] && !scrapeLabels[l[1]] {
				out = append(out, name+" label "+l[1])
			}
		}
	}
	return out
}

// TestDashboardAndAlertsQueryLiveMetrics: every metric (and label) that the
// Grafana dashboard and the alert rules query exists in the /metrics of a
// real relay after one message went through one handler, one duplicate was
// dropped, one connection was replaced and one upgrade refused. A renamed or
// misspelt metric fails here rather than as an empty panel.
func TestDashboardAndAlertsQueryLiveMetrics(t *testing.T) {
	queries := append(dashboardQueries(t), ruleQueries(t)...)
	p := startRelay(t, loopbackConfig(t))

	// The image's relay.yaml routes addMaterial through a log handler.
	h5 := dial(t, p, "v=1&token=metrics&env=h5&since=0") // a resume
	h5.readType(t, "relay.hello")
	mini := dial(t, p, "v=1&token=metrics&env=miniapp")
	mini.readType(t, "relay.hello")
	h5.send(t, `{"type":"addMaterial","data":{"id":1},"id":"m-1"}`)
	h5.readType(t, "relay.ack")
	mini.readType(t, "addMaterial")
	h5.send(t, `{"type":"addMaterial","data":{"id":1},"id":"m-1"}`) // a duplicate: dropped
	h5.readType(t, "relay.ack")
	h5.send(t, `not json`) // relay.error
	h5.readType(t, "relay.error")
	dial(t, p, "v=1&token=metrics&env=h5").readType(t, "relay.hello") // replaces h5: close 4502
	if status, _ := p.get(t, "/socket?token=t&env=h5", http.Header{"Sec-Websocket-Key": {"eA=="}, "Sec-Websocket-Version": {"13"}}); status != http.StatusUpgradeRequired {
		t.Fatalf("stripped upgrade: %d", status)
	}

	// Counters move as the frames above are handled; wait until every
	// queried series is there rather than for a fixed time.
	var problems map[string][]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		e := scrape(t, p)
		problems = map[string][]string{}
		for _, q := range queries {
			if m := e.missing(q); len(m) > 0 {
				problems[q.where] = m
			}
		}
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var where []string
	for w := range problems {
		where = append(where, w)
	}
	sort.Strings(where)
	for _, w := range where {
		t.Errorf("%s queries what relay does not export: %v", w, problems[w])
	}
	if len(queries) < 20 {
		t.Errorf("only %d queries found: the dashboard or the rules did not parse as expected", len(queries))
	}
}

// TestPromtoolCheckRules runs Prometheus's own checker on the alert rules.
// promtool comes with Debian's prometheus package, which make deps installs.
func TestPromtoolCheckRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run make deps (Debian: apt-get install -y prometheus)")
	}
	out, err := exec.Command(promtool, "check", "rules", rulesFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
}

// wsClient is a real WebSocket client of the relay process.
type wsClient struct{ conn *fws.Conn }

func dial(t *testing.T, p *relayProcess, query string) *wsClient {
	t.Helper()
	conn, _, err := fws.DefaultDialer.Dial("ws://"+p.addr+"/socket?"+query, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", query, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &wsClient{conn: conn}
}

func (c *wsClient) send(t *testing.T, frame string) {
	t.Helper()
	if err := c.conn.WriteMessage(fws.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
}

// readType reads frames until one of type typ, skipping presence frames.
func (c *wsClient) readType(t *testing.T, typ string) map[string]any {
	t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("frame %q: %v", b, err)
		}
		switch m["type"] {
		case typ:
			return m
		case "relay.presence":
			continue
		default:
			t.Fatalf("got %s while waiting for %s", b, typ)
		}
	}
}
