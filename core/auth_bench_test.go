package core

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net/url"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkConnectJWT measures connections per second with auth jwt (key
// already cached) against auth none, in one run: each iteration opens one
// real WebSocket to a relay without auth and one to a relay with jwt
// (upgrade, relay.hello, close), alternating so that both see the same load
// on the machine. jwt/none is the ratio of their rates (1 = no cost).
//
//	go test ./core -run '^$' -bench ConnectJWT -benchtime 3000x
func BenchmarkConnectJWT(b *testing.B) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	ks := startKeyServerB(b)
	ks.serve(ecJWK("k1", ecKey))
	for _, tc := range []struct {
		name string
		cfg  func(t testing.TB) (*authRelay, func(sub string) string)
	}{
		{"HS256", func(t testing.TB) (*authRelay, func(string) string) {
			return startAuthRelay(t, hsAuth), func(sub string) string { return signHS(t, jwt.MapClaims{"sub": sub}) }
		}},
		{"ES256-JWKS", func(t testing.TB) (*authRelay, func(string) string) {
			return startAuthRelay(t, jwksAuth(ks.url, time.Hour, time.Hour)), func(sub string) string {
				return signKid(t, jwt.SigningMethodES256, "k1", ecKey, jwt.MapClaims{"sub": sub})
			}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			none := startAuthRelay(b)
			withJWT, sign := tc.cfg(b)
			d := fws.Dialer{HandshakeTimeout: 5 * time.Second}
			connect := func(u string) time.Duration {
				start := time.Now()
				conn, _, err := d.Dial(u, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := conn.ReadMessage(); err != nil { // relay.hello
					b.Fatal(err)
				}
				took := time.Since(start)
				conn.Close()
				return took
			}
			var tNone, tJWT time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// A pairing key per iteration, so that no connection replaces another.
				sub := fmt.Sprintf("bench-%d", i)
				b.StopTimer()
				tok := sign(sub)
				b.StartTimer()
				tNone += connect(none.url + "?v=1&env=h5&token=" + sub)
				tJWT += connect(withJWT.url + "?v=1&env=h5&token=" + url.QueryEscape(tok))
			}
			b.ReportMetric(float64(b.N)/tNone.Seconds(), "none-conns/s")
			b.ReportMetric(float64(b.N)/tJWT.Seconds(), "jwt-conns/s")
			b.ReportMetric(tNone.Seconds()/tJWT.Seconds(), "jwt/none")
		})
	}
}
