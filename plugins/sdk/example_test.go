package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pairrelay/relay/plugins/sdk"
	"github.com/pairrelay/relay/plugins/sdk/sdktest"
)

// shouter upper-cases data.text, drops "noise" and refuses "spam".
type shouter struct {
	Suffix string `json:"suffix"`
}

func (s *shouter) Configure(config []byte) error { return sdk.DecodeConfig(config, s) }

func (s *shouter) Handle(ctx context.Context, m *sdk.Message) ([]*sdk.Message, error) {
	switch m.Type {
	case "noise":
		return sdk.Drop()
	case "spam":
		return nil, sdk.Reject("spam", "no spam here")
	}
	var data struct {
		Text string `json:"text"`
	}
	if err := m.DecodeData(&data); err != nil {
		return nil, err // a failure: the route's on_error decides
	}
	data.Text = strings.ToUpper(data.Text) + s.Suffix
	return []*sdk.Message{m}, m.SetData(data)
}

// A plugin's main is one line: func main() { sdk.Serve(&shouter{}) }.
// sdktest runs the same handler in-process, over the real protocol.
func Example() {
	p, err := sdktest.New(&shouter{}, []byte(`{"suffix":"!"}`))
	if err != nil {
		panic(err)
	}
	defer p.Close()
	ctx := context.Background()

	out, _ := p.Handle(ctx, &sdk.Message{Type: "say", Data: []byte(`{"text":"hi"}`), From: "h5"})
	fmt.Printf("%s %s from %s\n", out[0].Type, out[0].Data, out[0].From)

	out, err = p.Handle(ctx, &sdk.Message{Type: "noise"})
	fmt.Println(len(out), err)

	_, err = p.Handle(ctx, &sdk.Message{Type: "spam"})
	var rej *sdk.RejectError
	fmt.Println(errors.As(err, &rej), rej.Code)

	_, err = sdktest.New(&shouter{}, []byte(`{"sufix":"!"}`))
	fmt.Println(err)
	// Output:
	// say {"text":"HI!"} from h5
	// 0 <nil>
	// true spam
	// configure: config: json: unknown field "sufix"
}
