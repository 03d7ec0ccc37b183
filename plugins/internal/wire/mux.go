package wire

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/pairrelay/relay/plugins/internal/proto/relayplugin/v1"
)

// ErrClosed is the error of calls on a Mux closed by its owner.
var ErrClosed = errors.New("plugin connection closed")

// Mux runs many calls at once over one Handle stream: each call gets an id
// and writes its request (one writer at a time), one goroutine hands each
// answer to the call with its id. A call that times out stops waiting and
// tells the plugin; the others are not affected.
type Mux struct {
	stream   pb.Plugin_HandleClient
	cancel   context.CancelFunc
	sendTurn chan struct{} // holds a token while a request is written
	next     atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]chan *pb.HandleResponse // nil once failed

	done chan struct{}
	once sync.Once
	err  error // why the stream ended; set before done is closed
}

// Open starts the Handle stream of client.
func Open(client pb.PluginClient) (*Mux, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.Handle(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	m := &Mux{
		stream:   stream,
		cancel:   cancel,
		sendTurn: make(chan struct{}, 1),
		pending:  map[uint64]chan *pb.HandleResponse{},
		done:     make(chan struct{}),
	}
	go m.recvLoop()
	return m, nil
}

// Call sends msg and waits for its answer, ctx's end or the stream's end.
func (m *Mux) Call(ctx context.Context, msg *pb.Message) (*pb.HandleResponse, error) {
	id := m.next.Add(1)
	ch := make(chan *pb.HandleResponse, 1)
	m.mu.Lock()
	if m.pending == nil {
		m.mu.Unlock()
		return nil, m.Err()
	}
	m.pending[id] = ch
	m.mu.Unlock()

	req := &pb.HandleRequest{CallId: id, Message: msg}
	if deadline, ok := ctx.Deadline(); ok {
		// At least 1 ms: 0 would mean no limit.
		req.TimeoutMs = max(time.Until(deadline).Milliseconds(), 1)
	}
	if err := m.send(ctx, req); err != nil {
		m.forget(id)
		return nil, err
	}
	select {
	case resp := <-ch:
		return resp, nil
	case <-ctx.Done():
		m.forget(id)
		// Best effort, without waiting: a busy stream means the plugin is
		// far behind anyway.
		m.trySend(&pb.HandleRequest{CallId: id, Cancel: true})
		return nil, ctx.Err()
	case <-m.done:
		return nil, m.Err()
	}
}

func (m *Mux) forget(id uint64) {
	m.mu.Lock()
	delete(m.pending, id)
	m.mu.Unlock()
}

// Done is closed when the stream has ended; Err then says why.
func (m *Mux) Done() <-chan struct{} { return m.done }

// Err is why the stream ended, nil while it runs.
func (m *Mux) Err() error {
	select {
	case <-m.done:
		return m.err
	default:
		return nil
	}
}

// InFlight is the number of calls waiting for an answer.
func (m *Mux) InFlight() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}

// Close ends the stream; waiting calls fail with ErrClosed.
func (m *Mux) Close() { m.fail(ErrClosed) }

func (m *Mux) fail(err error) {
	m.once.Do(func() {
		m.err = err
		m.mu.Lock()
		m.pending = nil
		m.mu.Unlock()
		close(m.done)
		m.cancel()
	})
}

// send writes req on the stream. One request is written at a time; a
// caller waiting for its turn gives up when its ctx ends. (The writer
// itself blocks only when the plugin stops reading, until the stream ends.)
func (m *Mux) send(ctx context.Context, req *pb.HandleRequest) error {
	select {
	case m.sendTurn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-m.done:
		return m.Err()
	}
	err := m.stream.Send(req)
	<-m.sendTurn
	if err != nil {
		// Send says io.EOF; Recv is about to report the stream's real
		// error. Wait for it a little, then fail anyway.
		select {
		case <-m.done:
			return m.Err()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
			m.fail(fmt.Errorf("sending to the plugin: %w", err))
			return m.Err()
		}
	}
	return nil
}

func (m *Mux) trySend(req *pb.HandleRequest) {
	select {
	case m.sendTurn <- struct{}{}:
		_ = m.stream.Send(req)
		<-m.sendTurn
	default:
	}
}

func (m *Mux) recvLoop() {
	for {
		resp, err := m.stream.Recv()
		if err != nil {
			m.fail(err)
			return
		}
		m.mu.Lock()
		ch := m.pending[resp.GetCallId()]
		delete(m.pending, resp.GetCallId())
		m.mu.Unlock()
		if ch != nil {
			ch <- resp // buffered: never blocks
		}
	}
}
