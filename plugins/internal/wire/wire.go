// Package wire is the plumbing both ends of a relay plugin share: the
// go-plugin handshake, the go-plugin shim that serves and dials the
// relayplugin.v1 service, the server side of the Handle stream (one
// goroutine per call) and its client side (calls matched by call id). Plugin
// authors never see it: plugins/sdk wraps the server side, the host in
// plugins wraps the client side.
package wire

import (
	"context"
	"math"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/pairrelay/relay/plugins/internal/proto/relayplugin/v1"
)

// Handshake is what relay and its plugins agree on before anything else.
// The cookie is no security: it only stops a plugin binary started by hand
// (or by another go-plugin host) from serving. Non-Go plugins check the same
// environment variable and print AppProtocolVersion as the second field of
// the handshake line.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  AppProtocolVersion,
	MagicCookieKey:   MagicCookieKey,
	MagicCookieValue: MagicCookieValue,
}

// The handshake's constants, also written down in docs/plugins.md and in
// the Node example.
const (
	AppProtocolVersion = 1
	MagicCookieKey     = "RELAY_PLUGIN_COOKIE"
	MagicCookieValue   = "relay-message-plugin-v1"
)

// PluginName is the single plugin type a relay plugin process serves.
const PluginName = "handler"

// GRPCPlugin is go-plugin's view of a relay plugin: on the plugin side it
// registers Service; on the host side it returns a pb.PluginClient.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Service pb.PluginServer
}

// GRPCServer registers the plugin's service.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterPluginServer(s, p.Service)
	return nil
}

// GRPCClient returns the client of the plugin's service.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pb.NewPluginClient(c), nil
}

// NewGRPCServer is the plugin side's gRPC server. It takes a request of any
// size: relay bounds what it sends itself (a seed client's text of
// limits.max_frame_bytes reaches a plugin as data up to six times as large),
// and gRPC's default limit of 4 MiB would end the one stream every call
// shares on a larger one.
func NewGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(math.MaxInt32))...)
}

// Plugins is the plugin set both ends declare.
func Plugins(server pb.PluginServer) plugin.PluginSet {
	return plugin.PluginSet{PluginName: &GRPCPlugin{Service: server}}
}
