"""The two Lua scripts of the Redis rate store.

HIT mirrors `authz.metering.window` (roll, used, fits, fold, spike) and
`authz.metering.result.assess` operation for operation, on doubles, with `now`
from ARGV; keep the two in step (tests/test_metering_redis.py compares them on
random request sequences). Numbers are written with %.17g so floats round-trip.
"""

from __future__ import annotations

# KEYS: counter keys, volume keys, observation keys, then the timing key and the
#   verdict keys (the account's, the network's, then template bands) when asked for
#   (all in one slot on Cluster).
# ARGV: now_ms, n_counters, n_volumes,
#   per counter: window_ms, limit, throttled_limit, cost, volume index (1-based, 0 none), ttl_ms
#   per volume:  action (0 record, 1 throttle, 2 deny), alpha, z_score, multiple,
#                min_baseline, ttl_ms
#   n_observations, per observation: member, ttl_ms
#   timing (0/1), timing ttl_ms, n_verdicts
# Reply: {allowed, per counter: bucket, cur, prev; per volume: hour, count, mean|'', var;
#   per observation: distinct count; timing: gaps, mean, m2, hours (when asked);
#   per verdict key: action, cluster, score, until, bits, simhashes ('' when none)}
# Sightings (observations, timing, verdict) are recorded whatever the counters decide:
# a refused request is still behaviour to learn from (authz.metering.memory mirrors it).
HIT = """
local now = tonumber(ARGV[1])
local nc = tonumber(ARGV[2])
local nv = tonumber(ARGV[3])
local HOUR = 3600000
local MAX_IDLE = 168
local vbase = 4 + nc * 6

local function num(x) return string.format('%.17g', x) end

local function ewma(mean, var, x, alpha)
  if mean == nil then return x, 0 end
  local d = x - mean
  return mean + alpha * d, (1 - alpha) * (var + alpha * d * d)
end

-- Volume baselines first: a firing signal may lower this request's limits.
local vols, throttled, ok = {}, {}, true
for i = 1, nv do
  local a = vbase + (i - 1) * 6
  local action, alpha = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local hour = math.floor(now / HOUR)
  local s = redis.call('HMGET', KEYS[nc + i], 'h', 'c', 'm', 'v')
  local h, c, m, v = tonumber(s[1]), tonumber(s[2]), tonumber(s[3]), tonumber(s[4])
  if h == nil then
    h, c, m, v = hour, 0, nil, 0
  elseif h < hour then
    if hour - h > MAX_IDLE then
      m, v = nil, 0
    else
      m, v = ewma(m, v, c, alpha)
      for _ = 1, hour - h - 1 do m, v = ewma(m, v, 0, alpha) end
    end
    h, c = hour, 0
  end
  local x = c + 1
  local base = math.max(m or 0, tonumber(ARGV[a + 4]))
  local z = (x - base) / math.sqrt(math.max(v, base))
  if z >= tonumber(ARGV[a + 2]) and x / base >= tonumber(ARGV[a + 3]) then
    if action == 1 then throttled[i] = true end
    if action == 2 then ok = false end
  end
  vols[i] = {h, c, m, v}
end

-- Every counter is checked before any is charged: a refused request costs nothing.
local views = {}
for i = 1, nc do
  local a = 4 + (i - 1) * 6
  local win, cost, vi = tonumber(ARGV[a]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local bucket = math.floor(now / win)
  local s = redis.call('HMGET', KEYS[i], 'b', 'c', 'p')
  local b, c, p = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
  local cur, prev = 0, 0
  if b == nil or b < bucket - 1 then
    cur, prev = 0, 0
  elseif b == bucket - 1 then
    prev = c
  else
    cur, prev = c, p
    if b > bucket then bucket = b end
  end
  local elapsed = math.max(0, now - bucket * win)
  local lim = tonumber(ARGV[a + 1])
  if vi > 0 and throttled[vi] then lim = tonumber(ARGV[a + 2]) end
  if prev * (win - elapsed) / win + cur + cost > lim then ok = false end
  views[i] = {bucket, cur, prev}
end

local reply = {ok and 1 or 0}
for i = 1, nc do
  local a, st = 4 + (i - 1) * 6, views[i]
  if ok then
    redis.call('HSET', KEYS[i], 'b', num(st[1]), 'c', num(st[2] + tonumber(ARGV[a + 3])),
      'p', num(st[3]))
    redis.call('PEXPIRE', KEYS[i], ARGV[a + 5])
  end
  reply[#reply + 1] = st[1]
  reply[#reply + 1] = st[2]
  reply[#reply + 1] = st[3]
end
for i = 1, nv do
  local key, st = KEYS[nc + i], vols[i]
  if ok then
    if st[3] == nil then
      redis.call('HSET', key, 'h', num(st[1]), 'c', num(st[2] + 1), 'v', num(st[4]))
      redis.call('HDEL', key, 'm')
    else
      redis.call('HSET', key, 'h', num(st[1]), 'c', num(st[2] + 1), 'm', num(st[3]),
        'v', num(st[4]))
    end
    redis.call('PEXPIRE', key, ARGV[vbase + (i - 1) * 6 + 5])
  end
  reply[#reply + 1] = st[1]
  reply[#reply + 1] = st[2]
  reply[#reply + 1] = st[3] == nil and '' or num(st[3])
  reply[#reply + 1] = num(st[4])
end

local sbase = vbase + nv * 6
local no = tonumber(ARGV[sbase])
local key_at = nc + nv
for i = 1, no do
  local key = KEYS[key_at + i]
  redis.call('PFADD', key, ARGV[sbase + 2 * i - 1])
  redis.call('PEXPIRE', key, ARGV[sbase + 2 * i])
  reply[#reply + 1] = redis.call('PFCOUNT', key)
end
key_at = key_at + no
local tbase = sbase + 2 * no + 1
if ARGV[tbase] == '1' then
  key_at = key_at + 1
  local key = KEYS[key_at]
  local hour_bit = 2 ^ (math.floor(now / HOUR) % 24)
  local s = redis.call('HMGET', key, 'n', 'last', 'mean', 'm2', 'hours')
  local n, last, mean, m2, hours = tonumber(s[1]), tonumber(s[2]), tonumber(s[3]),
    tonumber(s[4]), tonumber(s[5])
  if n == nil then
    n, last, mean, m2, hours = 0, now, 0, 0, hour_bit
  else
    local gap = math.max(0, now - last)
    n = n + 1
    local d = gap - mean
    mean = mean + d / n
    m2 = m2 + d * (gap - mean)
    last = math.max(last, now)
    if math.floor(hours / hour_bit) % 2 == 0 then hours = hours + hour_bit end
  end
  redis.call('HSET', key, 'n', n, 'last', num(last), 'mean', num(mean), 'm2', num(m2),
    'hours', num(hours))
  redis.call('PEXPIRE', key, ARGV[tbase + 1])
  reply[#reply + 1] = n
  reply[#reply + 1] = num(mean)
  reply[#reply + 1] = num(m2)
  reply[#reply + 1] = num(hours)
end
for _ = 1, tonumber(ARGV[tbase + 2]) do
  key_at = key_at + 1
  -- pcall: a verdict key of another type reads as no verdict instead of failing the
  -- script after the counters were charged.
  local v = redis.pcall('HMGET', KEYS[key_at], 'action', 'cluster', 'score', 'until', 'bits',
    'simhashes')
  if v.err then v = {} end
  for j = 1, 6 do reply[#reply + 1] = v[j] or '' end
end
return reply
"""

# Give back what HIT charged in one slot when another slot refused the request (Cluster).
# KEYS: counter keys, then volume keys. ARGV: n_counters, n_volumes,
#   per counter: bucket, cost; per volume: hour.
REFUND = """
local nc, nv = tonumber(ARGV[1]), tonumber(ARGV[2])
local function give_back(key, field, amount)
  if redis.call('HINCRBY', key, field, -amount) < 0 then redis.call('HSET', key, field, 0) end
end
for i = 1, nc do
  local bucket, cost = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local b = tonumber(redis.call('HGET', KEYS[i], 'b'))
  if b == bucket then
    give_back(KEYS[i], 'c', cost)
  elseif b == bucket + 1 then
    give_back(KEYS[i], 'p', cost)
  end
end
for i = 1, nv do
  local key = KEYS[nc + i]
  if tonumber(redis.call('HGET', key, 'h')) == tonumber(ARGV[2 + 2 * nc + i]) then
    give_back(key, 'c', 1)
  end
end
return 1
"""
