-- keel-redis: books up to ARGV[3] slots of a GCRA schedule shared through KEYS[1], atomically,
-- on Redis's own clock (processes don't share clocks).
--
-- KEYS[1]  the quota's key; its value is 'keel1:<theoretical arrival time, µs>'
-- ARGV[1]  interval between two slots, µs (at least 1)
-- ARGV[2]  tolerance: (burst - 1) × interval, µs
-- ARGV[3]  slots wanted (the lease, at least 1)
-- ARGV[4]  horizon: book no slot more than this far ahead of now, µs
-- ARGV[5]  the fewest slots worth a round trip: book nothing unless this many fit
--
-- Returns {granted, offset}: when granted > 0, slot i (0-based) goes at now + offset +
-- i × interval (offsets below 0 mean "now"); when granted = 0, ARGV[5] slots fit in the
-- horizon `offset` µs from now. A value this script did not write is an error reply whose
-- code is KEEL_FOREIGN, never a silent overwrite.
-- Redis before 5 replicates scripts verbatim, which forbids writing after TIME; since 5 this is
-- the default, and since 7 a no-op.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local horizon = tonumber(ARGV[4])
local least = tonumber(ARGV[5])
local raw = redis.pcall('GET', KEYS[1])
local tat = now
if type(raw) == 'table' and raw.err then
  return redis.error_reply('KEEL_FOREIGN ' .. tostring(raw.err))
elseif raw then
  local v = string.match(raw, '^keel1:(%d+)$')
  if not v then
    return redis.error_reply('KEEL_FOREIGN the value is not a keel quota')
  end
  tat = math.max(tonumber(v), now)
end
local first = tat - tolerance - now
local fit = math.floor((horizon - first) / interval) + 1
if fit < least then
  return {0, first + (least - 1) * interval - horizon}
end
local granted = math.min(want, fit)
local new_tat = tat + granted * interval
local ttl = math.max(1, math.ceil((new_tat - now) / 1000))
redis.call('SET', KEYS[1], 'keel1:' .. string.format('%.0f', new_tat), 'PX', ttl)
return {granted, first}
