package auth

import (
	"encoding/base64"
	"slices"
	"strings"
)

// SubprotocolPrefix marks a credential offered as a WebSocket subprotocol:
// relay.auth.<base64url of the credential>, beside relay.v1. Browsers cannot
// set headers on a WebSocket, and a subprotocol stays out of URLs and the
// access logs that record them. The server never selects it.
const SubprotocolPrefix = "relay.auth."

// MaxCredentialBytes bounds a presented credential (a JWT with a few claims
// is well under 2 KiB).
const MaxCredentialBytes = 8 << 10

// Transports a credential can arrive by.
const (
	FromQuery       = "query"
	FromSubprotocol = "subprotocol"
	FromHeader      = "header"
)

// Credential picks the credential a client presented: the token query
// parameter, a relay.auth.<base64url> subprotocol, or an Authorization:
// Bearer header. from names the transport ("" when there is none; the last
// one when several carry the same credential). Two transports with different
// credentials are refused rather than guessed between. The error's text
// never contains the credential.
func Credential(query, subprotocols, authorization string) (cred, from string, err *Error) {
	bad := func(msg string) (string, string, *Error) { return "", "", &Error{Code: "bad_credential", Message: msg} }
	var found []string
	differ := false
	take := func(c, f string) {
		differ = differ || (len(found) > 0 && c != cred)
		cred, from = c, f
		found = append(found, f)
	}
	if query != "" {
		take(query, FromQuery)
	}
	for _, p := range strings.Split(subprotocols, ",") {
		p = strings.TrimSpace(p)
		if !strings.HasPrefix(p, SubprotocolPrefix) {
			continue
		}
		if len(p) > base64.RawURLEncoding.EncodedLen(MaxCredentialBytes)+len(SubprotocolPrefix) {
			return bad("the relay.auth subprotocol is too long")
		}
		raw, derr := base64.RawURLEncoding.DecodeString(p[len(SubprotocolPrefix):])
		if derr != nil || len(raw) == 0 {
			return bad("the relay.auth subprotocol must be relay.auth.<base64url of the credential, no padding>")
		}
		if slices.Contains(found, FromSubprotocol) {
			return bad("more than one relay.auth subprotocol")
		}
		take(string(raw), FromSubprotocol)
	}
	if authorization != "" {
		scheme, token, ok := strings.Cut(strings.TrimSpace(authorization), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			return bad("the Authorization header must be Bearer <credential>")
		}
		take(strings.TrimSpace(token), FromHeader)
	}
	if differ {
		return bad("different credentials were presented (" + strings.Join(found, ", ") + "); send one")
	}
	if len(cred) > MaxCredentialBytes {
		return bad("the credential is longer than 8 KiB")
	}
	return cred, from, nil
}
