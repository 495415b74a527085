-- keel-redis: a shared cell's circuit breaker and quota hold, read and updated atomically on
-- Redis's own clock (processes don't share clocks: every time in and out is a duration).
--
-- KEYS[1]  the breaker: a hash {v = 'keel1', until = end of the open state (ms, Redis clock),
--          succ = probe successes since it half-opened}; no key: closed
-- KEYS[2]  the probes in flight: a sorted set, member -> when the claim lapses (ms)
-- KEYS[3]  the hold: the string 'keel1:hold', expiring when the hold ends
-- ARGV[1]  the operation: read | trip | close | claim | probe_ok | release | hold
-- ARGV[2]  the channel news goes to; ARGV[3] the sender's id; ARGV[4] the cell's name
-- ARGV[5…] the operation's arguments (claim: max probes, claim ttl ms, member, slack ms)
--
-- Returns {breaker, ms, n}: breaker 0 closed, 1 open (ms: until it half-opens), 2 half-open
-- (for claim, ms: until a claim lapses when none was free; n = 1 when granted); for read and
-- hold, n is the hold's remaining ms. A key this script did not write is an error reply whose
-- code is KEEL_FOREIGN, never a silent overwrite.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]

local function foreign(what)
  return redis.error_reply('KEEL_FOREIGN ' .. what)
end

local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'none' then
  if kind ~= 'hash' then return foreign('the breaker key holds a ' .. kind) end
  if redis.call('HGET', KEYS[1], 'v') ~= 'keel1' then
    return foreign('the breaker key is not a keel breaker')
  end
  if not tonumber(redis.call('HGET', KEYS[1], 'until') or '') then
    return foreign('the breaker key has no valid end')
  end
end
kind = redis.call('TYPE', KEYS[2]).ok
if kind ~= 'none' and kind ~= 'zset' then return foreign('the probes key holds a ' .. kind) end
kind = redis.call('TYPE', KEYS[3]).ok
if kind ~= 'none' and (kind ~= 'string' or redis.call('GET', KEYS[3]) ~= 'keel1:hold') then
  return foreign('the hold key is not a keel hold')
end

local function breaker()
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0, 0 end
  local u = tonumber(redis.call('HGET', KEYS[1], 'until'))
  if u > now then return 1, u - now end
  return 2, 0
end

local function hold_left()
  local p = redis.call('PTTL', KEYS[3])
  if p < 0 then return 0 end
  return p
end

local function publish(what, ms)
  redis.call('PUBLISH', ARGV[2],
    'keel1 ' .. ARGV[3] .. ' ' .. what .. ' ' .. string.format('%.0f', ms) .. ' ' .. ARGV[4])
end

local function close()
  local existed = redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[2])
  if existed == 1 then publish('close', 0) end
  return {0, 0, 0}
end

if op == 'read' then
  local b, ms = breaker()
  return {b, ms, hold_left()}
elseif op == 'trip' then
  local u = now + tonumber(ARGV[5])
  local old = tonumber(redis.call('HGET', KEYS[1], 'until') or '')
  if old and old > u then u = old end
  redis.call('HSET', KEYS[1], 'v', 'keel1', 'until', string.format('%.0f', u), 'succ', 0)
  redis.call('PEXPIRE', KEYS[1], u - now + tonumber(ARGV[6]))
  redis.call('DEL', KEYS[2])
  publish('open', u - now)
  return {1, u - now, 0}
elseif op == 'close' then
  return close()
elseif op == 'claim' then
  local max, ttl, member, slack = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
  local b, ms = breaker()
  -- A cool-down that ends within the slack has ended: the trip reached Redis a moment after
  -- the breaker opened in its process.
  if b == 1 and ms <= slack then b = 2 end
  if b ~= 2 then return {b, ms, 0} end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) < max then
    redis.call('ZADD', KEYS[2], now + ttl, member)
    redis.call('PEXPIRE', KEYS[2], ttl)
    return {2, 0, 1}
  end
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {2, math.max(1, tonumber(first[2]) - now), 0}
elseif op == 'probe_ok' then
  redis.call('ZREM', KEYS[2], ARGV[6])
  if breaker() ~= 2 then return {breaker(), 0, 0} end
  if redis.call('HINCRBY', KEYS[1], 'succ', 1) >= tonumber(ARGV[5]) then
    return close()
  end
  return {2, 0, 0}
elseif op == 'release' then
  redis.call('ZREM', KEYS[2], ARGV[5])
  return {0, 0, 0}
elseif op == 'hold' then
  local d = tonumber(ARGV[5])
  local left = hold_left()
  if d > left then
    redis.call('SET', KEYS[3], 'keel1:hold', 'PX', d)
    publish('hold', d)
    left = d
  end
  return {0, 0, left}
end
return redis.error_reply('ERR keel-redis: unknown operation ' .. tostring(op))
