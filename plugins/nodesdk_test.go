package plugins

import (
	"os/exec"
	"testing"
)

// The Node SDK's and the Node example's own tests (node --test), which run
// the plugin logic through the SDK's conversions in-process; the e2e tests
// run the example through relay.
func TestNodeSDKAndExampleUnitTests(t *testing.T) {
	for _, dir := range []string{"sdk-node", nodeEnricher} {
		cmd := exec.Command("node", "--test", "--test-reporter=tap", "test/")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("node --test in %s: %v\n%s", dir, err, out)
		}
	}
}
