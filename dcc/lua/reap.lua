-- ARGV: prefix, now_ms, now_s, retention_ms, max_attempts, limit
-- Takes back leases that expired: the job is requeued, or ends in `error` (worker_lost) after
-- max_attempts, or in `cancelled` if a cancel was asked. Returns {id, new_state, ...}.
local out = {}
local expired = redis.call('ZRANGE', P .. ':leases', '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[6]))
for _, member in ipairs(expired) do
  redis.call('ZREM', P .. ':leases', member)
  local id, attempt = string.match(member, '^(.*)|(%d+)$')
  local cur = redis.call('HMGET', job_key(id), 'state', 'attempts', 'cancel', 'submitted', 'max_attempts',
                         'handbacks')
  local counted = tonumber(attempt) - tonumber(cur[6] or '0')  -- clean shutdowns' hand-backs do not count
  if cur[1] == 'running' and cur[2] == attempt then
    local state
    if cur[3] == '1' then
      state = 'cancelled'
      terminate(id, state, cur[4], ARGV[3], ARGV[4], {})
    elseif counted >= tonumber(cur[5] or ARGV[5]) then
      state = 'error'
      local err = cjson.encode({code = 'worker_lost', message = 'the worker running the job was lost ' .. counted .. ' times'})
      terminate(id, state, cur[4], ARGV[3], ARGV[4], {'error', err})
    else
      state = 'queued'
      requeue(id, {})
    end
    out[#out + 1] = id
    out[#out + 1] = state
  end
end
return out
