-- ARGV: prefix, worker, now_s, retention_ms, max_attempts
-- Takes back at once every lease the worker holds (it is gone; `take_back`), and only those: the other
-- workers' leases are the reaper's, with its grace after a restart. Returns {id, new_state, ...}.
local out = {}
for _, member in ipairs(redis.call('ZRANGE', P .. ':leases', 0, -1)) do
  local id = string.match(member, '^(.*)|')
  if redis.call('HGET', job_key(id), 'worker') == ARGV[2] then
    redis.call('ZREM', P .. ':leases', member)
    local state = take_back(member, ARGV[3], ARGV[4], ARGV[5])
    if state then
      out[#out + 1] = id
      out[#out + 1] = state
    end
  end
end
return out
