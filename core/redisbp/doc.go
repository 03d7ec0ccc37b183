// Package redisbp is the Redis backplane: several relay instances that
// share one Redis behave as one relay. It implements core.Backplane with
// the memory backplane's semantics (the conformance suite in
// core/backplanetest runs against both); docs/redis.md is the operator's
// version of this comment.
//
// # Keys
//
// Every key and channel of a token shares the hash tag {h}, h being the
// first 16 bytes of SHA-256(token) in hex, so that a Redis Cluster keeps
// them in one slot and the token itself never appears in Redis. P is
// backplane.prefix (default "relay"):
//
//	P:{h}:meta    hash   seq (newest seq), base (seq before the token's first
//	                     message), evicted (newest seq no longer retained),
//	                     epoch (claims handed out), head (no later than the
//	                     oldest entry's time), bytes (size of the history),
//	                     idn (client ids in ids), touched (last TTL extension)
//	                     TTL max(2×history.ttl, 10 min), extended by publishes,
//	                     history reads and every instance holding the token
//	P:{h}:hist    list   the retained messages, oldest first:
//	                     "seq:at_ms:idlen:" + from\0id + encoded message
//	                     at most history.size entries and
//	                     history.max_token_bytes bytes (its newest entry
//	                     always stays), none older than history.ttl;
//	                     TTL history.ttl + 60 s
//	P:{h}:ids     hash   from\0id → seq of the batch that client id was
//	                     accepted with; an id leaves with its message;
//	                     TTL history.ttl + 60 s
//	P:{h}:owners  hash   env → "session\0instance\0expires_ms\0epoch": the
//	                     newest claim of each env; TTL 2×claim TTL
//	P:{h}:chan    pub/sub channel of the token's messages and presence:
//	                     "m<seq>:" + encoded message, "j" join, "l" leave
//
// A token whose meta is missing (new, expired, or Redis lost it) starts its
// seqs and epochs at the Redis clock's unix milliseconds × 1000, above
// anything an earlier life of the token can have used: seq never goes back.
//
// # Memory
//
// Redis's maxmemory and eviction policy bound the total (volatile-lru is
// the one docs/redis.md recommends: every key has a TTL). Redis evicts key
// by key, so the scripts check that hist and ids agree with meta before
// they use them, and close the token's window (resumes answer
// resumed:false, no id is answered from half of it) when they do not.
// Over maxmemory with nothing to evict, Redis refuses a script at its
// first write that needs memory; the publish script writes before it
// publishes, so such a refusal is certain (core.ErrBackplaneFull, the
// client gets unavailable). The backplane is a prometheus.Collector: its
// counters, and Redis's own memory figures read by INFO at each scrape.
//
// # Scripts
//
// Each operation is one Lua script on one token's keys (so it is atomic and
// cluster-safe), timed by Redis's clock: publish (for each of the client
// messages a session queued up, in order: dedupe, seq, history append and
// trim, PUBLISH of every message in seq order), history, seen, join
// (newest wins, reject policy, env cap, join event), leave (leave event if
// the session still held the env) and tend (below). Scripts are loaded at
// start and re-sent by EVAL when Redis forgot them.
//
// # Delivery
//
// One pub/sub connection per backplane subscribes to the channels of the
// tokens this instance holds sessions of; subscribe and unsubscribe only
// queue a command, and a reader goroutine dispatches messages and events in
// the order Redis published them. Publish, Join and History wait for this
// instance's subscription of the token to be confirmed, so nothing they
// cause is missed; History also waits until the reader has dispatched
// everything published before it (a PING on the pub/sub connection), so a
// joining session neither misses nor repeats a message between its replay
// and live traffic. A pub/sub connection that breaks is reconnected and
// resubscribed by go-redis; one that goes silent is replaced. After either,
// and whenever a message's seq skips, the subscription catches up on what it
// missed from the history; when the history cannot be read (Redis still
// loading after a restart), its live messages wait and the catch-up is
// retried every 100 ms. While Redis is unreachable every call fails at
// once without dialing, and only the health check probes it.
//
// # Presence
//
// A claim expires ClaimTTL (30 s) after its instance last refreshed it; every
// RefreshInterval (10 s) each instance runs tend for every token it holds:
// it extends its sessions' claims, claims again what Redis lost, and
// announces (EventLeave) the envs whose claims expired because their
// instance died. So a crashed instance's envs go offline for their peers
// within ClaimTTL + RefreshInterval, and a client that reconnects to another
// instance before that simply replaces its old claim (no presence change).
//
// # Failures
//
// New fails when Redis cannot be reached. While running, a Redis outage
// makes Publish, Seen, Join, Leave and History return errors (the hub
// refuses messages with relay.error unavailable; sessions stay up), and
// Ready reports false until both connections work again. A script is never
// retried by the client: a publish whose reply was lost is not published
// twice (a client resend with the same id is deduplicated). A publish
// carries a deadline in Redis's clock (estimated by the health check's
// TIME), halfway to its call's timeout, and does nothing when it reaches
// Redis later; so a failed publish is either certainly not published (the
// hub answers unavailable) or ran in time and lost its reply (it wraps
// core.ErrPublishUnconfirmed; the hub answers unconfirmed).
package redisbp
