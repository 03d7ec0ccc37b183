package attacktest_test

import (
	"testing"

	"github.com/pairrelay/relay/internal/attacktest"
)

func TestMain(m *testing.M) { attacktest.Main(m) }
