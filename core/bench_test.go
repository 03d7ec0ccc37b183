package core

import (
	"fmt"
	"strings"
	"testing"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
)

// BenchmarkRelay measures one relayed message end to end over loopback
// (client write → relay → client read), for each wire, with history on
// and off. Profile it with -cpuprofile to see the relay's share.
func BenchmarkRelay(b *testing.B) {
	payload := strings.Repeat("x", 200)
	for _, tc := range []struct {
		name    string
		query   string
		history int
	}{
		{"v1", "v=1&", 256},
		{"v1-nohistory", "v=1&", 0},
		{"seed", "", 256},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r := startRelayB(b, func(c *config.Config) {
				c.Limits.MessagesPerSecond = 0
				c.History.Size = tc.history
				c.Limits.SendQueue = 1 << 20
				c.Limits.SendQueueBytes = 1 << 30
			})
			dial := func(env string) *fws.Conn {
				conn, _, err := fws.DefaultDialer.Dial(r.url+"?"+tc.query+"token=bench&env="+env, nil)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { conn.Close() })
				return conn
			}
			sender, receiver := dial("h5"), dial("miniapp")
			if tc.query != "" {
				_, _, _ = sender.ReadMessage()   // hello
				_, _, _ = receiver.ReadMessage() // hello
				_, _, _ = sender.ReadMessage()   // presence of miniapp
			}
			frame := []byte(fmt.Sprintf(`{"type":"bench","data":{"text":%q}}`, payload))
			done := make(chan error, 1)
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				for i := 0; i < b.N; i++ {
					if _, _, err := receiver.ReadMessage(); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			for i := 0; i < b.N; i++ {
				if err := sender.WriteMessage(fws.TextMessage, frame); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
