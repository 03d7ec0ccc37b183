package core

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

func TestTokenIDIsAKeyedHash(t *testing.T) {
	plain := sha256.Sum256([]byte("tok-1"))
	if TokenID("tok-1") == hex.EncodeToString(plain[:6]) {
		t.Fatal("TokenID is the bare SHA-256 prefix (the Redis key tag), which anyone can compute from a guessed token")
	}
	if len(TokenID("tok-1")) != 12 || TokenID("tok-1") != TokenID("tok-1") || TokenID("tok-1") == TokenID("tok-2") {
		t.Fatal("TokenID must be 12 hex digits, stable within a process, distinct per token")
	}
	old := *tokenIDKey.Load()
	t.Cleanup(func() { SetTokenIDKey(old) })
	SetTokenIDKey([]byte("shared-secret"))
	mac := hmac.New(sha256.New, []byte("shared-secret"))
	mac.Write([]byte("tok-1"))
	if want := hex.EncodeToString(mac.Sum(nil)[:6]); TokenID("tok-1") != want {
		t.Fatalf("with log.token_secret: %s, want %s (the same on every instance)", TokenID("tok-1"), want)
	}
}
