"""The Lua scripts that apply a batch to the rollups: take it, then apply it chunk by chunk.

They run on the node holding the stream: every key they touch carries the
stream's hash tag (see authz.audit.rollup_keys). authz.audit.roller calls them.
"""

from __future__ import annotations

# Taking a batch. KEYS: stream, WAL index, this batch's WAL list. ARGV: group,
# consumer, entry ids (JSON, ascending), then the batch's operations in chunks (JSON).
# With ids, every id must still be pending for this consumer, else the ids that are
# not are returned and nothing is done (the caller drops them and retries). One
# XPENDING over the batch's id range answers for all of them unless the consumer
# holds more entries in that range than the batch (then one XPENDING per id).
# Otherwise, atomically: the chunks go into the WAL list, the list into the index,
# and the entries are acknowledged.
TAKE_LUA = """
local ids = cjson.decode(ARGV[3])
if #ids > 0 then
  local mine = {}
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ids[1], ids[#ids], #ids, ARGV[2])
  for _, entry in ipairs(pending) do mine[entry[1]] = true end
  local missing = {}
  for _, id in ipairs(ids) do
    if not mine[id] and (#pending < #ids or
        #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2]) == 0) then
      missing[#missing + 1] = id
    end
  end
  if #missing > 0 then return missing end
  for i = 1, #ids, 1000 do
    redis.call('XACK', KEYS[1], ARGV[1], unpack(ids, i, math.min(i + 999, #ids)))
  end
end
if #ARGV > 3 then
  for i = 4, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[3], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  redis.call('SADD', KEYS[2], KEYS[3])
end
return {}
"""

# Applying one chunk of a WAL list. KEYS: the list, the WAL index. Pops a chunk and
# applies its operations `[key, kind, expire_at, [field, amount, ...]]` (kinds: h
# HINCRBY, z ZINCRBY member amount, s HSET) atomically; returns the chunks left.
APPLY_CHUNK_LUA = """
local chunk = redis.call('LPOP', KEYS[1])
if chunk then
  for _, op in ipairs(cjson.decode(chunk)) do
    local key, kind, at, args = op[1], op[2], op[3], op[4]
    if kind == 'h' then
      for i = 1, #args, 2 do redis.call('HINCRBY', key, args[i], args[i + 1]) end
    elseif kind == 'z' then
      for i = 1, #args, 2 do redis.call('ZINCRBY', key, args[i + 1], args[i]) end
    else
      redis.call('HSET', key, unpack(args))
    end
    if at > 0 then redis.call('EXPIREAT', key, at) end
  end
end
local left = redis.call('LLEN', KEYS[1])
if left == 0 then redis.call('SREM', KEYS[2], KEYS[1]) end
return left
"""
