package deploy

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/pairrelay/relay/config"
)

// Facts about Cloud Run that the manifest has to live with.
const (
	// cloudRunMaxTimeout is the longest request (a WebSocket's whole life).
	cloudRunMaxTimeout = 3600
	// cloudRunMaxConcurrency is the most requests one instance may get.
	cloudRunMaxConcurrency = 1000
	// cloudRunSIGTERMGrace is how long an instance lives after SIGTERM.
	cloudRunSIGTERMGrace = 10 * time.Second
	// idleConnBytes is what relay-bench (make bench) measures one idle
	// connection to cost relay: about 9 KiB.
	idleConnBytes = 9 << 10
)

// knService is the part of a Knative Service that Cloud Run reads and
// deploy/cloudrun/service.yaml uses; decoded strictly, so that a misspelt
// key fails here instead of being ignored.
type knService struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   knMetadata `yaml:"metadata"`
	Spec       struct {
		Template struct {
			Metadata knMetadata `yaml:"metadata"`
			Spec     struct {
				TimeoutSeconds       int           `yaml:"timeoutSeconds"`
				ContainerConcurrency int           `yaml:"containerConcurrency"`
				Containers           []knContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type knMetadata struct {
	Name        string            `yaml:"name"`
	Annotations map[string]string `yaml:"annotations"`
}

type knContainer struct {
	Image string `yaml:"image"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Resources struct {
		Limits map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	StartupProbe  knProbe `yaml:"startupProbe"`
	LivenessProbe knProbe `yaml:"livenessProbe"`
}

type knProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port int    `yaml:"port"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	TimeoutSeconds      int `yaml:"timeoutSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

func loadService(t *testing.T) knService {
	t.Helper()
	text, err := os.ReadFile("cloudrun/service.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var svc knService
	if err := yaml.UnmarshalWithOptions(text, &svc, yaml.Strict()); err != nil {
		t.Fatalf("cloudrun/service.yaml: %s", yaml.FormatError(err, false, true))
	}
	if svc.APIVersion != "serving.knative.dev/v1" || svc.Kind != "Service" {
		t.Fatalf("cloudrun/service.yaml: %s %s, want serving.knative.dev/v1 Service", svc.APIVersion, svc.Kind)
	}
	if len(svc.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("cloudrun/service.yaml: want one container")
	}
	return svc
}

// imageConfig parses the image's built-in relay.yaml with env as the
// container's environment.
func imageConfig(t *testing.T, env map[string]string) *config.Config {
	t.Helper()
	for _, name := range []string{"PORT", "RELAY_BACKPLANE", "REDIS_URL"} {
		t.Setenv(name, "")
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := config.Load(filepath.Join(root, "relay.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func listenPort(t *testing.T, listen string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("listen %q: %v", listen, err)
	}
	return port
}

// TestCloudRunServiceAgreesWithRelay: deploy/cloudrun/service.yaml gives a
// WebSocket relay what it needs on Cloud Run, and agrees with relay's own
// settings: port, timeouts, shutdown against the SIGTERM grace, memory.
func TestCloudRunServiceAgreesWithRelay(t *testing.T) {
	svc := loadService(t)
	spec := svc.Spec.Template.Spec
	c := spec.Containers[0]
	ann := svc.Spec.Template.Metadata.Annotations

	if spec.TimeoutSeconds != cloudRunMaxTimeout {
		t.Errorf("timeoutSeconds = %d, want Cloud Run's maximum %d: the default 300 cuts every socket after 5 minutes", spec.TimeoutSeconds, cloudRunMaxTimeout)
	}
	for key, want := range map[string]string{
		"run.googleapis.com/sessionAffinity":   "true",
		"run.googleapis.com/cpu-throttling":    "false",
		"run.googleapis.com/vpc-access-egress": "private-ranges-only",
	} {
		if ann[key] != want {
			t.Errorf("annotation %s = %q, want %q", key, ann[key], want)
		}
	}
	if n, err := strconv.Atoi(ann["autoscaling.knative.dev/minScale"]); err != nil || n < 1 {
		t.Errorf("autoscaling.knative.dev/minScale = %q, want at least 1", ann["autoscaling.knative.dev/minScale"])
	}
	var nics []struct{ Network, Subnetwork string }
	if err := json.Unmarshal([]byte(ann["run.googleapis.com/network-interfaces"]), &nics); err != nil || len(nics) != 1 || nics[0].Network == "" {
		t.Errorf("run.googleapis.com/network-interfaces = %q (%v): want one Direct VPC interface naming its network", ann["run.googleapis.com/network-interfaces"], err)
	}

	// Port: Cloud Run sets PORT to containerPort and relay listens on it;
	// http1, because WebSockets need HTTP/1.1 to the container (h2c would
	// be end-to-end HTTP/2).
	if len(c.Ports) != 1 || c.Ports[0].Name != "http1" {
		t.Fatalf("ports = %+v, want one named http1", c.Ports)
	}
	port := c.Ports[0].ContainerPort
	env := map[string]string{"PORT": strconv.Itoa(port)}
	secretEnv := false
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil:
			if e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "" {
				t.Errorf("env %s: a secretKeyRef needs the secret's name and version (key)", e.Name)
			}
			if e.Name == "REDIS_URL" {
				secretEnv = true
			}
			env[e.Name] = "redis://:password@10.0.0.3:6379" // what the secret holds
		default:
			env[e.Name] = e.Value
		}
	}
	if !secretEnv {
		t.Error("REDIS_URL must come from Secret Manager (valueFrom.secretKeyRef)")
	}
	cfg := imageConfig(t, env)
	if got := listenPort(t, cfg.Listen); got != strconv.Itoa(port) {
		t.Errorf("relay listens on %s, containerPort is %d", got, port)
	}
	if strconv.Itoa(port) != listenPort(t, config.Default().Listen) {
		t.Errorf("containerPort %d is not relay's default port %s (the image EXPOSEs that one)", port, config.Default().Listen)
	}
	if cfg.Backplane.Type != config.BackplaneRedis || cfg.Backplane.URL != env["REDIS_URL"] {
		t.Errorf("with the service's environment the image's relay.yaml gives backplane %+v, want redis at REDIS_URL", cfg.Backplane)
	}

	// Shutdown: relay must be done before Cloud Run kills the instance.
	for name, c := range map[string]*config.Config{"config.Default()": config.Default(), "relay.yaml": cfg} {
		if c.Shutdown.Timeout >= cloudRunSIGTERMGrace {
			t.Errorf("%s: shutdown.timeout %v is not below Cloud Run's %v after SIGTERM", name, c.Shutdown.Timeout, cloudRunSIGTERMGrace)
		}
	}
	// Heartbeats keep the socket from looking idle well within the timeout.
	if cfg.Heartbeat.Timeout >= time.Duration(spec.TimeoutSeconds)*time.Second {
		t.Errorf("heartbeat.timeout %v is not below the request timeout", cfg.Heartbeat.Timeout)
	}

	// Concurrency, sized by memory: relay's budget is 75% of the limit; the
	// history may take half of it and the send queues a quarter, which
	// leaves a quarter for the connections themselves.
	if spec.ContainerConcurrency < 1 || spec.ContainerConcurrency > cloudRunMaxConcurrency {
		t.Errorf("containerConcurrency = %d, want 1..%d", spec.ContainerConcurrency, cloudRunMaxConcurrency)
	}
	limit := quantityBytes(t, c.Resources.Limits["memory"])
	budget := limit * 3 / 4
	if need := int64(spec.ContainerConcurrency) * idleConnBytes; need > budget/4 {
		t.Errorf("containerConcurrency %d × %d B = %d B exceeds the connections' quarter of the %s limit's budget (%d B)",
			spec.ContainerConcurrency, idleConnBytes, need, c.Resources.Limits["memory"], budget/4)
	}
	if spec.ContainerConcurrency > cfg.Limits.MaxConnections {
		t.Errorf("containerConcurrency %d is above limits.max_connections %d: Cloud Run would send connections relay refuses", spec.ContainerConcurrency, cfg.Limits.MaxConnections)
	}

	// Probes: liveness never on /readyz (a Redis outage would restart the
	// instance and cut every socket); both on the container's port.
	if c.StartupProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("startup probe %q, liveness probe %q: want /readyz and /healthz", c.StartupProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
	}
	for name, p := range map[string]knProbe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe} {
		if p.HTTPGet.Port != port {
			t.Errorf("%s on port %d, the container listens on %d", name, p.HTTPGet.Port, port)
		}
		if p.PeriodSeconds < 1 || p.TimeoutSeconds < 1 || p.TimeoutSeconds > p.PeriodSeconds || p.FailureThreshold < 1 {
			t.Errorf("%s: period %ds, timeout %ds, failures %d: want a timeout within the period", name, p.PeriodSeconds, p.TimeoutSeconds, p.FailureThreshold)
		}
	}
}

// TestMaxConnectionAgeBelowRequestTimeout: relay closes a socket (with a
// "reconnect now" code the SDK resumes on) before Cloud Run's request
// timeout cuts it. The age is limits.max_connection_age; the doc states its
// default, and once the config field exists the two must agree.
func TestMaxConnectionAgeBelowRequestTimeout(t *testing.T) {
	svc := loadService(t)
	timeout := time.Duration(svc.Spec.Template.Spec.TimeoutSeconds) * time.Second
	doc, err := os.ReadFile(filepath.Join(root, "docs", "deploy", "cloud-run.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("`limits\\.max_connection_age`[^`]*default `([0-9hms]+)`").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/deploy/cloud-run.md: want \"`limits.max_connection_age` … default `<duration>`\"")
	}
	documented, err := time.ParseDuration(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	if documented >= timeout {
		t.Errorf("documented max_connection_age %v is not below the request timeout %v", documented, timeout)
	}
	// Limits.MaxConnectionAge of the defaults and of the image's relay.yaml,
	// looked up by name so that this compiles before and after the setting
	// lands. Its jitter only shortens an age, so the age itself is the
	// longest a socket lives.
	for name, cfg := range map[string]*config.Config{"config.Default()": config.Default(), "relay.yaml": imageConfig(t, nil)} {
		f := reflect.ValueOf(cfg.Limits).FieldByName("MaxConnectionAge")
		if !f.IsValid() {
			continue
		}
		age, ok := f.Interface().(time.Duration)
		if !ok {
			t.Fatalf("config Limits.MaxConnectionAge is a %s, want a time.Duration", f.Type())
		}
		if age != documented {
			t.Errorf("%s: limits.max_connection_age is %v, docs/deploy/cloud-run.md says %v", name, age, documented)
		}
		if age <= 0 || age >= timeout {
			t.Errorf("%s: limits.max_connection_age %v is not below the request timeout %v", name, age, timeout)
		}
	}
}

// wxContainerConfig is WeChat Cloud Hosting's container.config.json, the
// keys its documentation lists; decoded strictly.
type wxContainerConfig struct {
	ContainerPort       int               `json:"containerPort"`
	DockerfilePath      string            `json:"dockerfilePath"`
	BuildDir            string            `json:"buildDir"`
	MinNum              int               `json:"minNum"`
	MaxNum              int               `json:"maxNum"`
	CPU                 float64           `json:"cpu"`
	Mem                 float64           `json:"mem"`
	PolicyType          string            `json:"policyType"`
	PolicyThreshold     int               `json:"policyThreshold"`
	EnvParams           map[string]string `json:"envParams"`
	CustomLogs          string            `json:"customLogs"`
	InitialDelaySeconds int               `json:"initialDelaySeconds"`
}

// TestWeChatContainerConfigAgreesWithRelay: container.config.json parses,
// uses a port the platform allows and the one relay listens on, a CPU/memory
// pair the platform offers, and more than one replica only with Redis.
func TestWeChatContainerConfigAgreesWithRelay(t *testing.T) {
	text, err := os.ReadFile(filepath.Join(root, "container.config.json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.DisallowUnknownFields()
	var wx wxContainerConfig
	if err := dec.Decode(&wx); err != nil {
		t.Fatalf("container.config.json: %v", err)
	}
	if wx.ContainerPort < 1 || wx.ContainerPort > 61000 || wx.ContainerPort == 9100 {
		t.Errorf("containerPort %d: the platform allows 1-61000 except 9100", wx.ContainerPort)
	}
	cfg := imageConfig(t, wx.EnvParams)
	if got := listenPort(t, cfg.Listen); got != strconv.Itoa(wx.ContainerPort) {
		t.Errorf("relay listens on %s with envParams %v, containerPort is %d", got, wx.EnvParams, wx.ContainerPort)
	}
	if wx.EnvParams["PORT"] != strconv.Itoa(wx.ContainerPort) {
		t.Errorf("envParams.PORT = %q: set it to containerPort %d so that the two cannot drift", wx.EnvParams["PORT"], wx.ContainerPort)
	}
	pairs := map[float64]float64{0.25: 0.5, 0.5: 1, 1: 2, 2: 4, 4: 8, 8: 16, 16: 32}
	if pairs[wx.CPU] != wx.Mem {
		t.Errorf("cpu %v with mem %v GB: the platform offers %v", wx.CPU, wx.Mem, pairs)
	}
	if wx.MinNum < 0 || wx.MaxNum < 1 || wx.MinNum > wx.MaxNum {
		t.Errorf("minNum %d, maxNum %d", wx.MinNum, wx.MaxNum)
	}
	if wx.MaxNum > 1 && cfg.Backplane.Type != config.BackplaneRedis {
		t.Errorf("maxNum %d with the memory backplane: replicas would not see each other's clients (set RELAY_BACKPLANE=redis and REDIS_URL)", wx.MaxNum)
	}
	if wx.DockerfilePath != "Dockerfile" {
		t.Errorf("dockerfilePath %q, want the Dockerfile TestDockerfile checks", wx.DockerfilePath)
	}
	if wx.BuildDir != "" {
		t.Errorf("buildDir %q: relay builds from the repository root", wx.BuildDir)
	}
	if wx.CustomLogs != "stdout" {
		t.Errorf("customLogs %q: relay logs to the standard streams", wx.CustomLogs)
	}
}

// TestPlatformHealthChecks: the GETs that Cloud Run's probes and WeChat
// Cloud Hosting's health check send, against a real relay running the
// image's relay.yaml: all 200, cheap, not logged as errors; the socket path
// still upgrades.
func TestPlatformHealthChecks(t *testing.T) {
	p := startRelay(t, loopbackConfig(t))
	svc := loadService(t)
	c := svc.Spec.Template.Spec.Containers[0]
	for _, path := range []string{c.StartupProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path, "/", "/socket"} {
		status, body := p.get(t, path, http.Header{"User-Agent": {"health-check"}})
		if status != http.StatusOK || len(body) > 64 {
			t.Errorf("GET %s = %d %q, want 200 and a tiny body", path, status, body)
		}
	}
	// A WebSocket attempt whose Upgrade header a proxy dropped is told so.
	status, body := p.get(t, "/socket?token=t&env=h5", http.Header{"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}})
	if status != http.StatusUpgradeRequired || !strings.Contains(body, "upgrade_required") {
		t.Errorf("GET /socket without Upgrade but with Sec-WebSocket-Key = %d %q, want 426 upgrade_required", status, body)
	}
	dial(t, p, "token=t&env=h5")
	for line := range strings.SplitSeq(p.logText(), "\n") {
		var entry struct{ Severity, Message string }
		if json.Unmarshal([]byte(line), &entry) == nil && (entry.Severity == "ERROR" || entry.Severity == "WARNING") &&
			!strings.Contains(entry.Message, "without auth") {
			t.Errorf("logged: %s", line)
		}
	}
}

// quantityBytes reads a Kubernetes memory quantity such as 512Mi or 1Gi.
func quantityBytes(t *testing.T, q string) int64 {
	t.Helper()
	for suffix, mult := range map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30} {
		if n, ok := strings.CutSuffix(q, suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err == nil && v > 0 {
				return v * mult
			}
		}
	}
	t.Fatalf("memory limit %q: want <n>Ki, <n>Mi or <n>Gi", q)
	return 0
}
