package wire

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/pairrelay/relay/plugins/internal/proto/relayplugin/v1"
)

// fakeImpl echoes the message's type into its data after a random delay,
// or waits for its context on type "wait".
type fakeImpl struct {
	cancelled chan string
}

func (f *fakeImpl) Configure(context.Context, []byte) error       { return nil }
func (f *fakeImpl) Describe(context.Context) *pb.DescribeResponse { return nil }
func (f *fakeImpl) Authenticate(context.Context, *pb.AuthenticateRequest) *pb.AuthenticateResponse {
	return nil
}
func (f *fakeImpl) Handle(ctx context.Context, m *pb.Message) *pb.HandleResponse {
	if m.GetType() == "wait" {
		<-ctx.Done()
		f.cancelled <- m.GetId()
		return ErrorResponse(ctx.Err().Error())
	}
	time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
	echo := &pb.Message{Type: m.GetType(), Data: []byte(fmt.Sprintf("%q", m.GetType()))}
	return &pb.HandleResponse{Result: &pb.HandleResponse_Messages{Messages: &pb.Messages{Messages: []*pb.Message{echo}}}}
}

func serve(t *testing.T, impl Impl) (*Mux, *grpc.Server) {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	pb.RegisterPluginServer(srv, NewServer(impl))
	go func() { _ = srv.Serve(ln) }()
	conn, err := grpc.NewClient("passthrough:///test",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	mux, err := Open(pb.NewPluginClient(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mux.Close(); conn.Close(); srv.Stop() })
	return mux, srv
}

// TestMuxMatchesAnswersToCalls: many concurrent calls, answered out of
// order, each get their own answer.
func TestMuxMatchesAnswersToCalls(t *testing.T) {
	mux, _ := serve(t, &fakeImpl{})
	var wg sync.WaitGroup
	errs := make(chan error, 2000)
	for g := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				typ := fmt.Sprintf("g%d-%d", g, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := mux.Call(ctx, &pb.Message{Type: typ})
				cancel()
				if err != nil {
					errs <- err
					return
				}
				got := resp.GetMessages().GetMessages()
				if len(got) != 1 || got[0].GetType() != typ || string(got[0].GetData()) != fmt.Sprintf("%q", typ) {
					errs <- fmt.Errorf("call %s got %v", typ, resp)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := mux.InFlight(); n != 0 {
		t.Errorf("%d calls still pending", n)
	}
}

// TestMuxCancelReachesThePlugin: a call abandoned by its caller (timeout
// or cancel) ends the plugin's context for it, and no other call.
func TestMuxCancelReachesThePlugin(t *testing.T) {
	impl := &fakeImpl{cancelled: make(chan string, 2)}
	mux, _ := serve(t, impl)

	// A deadline travels as timeout_ms.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	resp, err := mux.Call(ctx, &pb.Message{Type: "wait", Id: "deadline"})
	cancel()
	// The plugin's own deadline may answer first, with an error.
	if !errors.Is(err, context.DeadlineExceeded) && resp.GetError() == nil {
		t.Fatalf("Call = %v, %v; want deadline exceeded", resp, err)
	}
	// A cancel without deadline travels as a cancel request.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := mux.Call(ctx, &pb.Message{Type: "wait", Id: "cancel"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want canceled", err)
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case id := <-impl.cancelled:
			got[id] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("the plugin saw only %v end", got)
		}
	}
	// The stream still serves.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := mux.Call(ctx, &pb.Message{Type: "after"}); err != nil {
		t.Fatal(err)
	}
}

// TestMuxFailsFastWhenThePluginGoes: calls in flight when the stream
// breaks fail at once, and later calls too.
func TestMuxFailsFastWhenThePluginGoes(t *testing.T) {
	impl := &fakeImpl{cancelled: make(chan string, 1)}
	mux, srv := serve(t, impl)
	errc := make(chan error, 1)
	go func() {
		_, err := mux.Call(context.Background(), &pb.Message{Type: "wait"})
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	srv.Stop()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("the call succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call in flight did not fail")
	}
	select {
	case <-mux.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
	if _, err := mux.Call(context.Background(), &pb.Message{Type: "x"}); err == nil || mux.Err() == nil {
		t.Fatalf("a call after the end: %v (Err %v)", err, mux.Err())
	}
}
