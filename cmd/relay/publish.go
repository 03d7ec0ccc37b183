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

const publishUsage = `usage: relay publish -token T -type X [-data JSON] [-to ENV,ENV] [-id ID] [-url URL]

Publishes one message through a relay's server API (docs/api.md), as env
api.env, and prints the seq it got. The key comes from RELAY_API_KEY, the
address from -url or RELAY_API_URL (default http://127.0.0.1:8080).
`

// publishCommand is `relay publish`: an operator's way to send a message to
// a token's clients without writing a backend.
func publishCommand(ctx context.Context, args []string, stdout io.Writer) error {
	fset := flag.NewFlagSet("publish", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	base := os.Getenv("RELAY_API_URL")
	if base == "" {
		base = "http://127.0.0.1:8080"
	}
	var m apiclient.Message
	var data, to string
	var timeout time.Duration
	fset.StringVar(&base, "url", base, "relay address")
	fset.StringVar(&m.Token, "token", "", "pairing key of the clients")
	fset.StringVar(&m.Type, "type", "", "message type")
	fset.StringVar(&data, "data", "", "message data (JSON)")
	fset.StringVar(&to, "to", "", "envs to deliver to, comma-separated (default: every env)")
	fset.StringVar(&m.ID, "id", "", "message id (a repeat within the history window is not published again)")
	fset.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the relay")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, publishUsage)
			return nil
		}
		return fmt.Errorf("publish: %w\n%s", err, publishUsage)
	}
	switch {
	case fset.NArg() > 0:
		return fmt.Errorf("publish: unexpected arguments %v\n%s", fset.Args(), publishUsage)
	case m.Token == "" || m.Type == "":
		return fmt.Errorf("publish: -token and -type are required\n%s", publishUsage)
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
