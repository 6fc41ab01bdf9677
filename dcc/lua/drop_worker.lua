-- ARGV: prefix, worker
-- Expires at once the leases of every job the worker holds (it is gone), so the next reap takes them back.
-- Returns the number of leases expired.
local n = 0
for _, member in ipairs(redis.call('ZRANGE', P .. ':leases', 0, -1)) do
  local id = string.match(member, '^(.*)|')
  if redis.call('HGET', job_key(id), 'worker') == ARGV[2] then
    redis.call('ZADD', P .. ':leases', 0, member)
    n = n + 1
  end
end
return n
