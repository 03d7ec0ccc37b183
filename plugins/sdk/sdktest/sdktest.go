// Package sdktest runs a plugin's sdk.Handler in-process for unit tests:
// the handler is served over an in-memory gRPC connection and called through
// the same protocol, stream and conversions relay uses, without building a
// binary or starting a process.
//
//	func TestEnricher(t *testing.T) {
//		p := sdktest.Start(t, &enricher{}, `{"field":"enrichedAt"}`)
//		out, err := p.Handle(context.Background(), &sdk.Message{Type: "addMaterial", Data: []byte(`{"id":1}`)})
//		…
//	}
package sdktest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/pairrelay/relay/plugins/internal/proto/relayplugin/v1"
	"github.com/pairrelay/relay/plugins/internal/wire"
	"github.com/pairrelay/relay/plugins/sdk"
	"github.com/pairrelay/relay/plugins/sdk/internal/bridge"
)

// Plugin is a handler served in-process.
type Plugin struct {
	server *grpc.Server
	conn   *grpc.ClientConn
	client pb.PluginClient
	mux    *wire.Mux
}

// Start serves h, configures it with config (JSON; "" means {}) and stops
// it when the test ends. A Configure error fails the test; use New to test
// Configure errors.
func Start(t testing.TB, h sdk.Handler, config string) *Plugin {
	t.Helper()
	p, err := New(h, []byte(config))
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// New serves h and configures it with config (nil or empty means {}), as
// relay does when it starts the plugin. Close it when done.
func New(h sdk.Handler, config []byte) (*Plugin, error) {
	ln := bufconn.Listen(1 << 20)
	server := wire.NewGRPCServer(nil)
	pb.RegisterPluginServer(server, bridge.Service(h))
	go func() { _ = server.Serve(ln) }()
	conn, err := grpc.NewClient("passthrough:///sdktest",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		server.Stop()
		return nil, err
	}
	p := &Plugin{server: server, conn: conn, client: pb.NewPluginClient(conn)}
	if len(config) == 0 {
		config = []byte("{}")
	}
	resp, err := p.client.Configure(context.Background(), &pb.ConfigureRequest{Config: config})
	if err == nil && resp.GetError() != "" {
		err = errors.New(resp.GetError())
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("configure: %w", err)
	}
	if p.mux, err = wire.Open(p.client); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Handle sends m to the plugin and returns its answer as relay reads it:
// the messages that go on (none: dropped), an *sdk.RejectError for a
// deliberate refusal, or another error for a failure (which the route's
// on_error would decide about), including ctx's end.
func (p *Plugin) Handle(ctx context.Context, m *sdk.Message) ([]*sdk.Message, error) {
	resp, err := p.mux.Call(ctx, &pb.Message{Type: m.Type, Data: m.Data, To: m.To, HasTo: m.To != nil, Id: m.ID, From: m.From, Ts: m.TS})
	if err != nil {
		return nil, err
	}
	switch r := resp.GetResult().(type) {
	case *pb.HandleResponse_Messages:
		var out []*sdk.Message
		for _, pm := range r.Messages.GetMessages() {
			om := &sdk.Message{Type: pm.GetType(), ID: pm.GetId(), From: pm.GetFrom(), TS: pm.GetTs()}
			if len(pm.GetData()) > 0 {
				om.Data = pm.GetData()
			}
			if pm.GetHasTo() {
				om.To = append([]string{}, pm.GetTo()...)
			}
			out = append(out, om)
		}
		return out, nil
	case *pb.HandleResponse_Drop:
		return nil, nil
	case *pb.HandleResponse_Reject:
		return nil, &sdk.RejectError{Code: r.Reject.GetCode(), Message: r.Reject.GetMessage()}
	case *pb.HandleResponse_Error:
		return nil, errors.New(r.Error.GetMessage())
	}
	return nil, errors.New("sdktest: the plugin answered with no result")
}

// Describe returns what the plugin says about itself (empty without
// sdk.Describer).
func (p *Plugin) Describe(ctx context.Context) (sdk.Description, error) {
	resp, err := p.client.Describe(ctx, &pb.DescribeRequest{})
	if err != nil {
		return sdk.Description{}, err
	}
	d := sdk.Description{Name: resp.GetName(), Summary: resp.GetSummary()}
	for _, f := range resp.GetFields() {
		d.Fields = append(d.Fields, sdk.Field{Name: f.GetName(), Type: f.GetType(), Doc: f.GetDoc(), Default: f.GetDefault(), Required: f.GetRequired()})
	}
	return d, nil
}

// Close stops the in-process plugin.
func (p *Plugin) Close() {
	if p.mux != nil {
		p.mux.Close()
	}
	p.conn.Close()
	p.server.Stop()
}
