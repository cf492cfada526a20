-- Idempotent batch append to a canonical log (silvertine_streams.sinks.canonical_log).
--
-- KEYS[1]  log stream            log:<type>
-- KEYS[2]  current dedupe bucket ids:<type>:<b>      hash event_id -> "fingerprint|entry id"
-- KEYS[3]  previous dedupe bucket ids:<type>:<b-1>
-- ARGV[1]  the batch, msgpack: a flat array id, fingerprint, event_json, origin, id, ...
--          (strings: the cmsgpack of Redis 6.2 cannot read msgpack bin)
-- ARGV[2]  lifetime of the current bucket in ms (2 x window)
--
-- Returns one character per record, in order: W written, D duplicate (same id and
-- fingerprint already logged), C conflict (same id, other fingerprint; the first
-- write won and stays).
--
-- The index value carries the log entry id so an audit finds the entry with one HGET
-- and one XRANGE instead of scanning the log. A value without "|" (written before
-- entry ids were recorded) holds the fingerprint alone and still dedupes.
--
-- Everything runs atomically, so a redelivered batch writes nothing twice. The
-- bucket keys come from the client (its clock picks the bucket) so the script is
-- deterministic under any replication mode. The order is reads, then XADDs, then
-- the index: a reply error (WRONGTYPE) surfaces in the reads before any write.

local recs = cmsgpack.unpack(ARGV[1])
local n = #recs / 4

-- Two HMGETs per chunk instead of two HGETs per record: redis.call is the cost
-- here. Chunks keep unpack() under Lua's stack limit for very large batches.
local STEP = 1000
local ids = {}
for i = 1, n do
  ids[i] = recs[4 * i - 3]
end
local cur, prev = {}, {}
for s = 1, n, STEP do
  local e = math.min(s + STEP - 1, n)
  local c = redis.call('HMGET', KEYS[2], unpack(ids, s, e))
  local p = redis.call('HMGET', KEYS[3], unpack(ids, s, e))
  for k = 1, e - s + 1 do
    cur[s + k - 1] = c[k]
    prev[s + k - 1] = p[k]
  end
end

-- seen catches a duplicate inside this batch, which the HMGETs above cannot.
local function fingerprint_of(value)
  local bar = string.find(value, '|', 1, true)
  if bar then return string.sub(value, 1, bar - 1) end
  return value
end

local seen, out, new = {}, {}, {}
for i = 1, n do
  local j = 4 * i - 3
  local id, fp = recs[j], recs[j + 1]
  local known = seen[id]
  if not known then
    local stored = cur[i] or prev[i]
    if stored then known = fingerprint_of(stored) end
  end
  if known then
    if known == fp then out[i] = 'D' else out[i] = 'C' end
  else
    local entry = redis.call('XADD', KEYS[1], '*', 'event', recs[j + 2], 'origin', recs[j + 3])
    seen[id] = fp
    new[#new + 1] = id
    new[#new + 1] = fp .. '|' .. entry
    out[i] = 'W'
  end
end

for s = 1, #new, 2 * STEP do
  redis.call('HSET', KEYS[2], unpack(new, s, math.min(s + 2 * STEP - 1, #new)))
end
if #new > 0 then
  -- A relative expiry set on each write: the bucket outlives the last moment it
  -- is consulted (end of the next bucket) whatever the skew between the
  -- writers' clocks and the server's.
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return table.concat(out)
