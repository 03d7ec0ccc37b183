package config

import (
	"strings"
	"testing"
)

// A problem about a value that came from ${VAR} names the reference, never
// the value: it may be a secret, and problems go to logs and terminals.
func TestProblemsNeverShowExpandedValues(t *testing.T) {
	cleanEnv(t)
	const secret = "s3cr3t-Pa55w0rd-do-not-print"
	t.Setenv("RELAY_TEST_SECRET", secret)
	t.Setenv("RELAY_TEST_QUOTES", `s3cr3t-"quoted\value`)
	t.Setenv("RELAY_TEST_MULTI", "s3cr3t-line1\ns3cr3t-line2")
	tests := []struct{ name, src, want string }{
		{"a bad duration", "heartbeat:\n  interval: ${RELAY_TEST_SECRET}\n",
			"relay.yaml:2: heartbeat.interval: must be a duration such as 10s, 1m30s or 500ms, got ${RELAY_TEST_SECRET}"},
		{"a quoted bad duration", "heartbeat:\n  interval: \"${RELAY_TEST_SECRET}\"\n",
			"got ${RELAY_TEST_SECRET}"},
		{"a bad integer", "history:\n  size: ${RELAY_TEST_SECRET}\n", "history.size: must be an integer, got ${RELAY_TEST_SECRET}"},
		{"a bad choice", "log:\n  level: ${RELAY_TEST_SECRET}\n", "log.level: must be debug, info, warn or error, got ${RELAY_TEST_SECRET}"},
		{"a bad address", "listen: ${RELAY_TEST_SECRET}\n", "listen: must be host:port"},
		{"a value with quotes and a backslash", "log:\n  level: '${RELAY_TEST_QUOTES}'\n", "got ${RELAY_TEST_QUOTES}"},
		{"inside a longer value", "log:\n  level: x-${RELAY_TEST_SECRET}-y\n", "got \"x-${RELAY_TEST_SECRET}-y\""},
		{"a value over two lines, with a problem after it", "log:\n  format: \"${RELAY_TEST_MULTI}\"\n  level: nope\n",
			"relay.yaml:4: log.level: must be debug, info, warn or error, got \"nope\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, probs := ParseAll([]byte(tt.src), "relay.yaml")
			if len(probs) == 0 {
				t.Fatalf("no problems for %q", tt.src)
			}
			all := probs.Error()
			for _, leak := range []string{"s3cr3t", "Pa55w0rd"} {
				if strings.Contains(all, leak) {
					t.Errorf("the value of a ${VAR} is in the problems:\n%s", all)
				}
			}
			if !strings.Contains(all, tt.want) {
				t.Errorf("problems\n%s\ndo not contain %q", all, tt.want)
			}
		})
	}
}

// Only values standing on their own are replaced: a short value that is
// part of a longer word in a message stays as it is.
func TestRedactKeepsOtherWords(t *testing.T) {
	probs := redact(Problems{{Line: 1, Message: `must be at least 1s, got "ab"; abc and ab-c`}},
		[]substitution{{ref: "${V}", val: "ab", first: 1, last: 1}, {ref: "${S}", val: "1s", first: 2, last: 2}})
	if got, want := probs[0].Message, `must be at least 1s, got ${V}; abc and ${V}-c`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
