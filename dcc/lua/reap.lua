-- ARGV: prefix, now_s, retention_ms, max_attempts, limit, silence_ms, hold_ms
-- Takes back leases that expired by now (`take_back`), by Redis's clock, by which leases are timed; while the
-- reaper is held (`silence_ended`), only those that expired before the silence began. A reaper that finds every
-- worker silent for more than silence_ms ends that silence itself, once per pulse: it may have begun to see Redis
-- before the workers did. Returns {resumed, id, new_state, ...} (resumed: how many ms ago the last silence ended;
-- -1 if none is known).
local silence, now = tonumber(ARGV[6]), redis_ms()
local upto, out = now, {-1}
if silence > 0 then
  local pulse = redis.call('GET', P .. ':pulse')
  if pulse and now - tonumber(pulse) > silence and redis.call('GET', P .. ':silence') ~= pulse then
    redis.call('SET', P .. ':silence', pulse, 'PX', DAY_MS)
    silence_ended(tonumber(pulse), now, tonumber(ARGV[7]))
  end
  local resumed = tonumber(redis.call('GET', P .. ':resumed'))
  if resumed then out[1] = now - resumed end
  local began = tonumber(redis.call('GET', P .. ':reap_hold'))
  if began and began < upto then upto = began end
end
local expired = redis.call('ZRANGE', P .. ':leases', '-inf', string.format('%.0f', upto), 'BYSCORE', 'LIMIT', 0,
                           tonumber(ARGV[5]))
for _, member in ipairs(expired) do
  redis.call('ZREM', P .. ':leases', member)
  local state = take_back(member, ARGV[2], ARGV[3], ARGV[4])
  if state then
    out[#out + 1] = string.match(member, '^(.*)|')
    out[#out + 1] = state
  end
end
return out
