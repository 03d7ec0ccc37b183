package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pairrelay/relay/apiclient"
)

// publishCommand is `relay publish`: an operator's way to send a message to
// a token's clients without writing a backend.
var publishCommand = &command{
	name:     "publish",
	synopsis: "-token T -type X [-data JSON] [-to ENV,ENV] [-id ID] [-url URL]",
	summary:  "publish a message through a relay's server API (docs/api.md)",
	about: "Publishes one message through a relay's server API (docs/api.md), as env api.env, and prints\n" +
		"the seq it got. The key comes from RELAY_API_KEY, the address from -url or RELAY_API_URL\n" +
		"(default http://127.0.0.1:8080).",
	setup: func(fs *flag.FlagSet, out outputs) func(context.Context, []string) error {
		base := os.Getenv("RELAY_API_URL")
		if base == "" {
			base = "http://127.0.0.1:8080"
		}
		var m apiclient.Message
		var data, to string
		var timeout time.Duration
		fs.StringVar(&base, "url", base, "relay address")
		fs.StringVar(&m.Token, "token", "", "pairing key of the clients (required)")
		fs.StringVar(&m.Type, "type", "", "message type (required)")
		fs.StringVar(&data, "data", "", "message data (JSON)")
		fs.StringVar(&to, "to", "", "envs to deliver to, comma-separated (default: every env)")
		fs.StringVar(&m.ID, "id", "", "message id (a repeat within the history window is not published again)")
		fs.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the relay")
		return func(ctx context.Context, args []string) error {
			return publish(ctx, args, out.stdout, base, m, data, to, timeout)
		}
	},
}

func publish(ctx context.Context, args []string, stdout io.Writer, base string, m apiclient.Message, data, to string, timeout time.Duration) error {
	switch {
	case len(args) > 0:
		return usageErr(fmt.Sprintf("publish: unexpected arguments %v", args))
	case m.Token == "" || m.Type == "":
		return usageErr("publish: -token and -type are required")
	case data != "" && !json.Valid([]byte(data)):
		return errors.New(`publish: -data must be JSON (quote a string: -data '"text"')`)
	}
	key := os.Getenv("RELAY_API_KEY")
	if key == "" {
		return errors.New("publish: set RELAY_API_KEY to one of the relay's api.keys")
	}
	if data != "" {
		m.Data = json.RawMessage(data)
	}
	if to != "" {
		m.To = strings.Split(to, ",")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := apiclient.New(base, key).Publish(ctx, m)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	switch {
	case res.Dropped:
		fmt.Fprintln(stdout, "dropped by the route (nothing published)")
	case res.Duplicate:
		fmt.Fprintf(stdout, "seq %d (a repeat of id %q: not published again)\n", res.Seq, m.ID)
	default:
		fmt.Fprintf(stdout, "seq %d\n", res.Seq)
	}
	return nil
}
