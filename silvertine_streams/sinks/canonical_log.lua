-- Idempotent batch append to a canonical log (silvertine_streams.sinks.canonical_log).
--
-- KEYS[1]  log stream            log:<type>
-- KEYS[2]  current dedupe bucket ids:<type>:<b>      hash event_id -> "fingerprint|entry id"
-- KEYS[3]  previous dedupe bucket ids:<type>:<b-1>
-- ARGV[1]  the batch, msgpack: a flat array id, fingerprint, event_json, origin,
--          business key ('' = none), id, ... (strings: the cmsgpack of Redis 6.2
--          cannot read msgpack bin)
-- ARGV[2]  lifetime of the current bucket in ms (2 x window)
--
-- Returns one character per record, in order: W written, D duplicate (same id and
-- fingerprint already logged), C conflict (same id, other fingerprint; the first
-- write won and stays), B business duplicate (a new id, but its business key --
-- a fill's venue and trade id -- was already logged under another id).
--
-- A business key is indexed in the same buckets as the ids, as key -> "id|entry".
-- The keys start with a control character (\31), which no event id can hold.
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
local W = 5  -- fields per record
local n = #recs / W

-- Two HMGETs per chunk instead of two HGETs per record: redis.call is the cost
-- here. Chunks keep unpack() under Lua's stack limit for very large batches.
local STEP = 1000
local function lookup(keys)
  local cur, prev = {}, {}
  for s = 1, #keys, STEP do
    local e = math.min(s + STEP - 1, #keys)
    local c = redis.call('HMGET', KEYS[2], unpack(keys, s, e))
    local p = redis.call('HMGET', KEYS[3], unpack(keys, s, e))
    for k = 1, e - s + 1 do
      cur[s + k - 1] = c[k]
      prev[s + k - 1] = p[k]
    end
  end
  return cur, prev
end

local ids, bks, bk_at = {}, {}, {}
for i = 1, n do
  ids[i] = recs[W * i - 4]
  local bk = recs[W * i]
  if bk ~= '' then
    bks[#bks + 1] = bk
    bk_at[i] = #bks
  end
end
local cur, prev = lookup(ids)
local bk_cur, bk_prev = {}, {}
if #bks > 0 then bk_cur, bk_prev = lookup(bks) end

-- seen catches a duplicate inside this batch, which the HMGETs above cannot.
local function fingerprint_of(value)
  local bar = string.find(value, '|', 1, true)
  if bar then return string.sub(value, 1, bar - 1) end
  return value
end

local seen, seen_bk, out, new = {}, {}, {}, {}
for i = 1, n do
  local j = W * i - 4
  local id, fp, bk = recs[j], recs[j + 1], recs[j + 4]
  local known = seen[id]
  if not known then
    local stored = cur[i] or prev[i]
    if stored then known = fingerprint_of(stored) end
  end
  local taken = false
  if not known and bk ~= '' then
    local k = bk_at[i]
    taken = seen_bk[bk] or bk_cur[k] or bk_prev[k]
  end
  if known then
    if known == fp then out[i] = 'D' else out[i] = 'C' end
  elseif taken then
    out[i] = 'B'
  else
    local entry = redis.call('XADD', KEYS[1], '*', 'event', recs[j + 2], 'origin', recs[j + 3])
    seen[id] = fp
    new[#new + 1] = id
    new[#new + 1] = fp .. '|' .. entry
    if bk ~= '' then
      seen_bk[bk] = true
      new[#new + 1] = bk
      new[#new + 1] = id .. '|' .. entry
    end
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
