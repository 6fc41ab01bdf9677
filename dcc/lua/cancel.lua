-- ARGV: prefix, id, now_s, retention_ms
-- Cancels a queued job at once; flags a running one (its worker kills it) and tells the workers.
-- Returns {the job's state after the call, 1 if this call ended it}, or false for an unknown job.
local id = ARGV[2]
local key = job_key(id)
local cur = redis.call('HMGET', key, 'state', 'queue', 'submitted')
if not cur[1] then return false end
if cur[1] == 'queued' then
  if redis.call('ZREM', P .. ':q:' .. cur[2], id) == 1 then
    terminate(id, 'cancelled', cur[3], ARGV[3], ARGV[4], {})
    return {'cancelled', 1}
  end
  return {cur[1], 0}
end
if cur[1] == 'running' then
  redis.call('HSET', key, 'cancel', '1')
  redis.call('PUBLISH', P .. ':cancel', id)
end
return {cur[1], 0}
