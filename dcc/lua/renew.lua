-- ARGV: prefix, lease_ms, member, ...   (member = id|attempt)
-- Extends the leases a worker holds to lease_ms from now by Redis's clock. Returns, per member, 0 if the lease is gone, 1 if held, 2 if held
-- and a cancel was requested.
local out, deadline = {}, redis_ms() + tonumber(ARGV[2])
for i = 3, #ARGV do
  local member = ARGV[i]
  if redis.call('ZADD', P .. ':leases', 'XX', 'CH', deadline, member) == 0
      and not redis.call('ZSCORE', P .. ':leases', member) then
    out[#out + 1] = 0
  else
    local id = string.match(member, '^(.*)|')
    out[#out + 1] = (redis.call('HGET', job_key(id), 'cancel') == '1') and 2 or 1
  end
end
return out
