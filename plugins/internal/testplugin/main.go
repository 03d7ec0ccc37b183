// Command testplugin is the plugin the host's tests run. What it does with
// a message depends on the message's type up to its first dot (fail.pass
// fails); its config and flags make it fail in the ways a real plugin can.
//
//	upper    data.text in upper case, data.tag set to config's tag
//	drop     dropped
//	reject   rejected: forbidden, "no thanks"
//	fanout   three messages of type fanout.part, data {"part": 1..3}
//	hang     no answer until relay gives up (ctx ends)
//	fail     a failure: boom
//	panic    a panic inside Handle
//	badjson  answers data that is not JSON
//	pid      data {"pid": the process id}
//	big      one message per entry of data.sizes, each with data a JSON
//	         string of that many bytes (quotes included)
//	log      prints data.text to stderr and stdout, passes
//	spew     prints data.n lines to stderr, passes
//	exit     the process exits with 2 (a crash)
//	anything else passes unchanged
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pairrelay/relay/plugins/sdk"
)

type testPlugin struct {
	Tag           string `json:"tag"`
	FailConfigure string `json:"fail_configure"`
}

func (p *testPlugin) Configure(config []byte) error {
	if err := sdk.DecodeConfig(config, p); err != nil {
		return err
	}
	if p.FailConfigure != "" {
		return errors.New(p.FailConfigure)
	}
	return nil
}

func (p *testPlugin) Describe() sdk.Description {
	return sdk.Description{Name: "testplugin", Summary: "Does what the message type says.",
		Fields: []sdk.Field{{Name: "tag", Type: "string", Doc: "Set as data.tag by upper."}}}
}

func (p *testPlugin) Handle(ctx context.Context, m *sdk.Message) ([]*sdk.Message, error) {
	kind, _, _ := strings.Cut(m.Type, ".")
	switch kind {
	case "upper":
		var data map[string]any
		if err := m.DecodeData(&data); err != nil {
			return nil, sdk.Reject("invalid_data", err.Error())
		}
		text, _ := data["text"].(string)
		data["text"] = strings.ToUpper(text)
		data["tag"] = p.Tag
		return []*sdk.Message{m}, m.SetData(data)
	case "drop":
		return sdk.Drop()
	case "reject":
		return nil, sdk.Reject("forbidden", "no thanks")
	case "fanout":
		var out []*sdk.Message
		for i := 1; i <= 3; i++ {
			out = append(out, &sdk.Message{Type: "fanout.part", Data: []byte(fmt.Sprintf(`{"part":%d}`, i))})
		}
		return out, nil
	case "hang":
		<-ctx.Done()
		return nil, ctx.Err()
	case "fail":
		return nil, errors.New("boom")
	case "panic":
		panic("test panic")
	case "badjson":
		m.Data = []byte("{not json")
		return []*sdk.Message{m}, nil
	case "log":
		var data struct{ Text string }
		_ = m.DecodeData(&data)
		log.Print(data.Text)
		fmt.Println("stdout:", data.Text)
		return []*sdk.Message{m}, nil
	case "spew":
		var data struct{ N int }
		_ = m.DecodeData(&data)
		w := bufio.NewWriter(os.Stderr)
		for i := range data.N {
			fmt.Fprintf(w, "spew line %d of %d\n", i+1, data.N)
		}
		_ = w.Flush()
		return []*sdk.Message{m}, nil
	case "exit":
		os.Exit(2)
	case "pid":
		return []*sdk.Message{m}, m.SetData(map[string]int{"pid": os.Getpid()})
	case "big":
		var data struct{ Sizes []int }
		if err := m.DecodeData(&data); err != nil {
			return nil, sdk.Reject("invalid_data", err.Error())
		}
		var out []*sdk.Message
		for _, n := range data.Sizes {
			b := bytes.Repeat([]byte{'x'}, max(n, 2))
			b[0], b[len(b)-1] = '"', '"'
			out = append(out, &sdk.Message{Type: "big.part", Data: b})
		}
		return out, nil
	case "claims":
		return []*sdk.Message{m}, m.SetData(map[string]any{"claims": m.Claims})
	}
	return []*sdk.Message{m}, nil
}

// Authenticate admits by what the credential says, for the auth provider's tests:
// admit:KEY:ENVS:TTL (ENVS comma-separated, * for any; TTL seconds, 0 for
// no expiry, negative for one in the past), refuse, expired, fail, panic.
func (p *testPlugin) Authenticate(ctx context.Context, req *sdk.AuthRequest) (*sdk.Identity, error) {
	parts := strings.Split(req.Credential, ":")
	switch parts[0] {
	case "admit":
		if len(parts) != 4 {
			return nil, sdk.Refuse("admit:KEY:ENVS:TTL")
		}
		id := &sdk.Identity{Key: parts[1], Claims: map[string]any{"env": req.Env, "ua": req.Headers["User-Agent"], "tag": p.Tag}}
		if c, ok := req.Headers["Cookie"]; ok {
			id.Claims["cookie"] = c // the test checks it never gets here
		}
		if parts[2] != "*" {
			id.Envs = strings.Split(parts[2], ",")
		}
		if ttl, _ := strconv.Atoi(parts[3]); ttl != 0 {
			id.Expires = time.Now().Add(time.Duration(ttl) * time.Second)
		}
		return id, nil
	case "expired":
		return nil, sdk.Expired("that credential is too old")
	case "fail":
		return nil, errors.New("the user store is down")
	case "panic":
		panic("authenticate broke")
	}
	return nil, sdk.Refuse("not on the list")
}

func main() {
	exitAtStart := flag.String("exit-at-start", "", "print this to stderr and exit with 3 before serving")
	flag.Parse()
	if *exitAtStart != "" {
		fmt.Fprintln(os.Stderr, *exitAtStart)
		os.Exit(3)
	}
	sdk.Serve(&testPlugin{})
}
