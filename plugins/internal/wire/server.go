package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"time"

	pb "github.com/pairrelay/relay/plugins/internal/proto/relayplugin/v1"
)

// Impl is what a plugin does, in protocol terms.
type Impl interface {
	Configure(ctx context.Context, config []byte) error
	Describe(ctx context.Context) *pb.DescribeResponse
	// Handle fills the result of the response; the server sets its call id.
	Handle(ctx context.Context, m *pb.Message) *pb.HandleResponse
	// Authenticate fills the result of an auth check; nil: the plugin does
	// not authenticate (the call answers Unimplemented).
	Authenticate(ctx context.Context, req *pb.AuthenticateRequest) *pb.AuthenticateResponse
}

// NewServer serves impl as the relayplugin.v1 service.
func NewServer(impl Impl) pb.PluginServer { return &server{impl: impl} }

type server struct {
	pb.UnimplementedPluginServer
	impl Impl
}

func (s *server) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("configure panicked: %v", r)
				logPanic("Configure", r)
			}
		}()
		err = s.impl.Configure(ctx, req.GetConfig())
	}()
	if err != nil {
		msg := err.Error()
		if msg == "" {
			msg = "configure failed"
		}
		return &pb.ConfigureResponse{Error: msg}, nil
	}
	return &pb.ConfigureResponse{}, nil
}

func (s *server) Describe(ctx context.Context, _ *pb.DescribeRequest) (*pb.DescribeResponse, error) {
	d := s.impl.Describe(ctx)
	if d == nil {
		d = &pb.DescribeResponse{}
	}
	return d, nil
}

// Authenticate answers an auth check; a panic fails the check, not the process.
func (s *server) Authenticate(ctx context.Context, req *pb.AuthenticateRequest) (resp *pb.AuthenticateResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			logPanic("Authenticate", r)
			resp = &pb.AuthenticateResponse{Result: &pb.AuthenticateResponse_Error{Error: &pb.Error{Message: fmt.Sprintf("plugin panicked: %v", r)}}}
		}
	}()
	if resp = s.impl.Authenticate(ctx, req); resp == nil {
		return s.UnimplementedPluginServer.Authenticate(ctx, req)
	}
	return resp, nil
}

// Handle runs each call in a goroutine of its own, so that a slow call never
// delays another, and answers as each finishes.
func (s *server) Handle(stream pb.Plugin_HandleServer) error {
	hs := &handleStream{stream: stream, impl: s.impl, calls: map[uint64]context.CancelFunc{}}
	defer hs.close()
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if req.GetCancel() {
			hs.finish(req.GetCallId())
			continue
		}
		var ctx context.Context
		var cancel context.CancelFunc
		if ms := req.GetTimeoutMs(); ms > 0 {
			ctx, cancel = context.WithTimeout(stream.Context(), time.Duration(ms)*time.Millisecond)
		} else {
			ctx, cancel = context.WithCancel(stream.Context())
		}
		hs.mu.Lock()
		hs.calls[req.GetCallId()] = cancel
		hs.mu.Unlock()
		go hs.run(ctx, req)
	}
}

type handleStream struct {
	stream pb.Plugin_HandleServer
	impl   Impl

	mu    sync.Mutex
	calls map[uint64]context.CancelFunc

	sendMu sync.Mutex
	closed bool // the RPC has ended: no more Send
}

func (hs *handleStream) run(ctx context.Context, req *pb.HandleRequest) {
	resp := safeHandle(ctx, hs.impl, req.GetMessage())
	resp.CallId = req.GetCallId()
	hs.finish(req.GetCallId())
	hs.sendMu.Lock()
	if !hs.closed {
		_ = hs.stream.Send(resp)
	}
	hs.sendMu.Unlock()
}

// finish cancels a call's context and forgets it.
func (hs *handleStream) finish(id uint64) {
	hs.mu.Lock()
	cancel := hs.calls[id]
	delete(hs.calls, id)
	hs.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (hs *handleStream) close() {
	hs.mu.Lock()
	for id, cancel := range hs.calls {
		cancel()
		delete(hs.calls, id)
	}
	hs.mu.Unlock()
	hs.sendMu.Lock()
	hs.closed = true
	hs.sendMu.Unlock()
}

// safeHandle turns a panic into an error answer: a plugin bug fails one
// message, not the process.
func safeHandle(ctx context.Context, impl Impl, m *pb.Message) (resp *pb.HandleResponse) {
	defer func() {
		if r := recover(); r != nil {
			logPanic("Handle", r)
			resp = ErrorResponse(fmt.Sprintf("plugin panicked: %v", r))
		}
	}()
	if m == nil {
		m = &pb.Message{}
	}
	resp = impl.Handle(ctx, m)
	if resp == nil {
		resp = &pb.HandleResponse{Result: &pb.HandleResponse_Drop{Drop: &pb.Drop{}}}
	}
	return resp
}

// ErrorResponse is a failure answer.
func ErrorResponse(msg string) *pb.HandleResponse {
	return &pb.HandleResponse{Result: &pb.HandleResponse_Error{Error: &pb.Error{Message: msg}}}
}

// logPanic writes a recovered panic to stderr as one hclog-style JSON line,
// which relay logs as one error with the stack.
func logPanic(where string, r any) {
	line, _ := json.Marshal(map[string]string{
		"@level":   "error",
		"@message": fmt.Sprintf("panic in %s: %v", where, r),
		"stack":    string(debug.Stack()),
	})
	fmt.Fprintf(os.Stderr, "%s\n", line)
}
