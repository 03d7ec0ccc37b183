package redisbp

import "github.com/redis/go-redis/v9"

// Every state change of a token is one Lua script on the token's keys, so
// that seq assignment, history, dedupe, claims and the PUBLISH that tells
// the instances happen atomically and in one order. Times come from the
// Redis server's clock (TIME), the one clock all instances share.
//
// Lua numbers are doubles: seqs and epochs (about 1.8e15 today) are exact
// up to 2^53. fmt() turns them into decimal strings before they are
// stored or published, since Redis would otherwise print them in
// exponent notation.

// luaCommon is prepended to every script.
const luaCommon = `
local function fmt(n) return string.format('%d', n) end

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The token's ordering state. A token without one starts its seqs (and
-- claim epochs) at now*1000, above anything an earlier life of the token
-- can have used. head is no later than the time of the oldest retained
-- entry (0: unknown), so the history is looked at only when that entry may
-- have expired; touched is when the keys' TTLs were last extended; idn
-- is how many client ids the ids hash holds.
local function load_meta(meta, now)
  local v = redis.call('HMGET', meta, 'seq', 'base', 'evicted', 'bytes', 'head', 'touched', 'idn')
  if not v[1] then
    local start = now * 1000
    redis.call('HSET', meta, 'seq', fmt(start), 'base', fmt(start), 'evicted', fmt(start),
      'bytes', '0', 'epoch', fmt(start), 'head', '0', 'touched', '0', 'idn', '0')
    return {seq = start, base = start, evicted = start, bytes = 0, head = 0, touched = 0, idn = 0, lost = true}
  end
  return {seq = tonumber(v[1]), base = tonumber(v[2]), evicted = tonumber(v[3]),
    bytes = tonumber(v[4] or '0'), head = tonumber(v[5] or '0'), touched = tonumber(v[6] or '0'),
    idn = tonumber(v[7] or '0'), lost = false}
end

local function save_meta(meta, m)
  redis.call('HSET', meta, 'seq', fmt(m.seq), 'evicted', fmt(m.evicted), 'bytes', fmt(m.bytes),
    'head', fmt(m.head), 'touched', fmt(m.touched), 'idn', fmt(m.idn))
end

-- The retained window is the seqs evicted+1..seq: hist holds exactly
-- their entries, ids their client ids. Redis may drop any key of a token
-- on its own (a maxmemory eviction policy, a TTL), and then the window
-- must close instead of lying: a meta lost with the rest kept starts a new
-- life whose window is empty, so what hist and ids still hold belongs to
-- the earlier one (and would shift every list index); a hist or ids lost
-- with meta kept leaves nothing to resume from or to dedupe against.
-- Either way the window becomes empty: a resume from before it answers
-- resumed:false, and no id is answered from a half of it.
local function check_window(hist, ids, m)
  if m.seq == m.evicted then
    if m.bytes ~= 0 or m.idn ~= 0 or redis.call('EXISTS', hist, ids) > 0 then
      redis.call('DEL', hist, ids)
      m.bytes, m.idn = 0, 0
    end
    return
  end
  if redis.call('EXISTS', hist) == 0 or (m.idn > 0 and redis.call('EXISTS', ids) == 0) then
    redis.call('DEL', hist, ids)
    m.evicted, m.bytes, m.idn = m.seq, 0, 0
  end
end

-- A history entry is "seq:at:idlen:" .. idkey .. message.
local function parse_entry(e)
  local s, at, idlen, rest = string.match(e, '^(%d+):(%d+):(%d+):()')
  idlen = tonumber(idlen)
  return tonumber(s), tonumber(at), string.sub(e, rest, rest + idlen - 1)
end

-- Drops the oldest entry and the client id it carries.
local function pop_entry(hist, ids, m)
  local e = redis.call('LPOP', hist)
  if not e then return end
  local s, at, idk = parse_entry(e)
  if idk ~= '' and redis.call('HDEL', ids, idk) == 1 and m.idn > 0 then m.idn = m.idn - 1 end
  m.evicted = s
  m.bytes = m.bytes - #e
  if at > m.head then m.head = at end
end

-- Drops the entries older than cutoff. A history key that expired as a
-- whole (no publish for longer than the TTL) counts as evicted.
local function expire(hist, ids, m, cutoff)
  while m.seq > m.evicted and m.head < cutoff do
    local e = redis.call('LINDEX', hist, 0)
    if not e then
      m.evicted, m.bytes, m.idn = m.seq, 0, 0
      redis.call('DEL', ids)
      return
    end
    local s, at = parse_entry(e)
    if at >= cutoff then
      m.head = at
      return
    end
    pop_entry(hist, ids, m)
  end
end

-- A claim is "session\0instance\0expires_ms\0epoch".
local function parse_claim(v)
  local s, inst, exp, ep = string.match(v, '^(.-)%z(.-)%z(%d+)%z(%d+)$')
  return s, inst, tonumber(exp), tonumber(ep)
end

local function claim(session, inst, expires, epoch)
  return session .. '\0' .. inst .. '\0' .. fmt(expires) .. '\0' .. fmt(epoch)
end

-- Pub/sub payloads: "m<seq>:<message>", "j" join event, "l" leave event.
local function publish_join(channel, env, session, epoch, replaced, inst)
  redis.call('PUBLISH', channel, 'j' .. env .. '\0' .. session .. '\0' .. fmt(epoch) .. '\0' .. replaced .. '\0' .. inst)
end

local function publish_leave(channel, env, session)
  redis.call('PUBLISH', channel, 'l' .. env .. '\0' .. session)
end
`

// publishScript publishes the batches of one or more client messages of a
// token, each exactly as if it were published alone, in order: one call
// carries what a session queued up, since the script's fixed cost (its
// run, the token's state, the clock) dominates a small message's. Each
// batch assigns consecutive seqs, keeps its messages in the history,
// records its client id and publishes them; a batch whose id the window
// holds, also from an earlier batch of this call, is a duplicate.
//
// A call that reaches Redis after its deadline (in Redis's clock) does
// nothing: the caller has given up on it by then and told its clients
// "unavailable", so it must not publish later (a hung Redis runs what
// queued up when it resumes).
//
// Over maxmemory, Redis refuses a script's first write that needs memory
// (RPUSH, HSET: an OOM error) and lets everything after a first write
// through. So a write that needs memory comes before the first PUBLISH:
// refused, the script has done nothing that matters, and the caller can
// answer "unavailable" for certain.
//
//	KEYS: meta, hist, ids
//	ARGV: size, ttl_ms, meta_keep_ms, max_token_bytes, channel, batches, deadline_ms,
//	      then per batch: idkey, n, message1..n
//	→ per batch {0, last_seq} or {1, original_seq} for a duplicate, then
//	  how many entries were dropped to keep max_token_bytes;
//	  {-1} when the deadline had passed
var publishScript = redis.NewScript(luaCommon + `
local meta, hist, ids = KEYS[1], KEYS[2], KEYS[3]
local size, ttl, keep, maxbytes = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local channel, batches, deadline = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local now = clock()
if now > deadline then return {-1} end
local m = load_meta(meta, now)
if size > 0 then
  check_window(hist, ids, m)
  expire(hist, ids, m, now - ttl)
else
  -- Without a history the first write would come after a PUBLISH.
  redis.call('HSET', meta, 'seq', fmt(m.seq))
end
local at = ':' .. fmt(now) .. ':'
local len = 0
local idset = false
local trimmed = 0
local out = {}
local arg = 8
for b = 1, batches do
  local idk, n = ARGV[arg], tonumber(ARGV[arg + 1])
  local first = arg + 2
  arg = first + n
  local dup = false
  if size > 0 and idk ~= '' then dup = redis.call('HGET', ids, idk) end
  if dup then
    out[#out + 1] = 1
    out[#out + 1] = tonumber(dup)
  else
    for i = first, arg - 1 do
      m.seq = m.seq + 1
      local s = fmt(m.seq)
      local msg = ARGV[i]
      if size > 0 then
        local k = ''
        if i == arg - 1 then k = idk end
        local e = s .. at .. #k .. ':' .. k .. msg
        len = redis.call('RPUSH', hist, e)
        if len == 1 then
          -- A new list: whatever was retained before is gone.
          if m.evicted < m.seq - 1 then
            redis.call('DEL', ids)
            m.idn = 0
          end
          m.evicted, m.bytes, m.head, m.touched = m.seq - 1, 0, now, 0
        end
        m.bytes = m.bytes + #e
        while len > size do
          pop_entry(hist, ids, m)
          len = len - 1
        end
      else
        m.evicted = m.seq
      end
      redis.call('PUBLISH', channel, 'm' .. s .. ':' .. msg)
    end
    if size > 0 then
      while m.bytes > maxbytes and len > 1 do
        pop_entry(hist, ids, m)
        len = len - 1
        trimmed = trimmed + 1
      end
      -- The id lives as long as the batch's last message is retained.
      if idk ~= '' then
        if not idset then
          -- A value longer than hash-max-listpack-value keeps the hash a
          -- hash table: a listpack (up to 128 or 512 ids) is searched
          -- entry by entry on every HGET, HSET and HDEL.
          redis.call('HSETNX', ids, '', string.rep('-', 80))
          idset = true
        end
        m.idn = m.idn + redis.call('HSET', ids, idk, fmt(m.seq))
      end
    end
    out[#out + 1] = 0
    out[#out + 1] = m.seq
  end
end
if idset then redis.call('PEXPIRE', ids, ttl + 60000) end
-- The keys outlive what they hold; their TTLs are extended every 30s.
if now - m.touched >= 30000 then
  if size > 0 then redis.call('PEXPIRE', hist, ttl + 60000) end
  redis.call('PEXPIRE', meta, keep)
  m.touched = now
end
save_meta(meta, m)
out[#out + 1] = trimmed
return out
`)

// historyScript returns the token's state and its retained messages after
// since (0: everything retained).
//
//	KEYS: meta, hist, ids
//	ARGV: ttl_ms, meta_keep_ms, since, limit (0: all)
//	→ {seq, base, evicted, entry...}
var historyScript = redis.NewScript(luaCommon + `
local meta, hist, ids = KEYS[1], KEYS[2], KEYS[3]
local ttl, keep, since, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = clock()
local m = load_meta(meta, now)
check_window(hist, ids, m)
expire(hist, ids, m, now - ttl)
local len = m.seq - m.evicted
if now - m.touched >= 30000 then
  redis.call('PEXPIRE', meta, keep)
  m.touched = now
end
save_meta(meta, m)
if since == 0 then since = m.base end
local start = since - m.evicted
if start < 0 then start = 0 end
local out = {m.seq, m.base, m.evicted}
if start < len then
  local stop = -1
  if limit > 0 then stop = start + limit - 1 end
  local entries = redis.call('LRANGE', hist, start, stop)
  for i = 1, #entries do out[#out + 1] = entries[i] end
end
return out
`)

// seenScript looks a client id up within the window.
//
//	KEYS: meta, hist, ids
//	ARGV: ttl_ms, idkey
//	→ seq or false
var seenScript = redis.NewScript(luaCommon + `
local meta, hist, ids = KEYS[1], KEYS[2], KEYS[3]
local ttl, idk = tonumber(ARGV[1]), ARGV[2]
if redis.call('EXISTS', meta) == 0 then return false end
local now = clock()
local m = load_meta(meta, now)
local evicted = m.evicted
check_window(hist, ids, m)
expire(hist, ids, m, now - ttl)
if m.evicted ~= evicted then save_meta(meta, m) end
local s = redis.call('HGET', ids, idk)
if not s then return false end
return tonumber(s)
`)

// joinScript claims token+env for a session: newest wins, or the join is
// refused (reject policy, env cap). Expired claims of other envs are
// announced as left first.
//
//	KEYS: meta, owners
//	ARGV: env, session, instance, reject (0|1), max_envs, claim_ttl_ms, channel, meta_keep_ms
//	→ {'taken'} | {'full'} | {'ok', replaced_session, epoch, peer_env...}
var joinScript = redis.NewScript(luaCommon + `
local meta, owners = KEYS[1], KEYS[2]
local env, session, inst = ARGV[1], ARGV[2], ARGV[3]
local reject, maxenvs, claimttl = ARGV[4] == '1', tonumber(ARGV[5]), tonumber(ARGV[6])
local channel, keep = ARGV[7], tonumber(ARGV[8])
local now = clock()
load_meta(meta, now)
local all = redis.call('HGETALL', owners)
local peers = {}
local cur, cur_expired
for i = 1, #all, 2 do
  local e = all[i]
  local s, ci, exp = parse_claim(all[i + 1])
  if e == env then
    cur, cur_expired = s, exp < now
  elseif exp < now then
    redis.call('HDEL', owners, e)
    publish_leave(channel, e, s)
  else
    peers[#peers + 1] = e
  end
end
if cur and reject then
  if not cur_expired then return {'taken'} end
  -- Its instance died: the env went offline, then comes back.
  redis.call('HDEL', owners, env)
  publish_leave(channel, env, cur)
  cur = nil
end
-- A claim whose instance died without anyone announcing it yet is
-- replaced silently: for the peers the env never went away.
if not cur and maxenvs > 0 and #peers >= maxenvs then return {'full'} end
local epoch = redis.call('HINCRBY', meta, 'epoch', 1)
redis.call('HSET', owners, env, claim(session, inst, now + claimttl, epoch))
redis.call('PEXPIRE', owners, claimttl * 2)
redis.call('PEXPIRE', meta, keep)
local replaced = '0'
if cur then replaced = '1' end
publish_join(channel, env, session, epoch, replaced, inst)
local out = {'ok', cur or '', epoch}
for i = 1, #peers do out[#out + 1] = peers[i] end
return out
`)

// leaveScript ends a session's claim if it still holds it.
//
//	KEYS: owners
//	ARGV: env, session, channel
//	→ 1 if the session held the env, else 0
var leaveScript = redis.NewScript(luaCommon + `
local owners = KEYS[1]
local env, session, channel = ARGV[1], ARGV[2], ARGV[3]
local v = redis.call('HGET', owners, env)
if not v then return 0 end
local s = parse_claim(v)
if s ~= session then return 0 end
redis.call('HDEL', owners, env)
publish_leave(channel, env, s)
return 1
`)

// tendScript is what an instance runs periodically for every token it
// holds sessions of: it extends its sessions' claims, claims again what
// Redis lost (silently after a restart without persistence; announced
// as a join when the claim expired while this instance could not reach
// Redis and someone announced it gone), repeats the winner's join
// when a newer session holds the env (in case this instance missed the
// event), and announces the departure of claims that expired because
// their instance died.
//
//	KEYS: meta, owners
//	ARGV: claim_ttl_ms, channel, meta_keep_ms, instance, env1, session1, env2, session2, ...
//	→ {env reclaimed...}
var tendScript = redis.NewScript(luaCommon + `
local meta, owners = KEYS[1], KEYS[2]
local claimttl, channel, keep, inst = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = clock()
local lost = load_meta(meta, now).lost
redis.call('PEXPIRE', meta, keep)
-- Redis lost the token's state (a restart without persistence): nobody
-- heard the claims go, so taking them again is silent.
local silent = '0'
if lost then silent = '1' end
local all = redis.call('HGETALL', owners)
local claims = {}
for i = 1, #all, 2 do
  local s, ci, exp, ep = parse_claim(all[i + 1])
  claims[all[i]] = {s = s, inst = ci, exp = exp, ep = ep}
end
local reclaimed = {}
for i = 5, #ARGV, 2 do
  local env, session = ARGV[i], ARGV[i + 1]
  local c = claims[env]
  if not c then
    local epoch = redis.call('HINCRBY', meta, 'epoch', 1)
    redis.call('HSET', owners, env, claim(session, inst, now + claimttl, epoch))
    publish_join(channel, env, session, epoch, silent, inst)
    reclaimed[#reclaimed + 1] = env
  elseif c.s == session then
    c.exp = now + claimttl
    redis.call('HSET', owners, env, claim(session, inst, c.exp, c.ep))
  else
    publish_join(channel, env, c.s, c.ep, '1', c.inst)
  end
end
for env, c in pairs(claims) do
  if c.exp < now then
    redis.call('HDEL', owners, env)
    publish_leave(channel, env, c.s)
  end
end
if redis.call('EXISTS', owners) == 1 then redis.call('PEXPIRE', owners, claimttl * 2) end
return reclaimed
`)
