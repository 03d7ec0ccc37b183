package auth

import (
	"context"
	"sync"
	"time"

	"github.com/pairrelay/relay/config"
)

// The WeChat Cloud Hosting gateway adds the caller's identity to each
// request that came through wx.cloud.connectContainer (and callContainer).
// With resource sharing, the X-WX-FROM-* variants name the mini program that
// made the call, and take precedence.
const (
	headerOpenID      = "X-WX-OPENID"
	headerAppID       = "X-WX-APPID"
	headerUnionID     = "X-WX-UNIONID"
	headerFromOpenID  = "X-WX-FROM-OPENID"
	headerFromAppID   = "X-WX-FROM-APPID"
	headerFromUnionID = "X-WX-FROM-UNIONID"

	maxBindings = 200000
)

func init() { Register(config.AuthWeChat, newWeChat) }

// wechatProvider trusts the gateway's identity headers. They are only worth
// anything when relay is reachable through the gateway alone: anyone who can
// reach relay directly can send them (see docs/auth.md).
type wechatProvider struct {
	appids map[string]bool
	bind   bool
	ttl    time.Duration

	mu       sync.Mutex
	bindings map[string]binding // token -> the openid it is bound to
}

type binding struct {
	openid string
	last   time.Time
}

func newWeChat(a config.Auth, at string, opts Options) (Provider, error) {
	p := &wechatProvider{appids: map[string]bool{}, bind: a.WeChat.BindToken, ttl: a.WeChat.BindTTL,
		bindings: map[string]binding{}}
	for _, id := range a.WeChat.AppIDs {
		p.appids[id] = true
	}
	return p, nil
}

func (p *wechatProvider) Authenticated() bool { return true }
func (p *wechatProvider) Headers() []string {
	return []string{headerOpenID, headerAppID, headerUnionID, headerFromOpenID, headerFromAppID, headerFromUnionID}
}
func (p *wechatProvider) Close() {}

func firstHeader(req *Request, names ...string) string {
	for _, n := range names {
		if v := req.header(n); v != "" {
			return v
		}
	}
	return ""
}

func (p *wechatProvider) Authenticate(_ context.Context, req *Request) (*Identity, error) {
	openid := firstHeader(req, headerFromOpenID, headerOpenID)
	appid := firstHeader(req, headerFromAppID, headerAppID)
	unionid := firstHeader(req, headerFromUnionID, headerUnionID)
	switch {
	case openid == "" || appid == "":
		return nil, refuse("no WeChat identity: connect through wx.cloud.connectContainer (the gateway adds X-WX-OPENID and X-WX-APPID)")
	case !p.appids[appid]:
		return nil, refuse("mini program %s is not allowed to connect", appid)
	case req.Credential == "":
		return nil, refuse("a token is required")
	case len(req.Credential) > MaxKeyBytes:
		return nil, refuse("the token is longer than %d bytes", MaxKeyBytes)
	}
	if p.bind && !p.claim(req.Credential, openid) {
		return nil, refuse("the token is bound to another WeChat user")
	}
	claims := map[string]any{"openid": openid, "appid": appid}
	if unionid != "" {
		claims["unionid"] = unionid
	}
	return &Identity{Key: req.Credential, Claims: claims}, nil
}

// claim binds token to openid unless another openid used it within ttl.
func (p *wechatProvider) claim(token, openid string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if b, ok := p.bindings[token]; ok && b.openid != openid && now.Sub(b.last) < p.ttl {
		return false
	}
	if len(p.bindings) >= maxBindings {
		for t, b := range p.bindings {
			if now.Sub(b.last) >= p.ttl {
				delete(p.bindings, t)
			}
		}
		if len(p.bindings) >= maxBindings {
			// Every binding is live: refusing new tokens is safer than
			// forgetting a binding someone relies on.
			return false
		}
	}
	p.bindings[token] = binding{openid: openid, last: now}
	return true
}
