package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pairrelay/relay/config"
)

// Handler is one step of a route: it passes a message on (possibly
// changed), drops it (no messages), fans it out (several) or rejects it
// (Reject: the sender gets relay.error and nothing is forwarded). Any other
// error is a failure, which the route's on_error turns into a reject, a
// pass or a drop. Handle must honour ctx, which carries the route's
// timeout. A handler that changes Data assigns a new slice; it never writes
// into the old one, which may be shared.
type Handler interface {
	Handle(ctx context.Context, m *Message) ([]*Message, error)
}

// NonBlocking marks a handler whose Handle only computes and never waits
// (validate, transform, filter…): the host calls it without arming the
// route's timeout, which would cost more than the handler itself.
type NonBlocking interface {
	NonBlocking()
}

// Pipeline routes messages by type through handler chains. The zero
// Pipeline forwards everything unchanged.
type Pipeline struct {
	routes    []*route
	unmatched string

	inflight atomic.Int64
	retired  atomic.Bool
}

type route struct {
	name     string
	match    config.Match
	exact    bool // match.Type has no glob characters
	to       []string
	onError  string
	timeout  time.Duration
	maxFrame int // limits.max_frame_bytes, which what handlers return must meet
	steps    []step
}

type step struct {
	name     string
	handler  Handler
	bounded  bool // NonBlocking: no timeout needed
	results  [resultCount]prometheus.Counter
	duration prometheus.Observer
}

// Outcomes of one handler call, as counted in relay_handler_results_total.
const (
	resultPassed = iota
	resultDropped
	resultFanout
	resultRejected
	resultFailed
	resultCount
)

var resultNames = [resultCount]string{"passed", "dropped", "fanout", "rejected", "failed"}

// Error codes of pipeline refusals.
const (
	ErrUnknownType   = "unknown_type"
	ErrHandlerFailed = "handler_failed"
)

// BuildPipeline provisions every route's handlers from cfg. It reports every
// broken handler at once and closes what it provisioned when any fails.
func BuildPipeline(ctx context.Context, cfg *config.Config, configPath string, log *slog.Logger, metrics *Metrics) (*Pipeline, error) {
	return BuildPipelineWith(ctx, cfg, configPath, PipelineOptions{Log: log, Metrics: metrics})
}

// PipelineOptions are what a pipeline is built with besides its config.
type PipelineOptions struct {
	Log     *slog.Logger // nil: discard
	Metrics *Metrics     // nil: counted nowhere
	// Transport, when set, gives each route's handlers the transport of
	// their outgoing HTTP requests (see ProvisionEnv.Transport).
	Transport func(route string) http.RoundTripper
}

// BuildPipelineWith is BuildPipeline with every option.
func BuildPipelineWith(ctx context.Context, cfg *config.Config, configPath string, opts PipelineOptions) (*Pipeline, error) {
	log, metrics := opts.Log, opts.Metrics
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{unmatched: cfg.Unmatched}
	if p.unmatched == "" {
		p.unmatched = config.FateForward
	}
	// What handlers return is held to the limit client frames are held to:
	// it is stored in history and sent to receivers all the same.
	maxFrame := cfg.Limits.MaxFrameBytes
	if maxFrame <= 0 {
		maxFrame = config.Default().Limits.MaxFrameBytes
	}
	baseDir := "."
	if configPath != "" {
		baseDir = filepath.Dir(configPath)
	}
	var errs []error
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		r := &route{name: rc.RouteName(), match: rc.Match, exact: !strings.ContainsAny(rc.Match.Type, `*?[\`),
			to: rc.To, onError: rc.OnError, timeout: rc.Timeout, maxFrame: maxFrame}
		for j := range rc.Handlers {
			hc := &rc.Handlers[j]
			env := ProvisionEnv{Route: r.name, BaseDir: baseDir, Config: cfg,
				Log: log.With("route", r.name, "handler", hc.Handler)}
			if opts.Transport != nil {
				env.Transport = opts.Transport(r.name)
			}
			h, err := BuildHandler(ctx, hc, env)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			r.steps = append(r.steps, newStep(hc.Handler, h, r.name, metrics))
		}
		p.routes = append(p.routes, r)
	}
	if len(errs) > 0 {
		p.Close()
		return nil, errors.Join(errs...)
	}
	return p, nil
}

func newStep(name string, h Handler, routeName string, metrics *Metrics) step {
	_, bounded := h.(NonBlocking)
	s := step{name: name, handler: h, bounded: bounded}
	if metrics == nil {
		metrics = discardMetrics
	}
	for i := range s.results {
		s.results[i] = metrics.handlerResults.WithLabelValues(routeName, name, resultNames[i])
	}
	s.duration = metrics.handlerDuration.WithLabelValues(routeName, name)
	return s
}

// discardMetrics serve pipelines built without a server (relay check).
var discardMetrics = NewMetrics()

// Empty reports whether the pipeline forwards everything unchanged.
func (p *Pipeline) Empty() bool {
	return len(p.routes) == 0 && (p.unmatched == "" || p.unmatched == config.FateForward)
}

// Close closes every handler. Use Retire on a pipeline that may be in use.
func (p *Pipeline) Close() {
	for _, r := range p.routes {
		for _, s := range r.steps {
			_ = closeHandler(s.handler)
		}
	}
}

// enter marks a message in flight; it fails on a retired pipeline.
func (p *Pipeline) enter() bool {
	p.inflight.Add(1)
	if p.retired.Load() {
		p.inflight.Add(-1)
		return false
	}
	return true
}

func (p *Pipeline) exit() { p.inflight.Add(-1) }

// Retire waits for the messages still inside the pipeline, then closes it.
func (p *Pipeline) Retire() {
	p.retired.Store(true)
	for p.inflight.Load() > 0 {
		time.Sleep(5 * time.Millisecond)
	}
	p.Close()
}

func (r *route) matches(m *Message) bool {
	if r.exact {
		if m.Type != r.match.Type {
			return false
		}
		if len(r.match.From) == 0 {
			return true
		}
	}
	return r.match.Matches(m.Type, m.From)
}

// Process runs m through its route and returns what to publish, with the
// name of the route that decided.
func (p *Pipeline) Process(ctx context.Context, m *Message) ([]*Message, string, error) {
	if p.Empty() {
		return []*Message{m}, "", nil
	}
	m.Resolve()
	var r *route
	for _, candidate := range p.routes {
		if candidate.matches(m) {
			r = candidate
			break
		}
	}
	if r == nil {
		switch p.unmatched {
		case config.FateDrop:
			return nil, "", nil
		case config.FateReject:
			return nil, "", &ClientError{Code: ErrUnknownType, Message: fmt.Sprintf("no route accepts messages of type %q", m.Type)}
		}
		return []*Message{m}, "", nil
	}
	msgs := []*Message{m}
	// One clock reading ends a handler's time and starts the next one's.
	now := time.Now()
	for i := range r.steps {
		s := &r.steps[i]
		if len(msgs) == 1 {
			// The common case: the handler's answer is the next input as it is.
			out, end, err := r.call(ctx, s, msgs[0], now)
			if err != nil {
				return nil, r.name, err
			}
			msgs, now = out, end
		} else {
			var next []*Message
			for _, in := range msgs {
				out, end, err := r.call(ctx, s, in, now)
				if err != nil {
					return nil, r.name, err
				}
				next, now = append(next, out...), end
			}
			msgs = next
		}
		if len(msgs) == 0 {
			return nil, r.name, nil
		}
	}
	if r.to != nil {
		for _, out := range msgs {
			out.To = narrow(out.To, r.to)
		}
	}
	return msgs, r.name, nil
}

// call runs one handler on one message with the route's timeout, counting
// and timing it from start, and applies on_error to a failure. It returns
// when the handler ended.
func (r *route) call(ctx context.Context, s *step, m *Message, start time.Time) ([]*Message, time.Time, error) {
	var out []*Message
	var err error
	if s.bounded {
		out, err = s.handler.Handle(ctx, m)
	} else {
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		out, err = s.handler.Handle(ctx, m)
		if err == nil && ctx.Err() != nil {
			err = fmt.Errorf("timed out after %s", r.timeout)
		}
		cancel()
	}
	end := time.Now()
	s.duration.Observe(end.Sub(start).Seconds())
	out, err = r.settle(s, m, out, err)
	return out, end, err
}

// settle counts a handler's result and applies on_error to a failure. A
// message too large for limits.max_frame_bytes among what the handler
// returned makes the call a failure, so that the route's on_error decides
// about oversized output exactly as about any other failure.
func (r *route) settle(s *step, m *Message, out []*Message, err error) ([]*Message, error) {
	if err == nil {
		err = r.oversize(out)
	}
	if err == nil {
		switch len(out) {
		case 0:
			s.results[resultDropped].Inc()
		case 1:
			s.results[resultPassed].Inc()
		default:
			s.results[resultFanout].Inc()
		}
		return out, nil
	}
	var cerr *ClientError
	if errors.As(err, &cerr) {
		s.results[resultRejected].Inc()
		return nil, boundRejection(cerr)
	}
	s.results[resultFailed].Inc()
	switch r.onError {
	case config.FatePass:
		// A handler that changed its input in place before it failed may
		// have left nothing within the limit to pass on.
		if m.fitsFrame(r.maxFrame) {
			return []*Message{m}, nil
		}
		err = fmt.Errorf("%w; its input, changed in place, is too large to pass on", err)
	case config.FateDrop:
		return nil, nil
	}
	// The failure's details (an endpoint's address, a stack of errors) go
	// to the log only; the sender gets the ref to quote.
	return nil, &ClientError{Code: ErrHandlerFailed, Message: fmt.Sprintf("handler %s failed; quote the ref to the operator", s.name), cause: err}
}

// oversize is the failure of an answer holding a message larger than
// limits.max_frame_bytes, nil when every message fits.
func (r *route) oversize(out []*Message) error {
	for i, o := range out {
		if o.fitsFrame(r.maxFrame) {
			continue
		}
		which := "a message"
		if len(out) > 1 {
			which = fmt.Sprintf("message %d of %d", i+1, len(out))
		}
		return fmt.Errorf("answered %s of %d bytes, more than limits.max_frame_bytes (%d)", which, o.frameSize(), r.maxFrame)
	}
	return nil
}

// Bounds of a handler's refusal as the sender gets it in relay.error.
const (
	maxRejectCode = 64
	maxRejectText = 1000
)

// boundRejection keeps a refusal a handler made within what relay.error
// carries: a plugin or endpoint cannot make relay send a sender a frame of
// any size. A code too long becomes rejected; a text too long is cut.
func boundRejection(cerr *ClientError) *ClientError {
	if len(cerr.Code) <= maxRejectCode && len(cerr.Message) <= maxRejectText && cerr.Code != "" {
		return cerr
	}
	c := *cerr // the handler may hand out one value to every caller
	if len(c.Code) > maxRejectCode || c.Code == "" {
		c.Code = ErrRejected
	}
	if len(c.Message) > maxRejectText {
		n := maxRejectText
		for n > 0 && !utf8.RuneStart(c.Message[n]) {
			n--
		}
		c.Message = c.Message[:n] + "…"
	}
	return &c
}

// narrow applies a route's envs to a message's own to: the route's when the
// message names none, otherwise the envs both name.
func narrow(own, route []string) []string {
	if own == nil {
		return route
	}
	both := make([]string, 0, len(own))
	for _, env := range own {
		for _, r := range route {
			if env == r {
				both = append(both, env)
				break
			}
		}
	}
	return both
}

func asClientError(err error) *ClientError {
	var cerr *ClientError
	if errors.As(err, &cerr) {
		return cerr
	}
	return &ClientError{Code: ErrRejected, Message: err.Error()}
}
