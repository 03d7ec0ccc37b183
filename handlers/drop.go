package handlers

import (
	"context"

	"github.com/pairrelay/relay/core"
)

func init() {
	core.RegisterHandler(core.HandlerSpec{
		Name:    "drop",
		Summary: "Drops every message silently, e.g. to deny a type or a sender.",
		New:     func() core.Handler { return &Drop{} },
	})
}

// Drop drops every message. It has no settings.
type Drop struct{}

// Handle drops m.
func (Drop) Handle(context.Context, *core.Message) ([]*core.Message, error) { return nil, nil }

// NonBlocking: Handle only computes; the host needs no timeout for it.
func (*Drop) NonBlocking() {}
