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

-- The token's ordering state; a token without one starts its seqs (and
-- claim epochs) at now*1000, above anything an earlier life of the token
-- can have used.
local function load_meta(meta, now)
  local v = redis.call('HMGET', meta, 'seq', 'base', 'evicted', 'bytes')
  if not v[1] then
    local start = now * 1000
    redis.call('HSET', meta, 'seq', fmt(start), 'base', fmt(start), 'evicted', fmt(start),
      'bytes', '0', 'epoch', fmt(start))
    return start, start, start, 0, true
  end
  return tonumber(v[1]), tonumber(v[2]), tonumber(v[3]), tonumber(v[4] or '0'), false
end

-- A history entry is "seq:at:idlen:" .. idkey .. message.
local function parse_entry(e)
  local s, at, idlen, rest = string.match(e, '^(%d+):(%d+):(%d+):()')
  idlen = tonumber(idlen)
  return tonumber(s), tonumber(at), string.sub(e, rest, rest + idlen - 1)
end

-- Drops the oldest entry and the client id it carries; returns its seq
-- and size.
local function pop_entry(hist, ids)
  local e = redis.call('LPOP', hist)
  local s, at, idk = parse_entry(e)
  if idk ~= '' then redis.call('HDEL', ids, idk) end
  return s, #e
end

-- Brings the history up to date: entries older than cutoff go, and a
-- history key that expired as a whole counts as evicted.
local function normalize(hist, ids, seq, evicted, bytes, cutoff)
  local len = redis.call('LLEN', hist)
  if evicted + len < seq then
    evicted = seq - len
    if len == 0 then
      redis.call('DEL', ids)
      bytes = 0
    end
  end
  while len > 0 do
    local s, at = parse_entry(redis.call('LINDEX', hist, 0))
    if at >= cutoff then break end
    local size
    s, size = pop_entry(hist, ids)
    evicted = s
    bytes = bytes - size
    len = len - 1
  end
  return evicted, bytes, len
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

// publishScript assigns seqs to a batch, keeps it in the history, records
// its client id and publishes it.
//
//	KEYS: meta, hist, ids
//	ARGV: size, ttl_ms, meta_keep_ms, max_bytes, idkey, channel, n, message1..n
//	→ {0, first_seq, last_seq} or {1, original_seq} for a duplicate
var publishScript = redis.NewScript(luaCommon + `
local meta, hist, ids = KEYS[1], KEYS[2], KEYS[3]
local size, ttl, keep, maxbytes = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local idk, channel, n = ARGV[5], ARGV[6], tonumber(ARGV[7])
local now = clock()
local seq, base, evicted, bytes = load_meta(meta, now)
local len
evicted, bytes, len = normalize(hist, ids, seq, evicted, bytes, now - ttl)
if size > 0 and idk ~= '' then
  local dup = redis.call('HGET', ids, idk)
  if dup then
    redis.call('HSET', meta, 'evicted', fmt(evicted), 'bytes', fmt(bytes))
    redis.call('PEXPIRE', meta, keep)
    return {1, tonumber(dup)}
  end
end
local first = seq + 1
local at = fmt(now)
for i = 1, n do
  seq = seq + 1
  local s = fmt(seq)
  local msg = ARGV[7 + i]
  if size > 0 then
    local k = ''
    if i == n then k = idk end
    local e = s .. ':' .. at .. ':' .. #k .. ':' .. k .. msg
    redis.call('RPUSH', hist, e)
    bytes = bytes + #e
    len = len + 1
  else
    evicted = seq
  end
  redis.call('PUBLISH', channel, 'm' .. s .. ':' .. msg)
end
if size > 0 then
  -- The id lives as long as the batch's last message is retained.
  if idk ~= '' then redis.call('HSET', ids, idk, fmt(seq)) end
  local size_
  while len > size do
    evicted, size_ = pop_entry(hist, ids)
    bytes = bytes - size_
    len = len - 1
  end
  while bytes > maxbytes and len > 1 do
    evicted, size_ = pop_entry(hist, ids)
    bytes = bytes - size_
    len = len - 1
  end
  redis.call('PEXPIRE', hist, ttl + 1000)
  if redis.call('HLEN', ids) > 0 then redis.call('PEXPIRE', ids, ttl + 1000) end
end
redis.call('HSET', meta, 'seq', fmt(seq), 'evicted', fmt(evicted), 'bytes', fmt(bytes))
redis.call('PEXPIRE', meta, keep)
return {0, first, seq}
`)

// historyScript returns the token's state and its retained messages after
// since (0: everything retained).
//
//	KEYS: meta, hist, ids
//	ARGV: ttl_ms, meta_keep_ms, since
//	→ {seq, base, evicted, entry...}
var historyScript = redis.NewScript(luaCommon + `
local meta, hist, ids = KEYS[1], KEYS[2], KEYS[3]
local ttl, keep, since = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = clock()
local seq, base, evicted, bytes = load_meta(meta, now)
local len
evicted, bytes, len = normalize(hist, ids, seq, evicted, bytes, now - ttl)
redis.call('HSET', meta, 'evicted', fmt(evicted), 'bytes', fmt(bytes))
redis.call('PEXPIRE', meta, keep)
if since == 0 then since = base end
local start = since - evicted
if start < 0 then start = 0 end
local out = {seq, base, evicted}
if start < len then
  local entries = redis.call('LRANGE', hist, start, -1)
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
local seq, base, evicted, bytes = load_meta(meta, now)
local e2, b2 = normalize(hist, ids, seq, evicted, bytes, now - ttl)
if e2 ~= evicted or b2 ~= bytes then
  redis.call('HSET', meta, 'evicted', fmt(e2), 'bytes', fmt(b2))
end
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
local _s, _b, _e, _y, lost = load_meta(meta, now)
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
