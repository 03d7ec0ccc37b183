package redisbp

import (
	"context"
	"time"
)

// tendBatch is how many tokens one pipelined round trip tends.
const tendBatch = 256

// tendLoop keeps this instance's claims alive and, for every token it
// holds, announces the departure of claims whose instance died.
func (b *Backplane) tendLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		b.resumeMu.Lock()
		for k, at := range b.resuming {
			if time.Since(at) >= resumeWindow {
				delete(b.resuming, k)
			}
		}
		b.resumeMu.Unlock()
		if err := b.tend(); err != nil && b.ctx.Err() == nil {
			b.log.Warn("redis backplane: refreshing presence failed; retrying next round", "err", err)
		}
	}
}

type tendJob struct {
	token string
	k     tokenKeys
	pairs []any // env, session, ...
}

// tend runs tendScript for every token this instance holds a claim or a
// subscription of.
func (b *Backplane) tend() error {
	jobs := map[string]*tendJob{}
	b.claimsMu.Lock()
	for token, envs := range b.claims {
		j := &tendJob{token: token}
		for env, session := range envs {
			j.pairs = append(j.pairs, env, session)
		}
		jobs[token] = j
	}
	b.claimsMu.Unlock()
	b.mu.RLock()
	for _, sub := range b.subs {
		if jobs[sub.token] == nil {
			jobs[sub.token] = &tendJob{token: sub.token, k: sub.keys}
		}
	}
	b.mu.RUnlock()
	if len(jobs) == 0 {
		return nil
	}
	if err := b.reachable(); err != nil {
		return err
	}
	list := make([]*tendJob, 0, len(jobs))
	for _, j := range jobs {
		if j.k.meta == "" {
			j.k = b.keys(j.token)
		}
		list = append(list, j)
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.RefreshInterval)
	defer cancel()
	// A pipeline cannot fall back from EVALSHA to EVAL, so make sure the
	// script is cached (Redis may have restarted).
	if err := tendScript.Load(ctx, b.rdb).Err(); err != nil {
		return err
	}
	var firstErr error
	for len(list) > 0 {
		n := min(len(list), tendBatch)
		batch := list[:n]
		list = list[n:]
		pipe := b.rdb.Pipeline()
		for _, j := range batch {
			args := append([]any{ms(b.opts.ClaimTTL), j.k.channel, ms(b.metaKeep), b.instance}, j.pairs...)
			tendScript.EvalSha(ctx, pipe, []string{j.k.meta, j.k.owners}, args...)
		}
		cmds, err := pipe.Exec(ctx)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		for i, cmd := range cmds {
			reclaimed, err := cmd.(interface{ StringSlice() ([]string, error) }).StringSlice()
			if err != nil {
				continue
			}
			j := batch[i]
			for _, env := range reclaimed {
				b.dropStaleReclaim(ctx, j, env)
			}
		}
	}
	return firstErr
}

// dropStaleReclaim undoes a claim tend made again for a session that left
// while tend ran.
func (b *Backplane) dropStaleReclaim(ctx context.Context, j *tendJob, env string) {
	for i := 0; i+1 < len(j.pairs); i += 2 {
		if j.pairs[i] != env {
			continue
		}
		session := j.pairs[i+1].(string)
		if b.holdsClaim(j.token, env, session) {
			return
		}
		b.log.Debug("redis backplane: giving up a claim a leaving session got back")
		_ = leaveScript.Run(ctx, b.rdb, []string{j.k.owners}, env, session, j.k.channel).Err()
		return
	}
}
