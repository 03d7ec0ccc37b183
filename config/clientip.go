package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// Client IP presets: where relay finds the address of the client behind a
// platform's front end.
const (
	ClientIPAuto     = "auto"
	ClientIPNone     = "none"
	ClientIPCloudRun = "cloud_run"
	ClientIPWeChat   = "wechat_cloud_hosting"
)

// ClientIP says which address is a connection's client: the one every per-IP
// limit counts, auth providers see and logs name.
type ClientIP struct {
	Preset         string   `yaml:"preset" doc:"Where relay runs: auto, none, cloud_run or wechat_cloud_hosting. cloud_run reads the client from X-Forwarded-For, wechat_cloud_hosting from X-Original-Forwarded-For; on both the platform's front end is the only way to the container (which sees it as the peer, 169.254.8.129 on Cloud Run), so every peer may set the header, and its rightmost entry (the one the front end wrote) is the client, never the leftmost, which the client can forge. none: the TCP peer is the client, unless it is one of trusted_proxies. auto: cloud_run when the K_SERVICE environment variable is set (Cloud Run sets it), wechat_cloud_hosting when CBR_ENV_ID is (WeChat Cloud Hosting sets it), else none." default:"auto"`
	Header         string   `yaml:"header" doc:"Header that names the client, replacing the preset's; with preset none it defaults to X-Forwarded-For. A comma-separated list (repeated headers join): relay reads it from the right, skips trusted_proxies, and takes the first other address; an entry that is not an address stops it at the hop that wrote it."`
	TrustedProxies []string `yaml:"trusted_proxies" doc:"Addresses or CIDRs (203.0.113.7, 10.0.0.0/8, 2001:db8::/32) of proxies of your own: a peer among them may name the client in the header, and their entries in it are skipped. Behind a load balancer or CDN in front of the platform, list its addresses here."`
}

// validClientIPHeader reports whether name can be an HTTP header name.
func validClientIPHeader(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ParsePrefix reads a trusted_proxies entry: a CIDR, or a single address.
func ParsePrefix(s string) (netip.Prefix, bool) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		p = p.Masked()
		if p.Addr().Is4In6() {
			// ::ffff:10.0.0.0/104 names the IPv4 addresses relay compares.
			if p.Bits() < 96 {
				return netip.Prefix{}, false
			}
			return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96), true
		}
		return p, true
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

func (c *Config) clientIPProblems() Problems {
	var ps Problems
	add := func(path, msg string) { ps = append(ps, Problem{Path: path, Message: msg}) }
	ci := c.ClientIP
	switch ci.Preset {
	case ClientIPAuto, ClientIPNone, ClientIPCloudRun, ClientIPWeChat:
	default:
		add("client_ip.preset", fmt.Sprintf("must be auto, none, cloud_run or wechat_cloud_hosting, got %q", ci.Preset))
	}
	if ci.Header != "" && !validClientIPHeader(ci.Header) {
		add("client_ip.header", fmt.Sprintf("must be a header name such as X-Forwarded-For (letters, digits, - and _), got %q", ci.Header))
	}
	for i, p := range ci.TrustedProxies {
		if _, ok := ParsePrefix(p); !ok {
			add(index("client_ip.trusted_proxies", i), fmt.Sprintf("must be an IP address or a CIDR such as 10.0.0.0/8, got %q", p))
		}
	}
	return ps
}
