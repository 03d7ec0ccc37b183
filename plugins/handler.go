package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	pb "github.com/pairrelay/relay/plugins/internal/proto/relayplugin/v1"
)

func init() {
	core.RegisterHandler(core.HandlerSpec{
		Name:    "plugin",
		Summary: "Hands each message to an external plugin process (plugins:), whose answer passes, changes, fans out, drops or rejects it.",
		New:     func() core.Handler { return &Handler{MaxMessages: 100} },
	})
}

// Handler is the plugin handler: it sends each message to a plugin process
// over gRPC and turns the answer into the message's fate.
type Handler struct {
	Plugin      string `yaml:"plugin" doc:"Name of the plugin in the plugins: section. Required. Routes whose entries name the same plugin with the same config and max_messages share one process; a reload that keeps these and limits.max_frame_bytes keeps the process."`
	Config      any    `yaml:"config" doc:"Settings handed to the plugin (its Configure call) as JSON: any YAML value, usually a mapping. Absent: {}. A plugin that refuses its config fails relay check and relay serve with its reason."`
	MaxMessages int    `yaml:"max_messages" doc:"Most messages one answer may fan out to; more is a failure. Each message must also meet limits.max_frame_bytes, and relay reads no answer larger than max_messages × (limits.max_frame_bytes + 1 KiB) + 64 KiB: a larger one breaks the connection to the plugin, which is restarted." default:"100"`

	proc      *process
	closeOnce sync.Once
}

// Provision starts the plugin process (or shares the running one) and
// configures it; any failure fails relay check and relay serve.
func (h *Handler) Provision(ctx context.Context, env core.ProvisionEnv) error {
	if h.Plugin == "" {
		return errors.New("plugin: is required: the name of an entry of plugins:")
	}
	if h.MaxMessages < 1 {
		return fmt.Errorf("max_messages: must be at least 1, got %d", h.MaxMessages)
	}
	var entry *config.Plugin
	var names []string
	if env.Config != nil {
		for i := range env.Config.Plugins {
			names = append(names, env.Config.Plugins[i].Name)
			if env.Config.Plugins[i].Name == h.Plugin {
				entry = &env.Config.Plugins[i]
			}
		}
	}
	if entry == nil {
		if len(names) == 0 {
			return fmt.Errorf("plugin: %q is not defined: plugins: is empty", h.Plugin)
		}
		return fmt.Errorf("plugin: %q is not defined in plugins: (defined: %s)", h.Plugin, strings.Join(names, ", "))
	}
	cfg, err := configJSON(h.Config)
	if err != nil {
		return fmt.Errorf("config: %v", err)
	}
	def, err := newDefinition(entry, env.BaseDir, cfg)
	if err != nil {
		return fmt.Errorf("plugin %s: %v", h.Plugin, err)
	}
	maxFrame := config.Default().Limits.MaxFrameBytes
	if env.Config != nil && env.Config.Limits.MaxFrameBytes > 0 {
		maxFrame = env.Config.Limits.MaxFrameBytes
	}
	def.MaxAnswer = maxAnswerBytes(maxFrame, h.MaxMessages)
	h.proc, err = acquire(ctx, def, env.Log)
	if err != nil {
		return fmt.Errorf("plugin %s: %v", h.Plugin, err)
	}
	return nil
}

// newDefinition resolves a plugins: entry: a command with a slash is a
// path relative to relay.yaml's directory, which is also the plugin's
// working directory; a bare name is looked up on PATH.
func newDefinition(entry *config.Plugin, baseDir string, cfg []byte) (definition, error) {
	if baseDir == "" {
		baseDir = "."
	}
	dir, err := filepath.Abs(baseDir)
	if err != nil {
		return definition{}, err
	}
	path := entry.Command
	if strings.ContainsRune(path, '/') {
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
	} else if path, err = exec.LookPath(path); err != nil {
		return definition{}, fmt.Errorf("command %q: not found on PATH", entry.Command)
	}
	return definition{Name: entry.Name, Path: path, Args: entry.Args, Env: envList(entry.Env), Dir: dir, Config: cfg}, nil
}

// maxAnswerBytes is the largest answer relay reads from a plugin: as many
// messages as max_messages allows, each within the frame limit (which the
// pipeline checks once decoded), with room for the fields around them. The
// bound is applied before an answer is decoded, so a plugin cannot make
// relay allocate more than this for one call.
func maxAnswerBytes(maxFrame, maxMessages int) int {
	n := int64(maxMessages)*(int64(maxFrame)+1<<10) + 64<<10
	return int(min(n, math.MaxInt32))
}

// configJSON turns the decoded YAML of config into JSON ({} when absent).
func configJSON(v any) ([]byte, error) {
	if v == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(jsonable(v))
}

// jsonable makes YAML's mappings with non-string keys encodable.
func jsonable(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = jsonable(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[fmt.Sprint(k)] = jsonable(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = jsonable(e)
		}
		return out
	}
	return v
}

// Handle sends m to the plugin and waits for its answer or ctx's end. A
// plugin that is down fails at once: the route's on_error decides.
func (h *Handler) Handle(ctx context.Context, m *core.Message) ([]*core.Message, error) {
	inst := h.proc.live.Load()
	if inst == nil {
		return nil, h.proc.down()
	}
	pm := &pb.Message{Type: m.Type, Data: m.Data, To: m.To, HasTo: m.To != nil, Id: m.ID, From: m.From, Ts: m.TS}
	if m.Claims != nil {
		// Claims came from JSON (a token, a backend's answer): they encode.
		pm.Claims, _ = json.Marshal(m.Claims)
	}
	resp, err := inst.mux.Call(ctx, pm)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("plugin %s gave no answer in time (%v)", h.Plugin, ctx.Err())
		}
		return nil, fmt.Errorf("plugin %s: %v", h.Plugin, err)
	}
	switch r := resp.GetResult().(type) {
	case *pb.HandleResponse_Messages:
		out, err := h.results(m, r.Messages.GetMessages())
		if err != nil {
			return nil, fmt.Errorf("plugin %s answered %v", h.Plugin, err)
		}
		return out, nil
	case *pb.HandleResponse_Drop:
		return nil, nil
	case *pb.HandleResponse_Reject:
		code := r.Reject.GetCode()
		if code == "" {
			code = core.ErrRejected
		}
		return nil, core.Reject(code, "%s", r.Reject.GetMessage())
	case *pb.HandleResponse_Error:
		return nil, fmt.Errorf("plugin %s failed: %s", h.Plugin, r.Error.GetMessage())
	}
	return nil, fmt.Errorf("plugin %s answered without a result", h.Plugin)
}

// results turns the plugin's messages into the ones that go on. Each keeps
// the original's sender, id, time and token; type, data and to are the
// plugin's. An answer that changes nothing passes the original itself, so
// a seed client's text still reaches seed receivers byte for byte.
func (h *Handler) results(m *core.Message, msgs []*pb.Message) ([]*core.Message, error) {
	if len(msgs) > h.MaxMessages {
		return nil, fmt.Errorf("%d messages, more than max_messages (%d)", len(msgs), h.MaxMessages)
	}
	out := make([]*core.Message, 0, len(msgs))
	for i, pm := range msgs {
		c, changed, err := apply(m, pm)
		if err != nil {
			if len(msgs) > 1 {
				err = fmt.Errorf("message %d: %v", i, err)
			}
			return nil, err
		}
		if !changed && len(msgs) == 1 {
			return []*core.Message{m}, nil
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

func apply(m *core.Message, pm *pb.Message) (*core.Message, bool, error) {
	c := *m
	changed := false
	if t := pm.GetType(); t != "" && t != m.Type {
		if len(t) > 128 || strings.HasPrefix(t, "relay.") {
			return nil, false, fmt.Errorf("type %q: want 1 to 128 characters, not starting with relay.", t)
		}
		c.Type, changed = t, true
	}
	if data := pm.GetData(); !bytes.Equal(data, m.Data) {
		if len(data) == 0 {
			c.Data = nil
		} else if !json.Valid(data) {
			return nil, false, fmt.Errorf("data that is not JSON: %.100q", data)
		} else {
			c.Data = data
		}
		changed = true
	}
	if !pm.GetHasTo() {
		c.To = nil
	} else {
		for _, env := range pm.GetTo() {
			if !config.ValidEnvName(env) {
				return nil, false, fmt.Errorf("to: %q is not an env name ([a-z0-9_-]{1,32})", env)
			}
		}
		c.To = pm.GetTo()
		if c.To == nil {
			c.To = []string{}
		}
	}
	if (c.To == nil) != (m.To == nil) || !slices.Equal(c.To, m.To) {
		changed = true
	}
	return &c, changed, nil
}

// Close gives the plugin process back; the last user stops it.
func (h *Handler) Close() error {
	h.closeOnce.Do(func() {
		if h.proc != nil {
			release(h.proc)
		}
	})
	return nil
}
