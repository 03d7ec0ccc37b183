// Package sdk is what a Go relay plugin imports, and all it imports: a
// plugin is one type implementing Handler, and a main that calls Serve.
//
//	type enricher struct{ field string }
//
//	func (e *enricher) Configure(config []byte) error {
//		var c struct{ Field string `json:"field"` }
//		if err := sdk.DecodeConfig(config, &c); err != nil {
//			return err
//		}
//		e.field = c.Field
//		return nil
//	}
//
//	func (e *enricher) Handle(ctx context.Context, m *sdk.Message) ([]*sdk.Message, error) {
//		var data map[string]any
//		if err := m.DecodeData(&data); err != nil {
//			return nil, sdk.Reject("invalid_data", "data must be an object")
//		}
//		data[e.field] = time.Now().UnixMilli()
//		return []*sdk.Message{m}, m.SetData(data)
//	}
//
//	func main() { sdk.Serve(&enricher{}) }
//
// Build it with go build, name it in relay.yaml's plugins:, and use it in a
// route as {handler: plugin, plugin: NAME, config: {...}}; relay starts the
// process, restarts it when it crashes and stops it with relay. What Handle
// returns decides the message's fate:
//
//   - []*Message{m}: it goes on (m may be changed: Type, Data, To);
//   - several messages: fan-out, each goes through the rest of the route;
//   - nil, nil (or Drop()): dropped, silently;
//   - Reject(code, message): refused on purpose; the sender gets relay.error
//     with that code and message;
//   - any other error: a failure, which the route's on_error turns into a
//     reject, a pass or a drop; its text goes to relay's log only.
//
// Handle runs concurrently, once per message in flight, and must honour
// ctx: it ends when the route's timeout does. What the plugin writes to
// stderr or stdout (log.Printf, slog, fmt.Fprintln(os.Stderr, …)) appears in
// relay's log with the plugin's name. Test a handler with package sdktest,
// which runs it in-process over the real protocol.
//
// docs/plugins.md walks through writing, configuring, testing and
// debugging a plugin, in Go and in other languages.
package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	pb "github.com/pairrelay/relay/plugins/internal/proto/relayplugin/v1"
	"github.com/pairrelay/relay/plugins/internal/wire"
	"github.com/pairrelay/relay/plugins/sdk/internal/bridge"
)

// Message is one relayed message.
type Message struct {
	Type string          // the message's type (routing key)
	Data json.RawMessage // any JSON; nil when the message has none
	To   []string        // envs to deliver to; nil: every other env of the token

	// Set by relay; changes to them are ignored.
	ID   string // the client's message id, may be empty
	From string // the sender's env
	TS   int64  // ms since the epoch, when relay accepted the message
	// Claims is the sender's identity that relay's auth lets handlers see
	// (the claims listed in auth.jwt.claims, a connect webhook's meta,
	// wechat's openid/appid/unionid); nil without auth.
	Claims map[string]any
}

// DecodeData unmarshals the message's data into v.
func (m *Message) DecodeData(v any) error {
	if len(m.Data) == 0 {
		return errors.New("the message has no data")
	}
	return json.Unmarshal(m.Data, v)
}

// SetData replaces the message's data with v as JSON.
func (m *Message) SetData(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	m.Data = b
	return nil
}

// Handler is a plugin.
type Handler interface {
	// Configure receives the route entry's config as JSON ({} when it has
	// none), before any message and again after each restart. An error stops
	// the plugin from starting: relay check and relay serve report it.
	Configure(config []byte) error
	// Handle decides the fate of one message (see the package doc).
	Handle(ctx context.Context, m *Message) ([]*Message, error)
}

// Authenticator is a Handler that can also be relay's auth provider: with
// auth: {provider: plugin, plugin: {name: NAME}} relay asks it about each
// connection before the upgrade, and about each relay.refresh. It gets its
// Configure call first, with auth.plugin.config. Return the Identity to
// admit, Refuse(…) to refuse, any other error when the check itself failed
// (refused too; the error goes to relay's log, never to the client).
type Authenticator interface {
	Authenticate(ctx context.Context, req *AuthRequest) (*Identity, error)
}

// AuthRequest is one connection (or refresh) to decide on.
type AuthRequest struct {
	Credential string            // what the client presented
	Env        string            // the env it connects as
	IP         string            // its address
	Origin     string            // its Origin header, may be empty
	Headers    map[string]string // the headers listed in auth.plugin.headers that were sent
}

// Identity is what an admitted connection is.
type Identity struct {
	Key     string         // the pairing key (1 to 256 bytes): connections with the same key share a room
	Envs    []string       // envs the credential may use; nil: any
	Expires time.Time      // when it expires (relay warns, then closes with 4501); zero: never
	Claims  map[string]any // what handlers see as the sender's claims; nil: none
}

// Refuse is Authenticate's answer for a credential that does not pass: the
// client gets 401 unauthorized with message (which must not contain the
// credential).
func Refuse(message string) error { return &RejectError{Code: "unauthorized", Message: message} }

// Expired is Authenticate's answer for a credential that has expired: the
// client gets token_expired and should fetch a new one.
func Expired(message string) error { return &RejectError{Code: "token_expired", Message: message} }

// Describer is a Handler that documents itself.
type Describer interface {
	Describe() Description
}

// Description tells what a plugin does and which config it takes.
type Description struct {
	Name    string
	Summary string
	Fields  []Field
}

// Field documents one key of a plugin's config.
type Field struct {
	Name     string
	Type     string // string, number, boolean, list, object
	Doc      string
	Default  string
	Required bool
}

// RejectError is a deliberate refusal; Reject makes one.
type RejectError struct {
	Code    string
	Message string
}

func (e *RejectError) Error() string { return e.Code + ": " + e.Message }

// Reject refuses a message on purpose: the sender gets relay.error with
// code and message, whatever the route's on_error says. code defaults to
// "rejected".
func Reject(code, message string) error {
	if code == "" {
		code = "rejected"
	}
	return &RejectError{Code: code, Message: message}
}

// Drop is Handle's answer for a message that goes nowhere: return sdk.Drop().
func Drop() ([]*Message, error) { return nil, nil }

// DecodeConfig strictly unmarshals a Configure config into v: an unknown
// key is an error, so a typo in relay.yaml fails relay check.
func DecodeConfig(config []byte, v any) error {
	if len(bytes.TrimSpace(config)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// Serve runs h as a relay plugin until relay stops it. It is all a plugin's
// main does. Started by hand (not by relay) it says so and exits with 1.
func Serve(h Handler) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: wire.Handshake,
		Plugins:         wire.Plugins(service(h)),
		GRPCServer:      wire.NewGRPCServer,
		// go-plugin's own warnings go to stderr, which relay logs.
		Logger: hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.Warn, Output: os.Stderr, JSONFormat: true}),
	})
}

func init() {
	bridge.Service = func(h any) pb.PluginServer { return service(h.(Handler)) }
}

func service(h Handler) pb.PluginServer { return wire.NewServer(impl{h}) }

// impl adapts a Handler to the protocol.
type impl struct{ h Handler }

func (i impl) Configure(_ context.Context, config []byte) error { return i.h.Configure(config) }

func (i impl) Describe(context.Context) *pb.DescribeResponse {
	d, ok := i.h.(Describer)
	if !ok {
		return &pb.DescribeResponse{}
	}
	desc := d.Describe()
	resp := &pb.DescribeResponse{Name: desc.Name, Summary: desc.Summary}
	for _, f := range desc.Fields {
		resp.Fields = append(resp.Fields, &pb.ConfigField{Name: f.Name, Type: f.Type, Doc: f.Doc, Default: f.Default, Required: f.Required})
	}
	return resp
}

func (i impl) Handle(ctx context.Context, pm *pb.Message) *pb.HandleResponse {
	out, err := i.h.Handle(ctx, fromPB(pm))
	if err != nil {
		var rej *RejectError
		if errors.As(err, &rej) {
			return &pb.HandleResponse{Result: &pb.HandleResponse_Reject{Reject: &pb.Reject{Code: rej.Code, Message: rej.Message}}}
		}
		return wire.ErrorResponse(err.Error())
	}
	if len(out) == 0 {
		return &pb.HandleResponse{Result: &pb.HandleResponse_Drop{Drop: &pb.Drop{}}}
	}
	msgs := make([]*pb.Message, 0, len(out))
	for _, m := range out {
		if m == nil {
			continue
		}
		msgs = append(msgs, toPB(m))
	}
	return &pb.HandleResponse{Result: &pb.HandleResponse_Messages{Messages: &pb.Messages{Messages: msgs}}}
}

func (i impl) Authenticate(ctx context.Context, req *pb.AuthenticateRequest) *pb.AuthenticateResponse {
	a, ok := i.h.(Authenticator)
	if !ok {
		return nil
	}
	id, err := a.Authenticate(ctx, &AuthRequest{Credential: req.GetCredential(), Env: req.GetEnv(), IP: req.GetIp(),
		Origin: req.GetOrigin(), Headers: req.GetHeaders()})
	var rej *RejectError
	switch {
	case errors.As(err, &rej):
		return &pb.AuthenticateResponse{Result: &pb.AuthenticateResponse_Refuse{Refuse: &pb.Reject{Code: rej.Code, Message: rej.Message}}}
	case err != nil:
		return &pb.AuthenticateResponse{Result: &pb.AuthenticateResponse_Error{Error: &pb.Error{Message: err.Error()}}}
	case id == nil:
		return &pb.AuthenticateResponse{Result: &pb.AuthenticateResponse_Error{Error: &pb.Error{Message: "Authenticate returned neither an identity nor an error"}}}
	}
	out := &pb.Identity{Key: id.Key, Envs: id.Envs, HasEnvs: id.Envs != nil}
	if !id.Expires.IsZero() {
		out.ExpiresAt = id.Expires.UnixMilli()
	}
	if id.Claims != nil {
		b, err := json.Marshal(id.Claims)
		if err != nil {
			return &pb.AuthenticateResponse{Result: &pb.AuthenticateResponse_Error{Error: &pb.Error{Message: "claims: " + err.Error()}}}
		}
		out.Claims = b
	}
	return &pb.AuthenticateResponse{Result: &pb.AuthenticateResponse_Identity{Identity: out}}
}

func fromPB(pm *pb.Message) *Message {
	m := &Message{Type: pm.GetType(), ID: pm.GetId(), From: pm.GetFrom(), TS: pm.GetTs()}
	if len(pm.GetClaims()) > 0 {
		_ = json.Unmarshal(pm.GetClaims(), &m.Claims)
	}
	if len(pm.GetData()) > 0 {
		m.Data = pm.GetData()
	}
	if pm.GetHasTo() {
		m.To = append([]string{}, pm.GetTo()...)
	}
	return m
}

func toPB(m *Message) *pb.Message {
	return &pb.Message{Type: m.Type, Data: m.Data, To: m.To, HasTo: m.To != nil, Id: m.ID, From: m.From, Ts: m.TS}
}
