package core

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"sync/atomic"
)

// tokenIDKey keys TokenID. Random per process unless SetTokenIDKey is
// called, so that a log line's id cannot be checked against a guessed token
// (nor matched with the Redis key tag, a plain SHA-256 of the token).
var tokenIDKey atomic.Pointer[[]byte]

func init() {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails (crypto/rand, Go 1.24+)
	tokenIDKey.Store(&key)
}

// SetTokenIDKey sets the secret of TokenID (log.token_secret), so that
// several instances, and restarts, name a token alike in their logs.
func SetTokenIDKey(key []byte) {
	k := append([]byte(nil), key...)
	tokenIDKey.Store(&k)
}

// TokenID is how a token (a room) appears in logs: 12 hex digits of an
// HMAC-SHA256 with the process's secret, never the token.
func TokenID(token string) string {
	mac := hmac.New(sha256.New, *tokenIDKey.Load())
	mac.Write([]byte(token))
	return hex.EncodeToString(mac.Sum(nil)[:6])
}
