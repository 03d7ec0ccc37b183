package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The shipped relay.yaml passes its own route tests, as CI runs them.
func TestShippedRouteTests(t *testing.T) {
	out, errOut, code := runBinary(t, "../..", "test")
	if code != 0 || !strings.Contains(out, "relay.test.yaml (routes of relay.yaml; envs h5, miniapp)") || !strings.Contains(out, "PASS:") {
		t.Fatalf("relay test in the repository root: exit %d\n%s%s", code, out, errOut)
	}
}

func TestRouteTestsPass(t *testing.T) {
	out, errOut, code := runBinary(t, "testdata/routetest", "test", "pass.test.yaml")
	if code != 0 || errOut != "" {
		t.Fatalf("relay test pass.test.yaml: exit %d\n%s%s", code, out, errOut)
	}
	if got := strings.Count(out, "\n  ok    "); got != 8 || !strings.HasSuffix(out, "PASS: 8 tests\n") {
		t.Errorf("want 8 passing tests:\n%s", out)
	}
	// -run picks tests by name.
	out, _, code = runBinary(t, "testdata/routetest", "test", "-run", "webhook", "pass.test.yaml")
	if code != 0 || !strings.HasSuffix(out, "PASS: 1 tests\n") {
		t.Errorf("relay test -run webhook: exit %d\n%s", code, out)
	}
	if _, errOut, code := runBinary(t, "testdata/routetest", "test", "-run", "nothing like it", "pass.test.yaml"); code != 1 || !strings.Contains(errOut, "no test matched") {
		t.Errorf("relay test -run matching nothing: exit %d\n%s", code, errOut)
	}
}

// timestamps are what changes between runs of the failing tests.
var timestamps = regexp.MustCompile(`\b1[0-9]{12}\b`)

// A failing test file prints a readable difference for each failure (the
// golden file shows it) and exits 1.
func TestRouteTestsFailWithDiffs(t *testing.T) {
	out, errOut, code := runBinary(t, "testdata/routetest", "test", "fail.test.yaml")
	if code != 1 || errOut != "relay: test: 6 of 7 tests failed\n" {
		t.Errorf("relay test fail.test.yaml: exit %d, stderr %q", code, errOut)
	}
	got := timestamps.ReplaceAllString(out, "<ms>")
	golden := "testdata/routetest/fail.golden"
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./cmd/relay -run TestRouteTestsFailWithDiffs -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("relay test fail.test.yaml printed:\n%s\nwant (%s):\n%s", got, golden, want)
	}
}

// A test file that cannot run says where and why, every problem at once.
func TestRouteTestFileProblems(t *testing.T) {
	cases := map[string][]string{
		"broken.test.yaml": {
			"broken.test.yaml:2: tests[0]: say what must happen: output:",
			`broken.test.yaml:4: tests[1]: output[0].where: "data..x": an empty field name`,
			"broken.test.yaml:4: tests[1]: output[0].where.data.y: give exists, equals, matches or type",
			`broken.test.yaml:4: tests[1]: output[0].where.data.z.type: "text" is none of string`,
			"broken.test.yaml:11: tests[2]: name: is required",
			"broken.test.yaml:11: tests[2]: input.from: is required",
			"broken.test.yaml:11: tests[2]: reject: name a code",
		},
		"unknownkey.test.yaml": {`unknownkey.test.yaml: [4:5] unknown field "outptu"`},
	}
	for file, wants := range cases {
		out, errOut, code := runBinary(t, "testdata/routetest", "test", file)
		if code != 1 || !strings.Contains(errOut, "could not run "+file) {
			t.Errorf("relay test %s: exit %d, stderr %q", file, code, errOut)
		}
		for _, want := range wants {
			if !strings.Contains(out, want) {
				t.Errorf("relay test %s does not say %q:\n%s", file, want, out)
			}
		}
	}
	// An env relay.yaml does not allow could not connect.
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "relay.yaml"), "envs: {h5: {}, miniapp: {}}\n")
	mustWrite(t, filepath.Join(dir, "relay.test.yaml"), "tests:\n  - name: tv\n    input: {from: tv, type: x}\n    output: []\n")
	out, _, code := runBinary(t, dir, "test")
	if code != 1 || !strings.Contains(out, `relay.test.yaml:2: tv: input.from: env "tv" is not in the envs of relay.yaml`) {
		t.Errorf("relay test with an unknown env: exit %d\n%s", code, out)
	}
	// No test files, no config file.
	empty := t.TempDir()
	if _, errOut, code := runBinary(t, empty, "test"); code != 1 || !strings.Contains(errOut, "no *.test.yaml in "+empty) {
		t.Errorf("relay test in an empty directory: exit %d, %s", code, errOut)
	}
	mustWrite(t, filepath.Join(empty, "x.test.yaml"), "tests:\n  - name: a\n    input: {from: a, type: x}\n    output: []\n")
	if out, _, code := runBinary(t, empty, "test"); code != 1 || !strings.Contains(out, "relay.yaml: no such file") {
		t.Errorf("relay test without relay.yaml: exit %d\n%s", code, out)
	}
}
