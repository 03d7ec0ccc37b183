package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	maxJWKSBytes   = 1 << 20
	minRSABits     = 2048
	jwksRetryFloor = time.Second
)

// jwks is a JSON Web Key Set fetched from a URL and kept: refreshed on a
// timer, fetched again (rate-limited) when a token names a kid it lacks, and
// kept as it is while the URL fails, so that a key server outage does not
// lock every client out.
type jwks struct {
	url        string
	refresh    time.Duration
	minRefetch time.Duration
	client     *http.Client
	log        *slog.Logger

	mu          sync.Mutex
	keys        []jwk
	fetchedAt   time.Time     // last successful fetch
	lastKidPull time.Time     // last fetch caused by an unknown kid
	lastErr     error         // of the last fetch; nil when it worked
	failedAt    time.Time     // since when fetches fail
	fetching    chan struct{} // closed when the fetch under way ends; nil when none is
	fetches     int           // fetches started, for tests

	stop chan struct{}
	done chan struct{}
}

type jwk struct {
	kid string
	alg string // "" when the set does not say
	key crypto.PublicKey
}

func newJWKS(url string, refresh, minRefetch time.Duration, opts Options) *jwks {
	j := &jwks{url: url, refresh: refresh, minRefetch: minRefetch, client: opts.Client,
		log: opts.Log.With("jwks_url", url), stop: make(chan struct{}), done: make(chan struct{})}
	if opts.Offline {
		close(j.done)
		return j
	}
	// The first fetch happens before relay serves, so the first tokens find
	// their keys; a failure here is reported, not fatal (the refresher retries).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	j.fetch(ctx)
	cancel()
	go j.refresher()
	return j
}

func (j *jwks) close() {
	select {
	case <-j.stop:
	default:
		close(j.stop)
	}
	<-j.done
}

// refresher fetches the set every refresh, and after a failure every
// minRefetch until it works again.
func (j *jwks) refresher() {
	defer close(j.done)
	for {
		j.mu.Lock()
		wait := j.refresh
		if j.lastErr != nil {
			wait = max(j.minRefetch, jwksRetryFloor)
		}
		j.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-j.stop:
			t.Stop()
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		j.fetch(ctx)
		cancel()
	}
}

// keyFor finds the key for a token's kid and alg. An unknown kid (or, for
// a token without kid, no key fitting its alg) fetches the set again, at
// most once per minRefetch.
func (j *jwks) keyFor(ctx context.Context, kid, alg string) (any, error) {
	if key, ok := j.lookup(kid, alg); ok {
		return key, nil
	}
	j.mu.Lock()
	pull := j.lastKidPull.IsZero() || time.Since(j.lastKidPull) >= j.minRefetch
	if pull {
		j.lastKidPull = time.Now()
	}
	j.mu.Unlock()
	if pull {
		j.fetch(ctx)
		if key, ok := j.lookup(kid, alg); ok {
			return key, nil
		}
	}
	if kid == "" {
		return nil, refuse("no key of the key set verifies %s tokens", alg)
	}
	return nil, refuse("the token's key id (kid) is not in the key set")
}

func (j *jwks) lookup(kid, alg string) (any, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var set jwt.VerificationKeySet
	for _, k := range j.keys {
		if kid != "" && k.kid != kid {
			continue
		}
		// A key may serve only the alg it declares, and only algs of its kind.
		if (k.alg != "" && k.alg != alg) || !algFits(alg, k.key) {
			continue
		}
		if kid != "" {
			return k.key, true
		}
		set.Keys = append(set.Keys, k.key)
	}
	return set, len(set.Keys) > 0
}

// fetch downloads the set once; concurrent callers share one download.
func (j *jwks) fetch(ctx context.Context) {
	j.mu.Lock()
	if ch := j.fetching; ch != nil {
		j.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		return
	}
	ch := make(chan struct{})
	j.fetching = ch
	j.fetches++
	j.mu.Unlock()

	// Not the caller's context: others may be waiting on this download.
	dl, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	keys, err := j.download(dl)
	cancel()

	j.mu.Lock()
	if err == nil {
		j.keys, j.fetchedAt, j.lastErr = keys, time.Now(), nil
	} else {
		if j.lastErr == nil {
			j.failedAt = time.Now()
		}
		j.lastErr = err
	}
	kept := len(j.keys)
	j.fetching = nil
	close(ch)
	j.mu.Unlock()
	if err != nil {
		j.log.Warn("auth: JWKS fetch failed; the keys fetched before stay in use", "err", err.Error(), "keys_kept", kept)
	}
}

func (j *jwks) download(ctx context.Context) ([]jwk, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxJWKSBytes {
		return nil, errors.New("the key set is larger than 1 MiB")
	}
	return parseJWKS(body)
}

// problems reports a failing URL: fatal when there are no keys at all.
func (j *jwks) problems() ([]string, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.lastErr == nil {
		return nil, false
	}
	if len(j.keys) == 0 {
		return []string{fmt.Sprintf("auth: JWKS %s unreachable and no keys fetched yet: %v", j.url, j.lastErr)}, true
	}
	return []string{fmt.Sprintf("auth: JWKS %s failing since %s; using %d keys fetched at %s: %v",
		j.url, j.failedAt.UTC().Format(time.RFC3339), len(j.keys), j.fetchedAt.UTC().Format(time.RFC3339), j.lastErr)}, false
}

// parseJWKS reads the verification keys of a set. Keys relay cannot use
// (encryption keys, symmetric keys, other curves) are skipped; a set with no
// usable key is an error, so that a broken answer never replaces good keys.
func parseJWKS(body []byte) ([]jwk, error) {
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Alg string `json:"alg"`
			Use string `json:"use"`
			Crv string `json:"crv"`
			N   string `json:"n"`
			E   string `json:"e"`
			X   string `json:"x"`
			Y   string `json:"y"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	var out []jwk
	var skipped []string
	for i, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		key, err := parseJWK(k.Kty, k.Crv, k.N, k.E, k.X, k.Y)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): %v", i, k.Kid, err))
			continue
		}
		out = append(out, jwk{kid: k.Kid, alg: k.Alg, key: key})
	}
	if len(out) == 0 {
		if len(skipped) > 0 {
			return nil, fmt.Errorf("no usable key in the set: %s", strings.Join(skipped, "; "))
		}
		return nil, errors.New("no usable key in the set")
	}
	return out, nil
}

func parseJWK(kty, crv, n, e, x, y string) (crypto.PublicKey, error) {
	switch kty {
	case "RSA":
		nb, err1 := b64(n)
		eb, err2 := b64(e)
		if err1 != nil || err2 != nil || len(nb) == 0 || len(eb) == 0 || len(eb) > 4 {
			return nil, errors.New("bad n or e")
		}
		key := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(new(big.Int).SetBytes(eb).Int64())}
		if key.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits; at least %d are required", key.N.BitLen(), minRSABits)
		}
		return key, nil
	case "EC":
		if crv != "P-256" {
			return nil, fmt.Errorf("curve %q is not supported (P-256)", crv)
		}
		xb, err1 := b64(x)
		yb, err2 := b64(y)
		if err1 != nil || err2 != nil || len(xb) != 32 || len(yb) != 32 {
			return nil, errors.New("bad x or y")
		}
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, xb...), yb...))
	case "OKP":
		xb, err := b64(x)
		if crv != "Ed25519" || err != nil || len(xb) != ed25519.PublicKeySize {
			return nil, errors.New("only Ed25519 OKP keys are supported")
		}
		return ed25519.PublicKey(xb), nil
	}
	return nil, fmt.Errorf("key type %q is not a public signing key relay supports", kty)
}

func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
