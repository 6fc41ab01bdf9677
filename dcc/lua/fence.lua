-- ARGV: prefix, worker, now_s, mark_ttl_ms
-- The scaler's last check before it removes an idle worker's instance. Marks the worker draining, so that
-- claim.lua gives it nothing from here on, then looks for a lease the worker holds. Returns 1 when it holds
-- none: it is idle and stays so (the mark lasts until the instance is gone). Returns 0 when it holds one (it
-- claimed since the scaler looked): the mark is taken back, unless it was draining before.
local key = P .. ':drain:' .. ARGV[2]
local before = redis.call('EXISTS', key)
redis.call('SET', key, ARGV[3], 'PX', ARGV[4])
for _, member in ipairs(redis.call('ZRANGE', P .. ':leases', 0, -1)) do
  local id = string.match(member, '^(.*)|')
  if redis.call('HGET', job_key(id), 'worker') == ARGV[2] then
    if before == 0 then redis.call('DEL', key) end
    return 0
  end
end
return 1
