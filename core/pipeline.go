package core

import (
	"context"
	"errors"
)

// Handler is one step of a route: it passes a message on (possibly
// changed), drops it (no messages), fans it out (several) or rejects it
// (an error: the sender gets relay.error and nothing is forwarded).
type Handler interface {
	Handle(ctx context.Context, m *Message) ([]*Message, error)
}

// Pipeline routes messages by type through handler chains. The zero
// Pipeline forwards everything unchanged.
type Pipeline struct {
	routes []*Route
}

// Route is a named handler chain.
type Route struct {
	Name     string
	Handlers []Handler
}

// Empty reports whether the pipeline forwards everything unchanged.
func (p *Pipeline) Empty() bool { return len(p.routes) == 0 }

// Process runs m through its route and returns what to publish, with the
// name of the route that decided.
func (p *Pipeline) Process(ctx context.Context, m *Message) ([]*Message, string, error) {
	if p.Empty() {
		return []*Message{m}, "", nil
	}
	m.Resolve()
	// Routing by type arrives with the routes issue; until then every
	// message takes the first route.
	r := p.routes[0]
	msgs := []*Message{m}
	for _, handler := range r.Handlers {
		var next []*Message
		for _, in := range msgs {
			out, err := handler.Handle(ctx, in)
			if err != nil {
				return nil, r.Name, err
			}
			next = append(next, out...)
		}
		msgs = next
		if len(msgs) == 0 {
			break
		}
	}
	return msgs, r.Name, nil
}

func asClientError(err error) *ClientError {
	var cerr *ClientError
	if errors.As(err, &cerr) {
		return cerr
	}
	return &ClientError{Code: ErrRejected, Message: err.Error()}
}
