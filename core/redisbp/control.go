package redisbp

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// presenceScript lists a token's envs whose claims have not expired. It
// changes nothing: the sweep of expired claims (and its leave events) is
// tend's and join's business.
//
//	KEYS: owners
//	→ {env...}
var presenceScript = redis.NewScript(luaCommon + `
local now = clock()
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local s, ci, exp = parse_claim(all[i + 1])
  if exp and exp >= now then out[#out + 1] = all[i] end
end
return out
`)

// Presence reads the token's claims in Redis: the envs online on every
// instance.
func (b *Backplane) Presence(ctx context.Context, token string) ([]string, error) {
	if b.closed.Load() {
		return nil, errClosed
	}
	if err := b.reachable(); err != nil {
		return nil, err
	}
	k := b.keys(token)
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	envs, err := presenceScript.Run(ctx, b.rdb, []string{k.owners}).StringSlice()
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("redis backplane: presence: %w", b.noted(err))
	}
	slices.Sort(envs)
	if envs == nil {
		envs = []string{}
	}
	return envs, nil
}

// Disconnect publishes "d<env>\0<code>" on the token's channel: only the
// instances holding sessions of the token subscribe to it, and each closes
// its own (see dispatchDisconnect).
func (b *Backplane) Disconnect(ctx context.Context, token, env string, code int) error {
	if b.closed.Load() {
		return errClosed
	}
	if err := b.reachable(); err != nil {
		return err
	}
	k := b.keys(token)
	// As Publish does: a subscription of this instance still being set up
	// must hear it too.
	b.awaitSubscribed(ctx, k.channel)
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := b.rdb.Publish(ctx, k.channel, "d"+env+"\x00"+strconv.Itoa(code)).Err(); err != nil {
		return fmt.Errorf("redis backplane: disconnect: %w", b.noted(err))
	}
	return nil
}
