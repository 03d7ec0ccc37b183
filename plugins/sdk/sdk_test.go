package sdk_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pairrelay/relay/plugins/sdk"
	"github.com/pairrelay/relay/plugins/sdk/sdktest"
)

type describing struct{ shouter }

func (describing) Describe() sdk.Description {
	return sdk.Description{Name: "shouter", Summary: "Shouts.", Fields: []sdk.Field{{Name: "suffix", Type: "string", Doc: "Appended."}}}
}

// slow answers after data's delay in ms, or when ctx ends.
type slow struct{}

func (slow) Configure([]byte) error { return nil }
func (slow) Handle(ctx context.Context, m *sdk.Message) ([]*sdk.Message, error) {
	var d struct{ Ms int }
	_ = m.DecodeData(&d)
	select {
	case <-time.After(time.Duration(d.Ms) * time.Millisecond):
		return []*sdk.Message{m}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func TestMessageFieldsRoundTrip(t *testing.T) {
	p := sdktest.Start(t, &shouter{}, "")
	in := &sdk.Message{Type: "say", Data: []byte(`{"text":"a"}`), To: []string{"miniapp"}, ID: "c-1", From: "h5", TS: 1764100000000}
	out, err := p.Handle(context.Background(), in)
	if err != nil || len(out) != 1 {
		t.Fatalf("Handle = %v, %v", out, err)
	}
	got := out[0]
	if got.Type != "say" || string(got.Data) != `{"text":"A"}` || len(got.To) != 1 || got.To[0] != "miniapp" ||
		got.ID != "c-1" || got.From != "h5" || got.TS != 1764100000000 {
		t.Fatalf("got %+v", got)
	}
	// nil To stays nil (every other env), empty To stays empty (nobody).
	for _, to := range [][]string{nil, {}} {
		out, _ := p.Handle(context.Background(), &sdk.Message{Type: "say", Data: []byte(`{}`), To: to})
		if (out[0].To == nil) != (to == nil) {
			t.Errorf("To %#v came back as %#v", to, out[0].To)
		}
	}
	// A failure is an error that is not a RejectError.
	_, err = p.Handle(context.Background(), &sdk.Message{Type: "say"})
	if err == nil || err.Error() != "the message has no data" {
		t.Errorf("err = %v", err)
	}
}

func TestDescribe(t *testing.T) {
	p := sdktest.Start(t, &describing{}, "")
	d, err := p.Describe(context.Background())
	if err != nil || d.Name != "shouter" || len(d.Fields) != 1 || d.Fields[0].Name != "suffix" {
		t.Fatalf("Describe = %+v, %v", d, err)
	}
	plain := sdktest.Start(t, &shouter{}, "")
	if d, err := plain.Describe(context.Background()); err != nil || d.Name != "" {
		t.Fatalf("Describe without Describer = %+v, %v", d, err)
	}
}

// TestCallsRunConcurrently: a slow message does not hold up a fast one.
func TestCallsRunConcurrently(t *testing.T) {
	p := sdktest.Start(t, slow{}, "")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if _, err := p.Handle(ctx, &sdk.Message{Type: "x", Data: []byte(`{"ms":10000}`)}); err == nil {
			t.Error("the slow call did not time out")
		}
	}()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	if _, err := p.Handle(context.Background(), &sdk.Message{Type: "x", Data: []byte(`{"ms":1}`)}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("the fast call took %s behind the slow one", d)
	}
	wg.Wait()
}

func TestRejectDefaultsItsCode(t *testing.T) {
	err := sdk.Reject("", "nope")
	if rej, ok := err.(*sdk.RejectError); !ok || rej.Code != "rejected" || rej.Error() != "rejected: nope" {
		t.Fatalf("Reject = %#v", err)
	}
}
