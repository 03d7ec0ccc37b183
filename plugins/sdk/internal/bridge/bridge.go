// Package bridge lets sdktest serve an sdk.Handler in-process without
// package sdk exporting protocol types: sdk sets Service from its init.
package bridge

import pb "github.com/pairrelay/relay/plugins/internal/proto/relayplugin/v1"

// Service returns the relayplugin.v1 service of h, an sdk.Handler. Set by
// package sdk.
var Service func(h any) pb.PluginServer
