package core

import (
	"reflect"
	"testing"
)

func TestParseCloudTrace(t *testing.T) {
	const id = "105445aa7843bc8bf206b12000100000"
	for _, tc := range []struct {
		header string
		want   []any // the log fields for project p; nil: no trace
	}{
		{id + "/1;o=1", []any{traceKey, "projects/p/traces/" + id, spanKey, "0000000000000001", traceSampledKey, true}},
		{id + "/18446744073709551615;o=0", []any{traceKey, "projects/p/traces/" + id, spanKey, "ffffffffffffffff", traceSampledKey, false}},
		{id + "/123", []any{traceKey, "projects/p/traces/" + id, spanKey, "000000000000007b", traceSampledKey, false}},
		{id + ";o=1", []any{traceKey, "projects/p/traces/" + id, traceSampledKey, true}},
		{id, []any{traceKey, "projects/p/traces/" + id, traceSampledKey, false}},
		{id + "/x1;o=1", []any{traceKey, "projects/p/traces/" + id, traceSampledKey, true}}, // a bad span is left out
		{"", nil},
		{"105445aa7843bc8bf206b1200010000/1;o=1", nil},  // 31 digits
		{"105445aa7843bc8bf206b12000100000a/1", nil},    // 33
		{"105445aa7843bc8bf206b1200010000g/1;o=1", nil}, // not hex
		{"00000000000000000000000000000000/1;o=1", nil}, // zero: invalid
		{"projects/p/traces/105445aa7843bc8bf206b12000100000", nil},
	} {
		got := parseCloudTrace(tc.header)
		switch {
		case tc.want == nil && got != nil:
			t.Errorf("%q: got %v, want no trace", tc.header, got.attrs("p"))
		case tc.want != nil && got == nil:
			t.Errorf("%q: no trace, want %v", tc.header, tc.want)
		case tc.want != nil && !reflect.DeepEqual(got.attrs("p"), tc.want):
			t.Errorf("%q: %v, want %v", tc.header, got.attrs("p"), tc.want)
		}
	}
}
