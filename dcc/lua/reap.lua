-- ARGV: prefix, now_ms, now_s, retention_ms, max_attempts, limit, silence_ms, hold_ms
-- Takes back leases that expired (`take_back`), unless held (`hold_reaping`). A reaper that finds every worker
-- silent for more than silence_ms holds itself for hold_ms, once per silence: it may have begun to see Redis
-- before the workers did. Returns {hold_ms, id, new_state, ...} (hold_ms: the hold's end, 0 if none was ever set).
local now, silence = tonumber(ARGV[2]), tonumber(ARGV[7])
if silence > 0 then
  local pulse = redis.call('GET', P .. ':pulse')
  if pulse and now - tonumber(pulse) > silence and redis.call('GET', P .. ':silence') ~= pulse then
    redis.call('SET', P .. ':silence', pulse)
    hold_reaping(now + tonumber(ARGV[8]))
  end
end
local held = tonumber(redis.call('GET', P .. ':reap_hold')) or 0
local out = {held}
if silence > 0 and now < held then return out end
local expired = redis.call('ZRANGE', P .. ':leases', '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[6]))
for _, member in ipairs(expired) do
  redis.call('ZREM', P .. ':leases', member)
  local state = take_back(member, ARGV[3], ARGV[4], ARGV[5])
  if state then
    out[#out + 1] = string.match(member, '^(.*)|')
    out[#out + 1] = state
  end
end
return out
