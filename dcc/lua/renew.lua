-- ARGV: prefix, lease_deadline_ms, member, ...   (member = id|attempt)
-- Extends the leases a worker holds. Returns, per member, 0 if the lease is gone, 1 if held, 2 if held
-- and a cancel was requested.
local out = {}
for i = 3, #ARGV do
  local member = ARGV[i]
  if redis.call('ZADD', P .. ':leases', 'XX', 'CH', ARGV[2], member) == 0
      and not redis.call('ZSCORE', P .. ':leases', member) then
    out[#out + 1] = 0
  else
    local id = string.match(member, '^(.*)|')
    out[#out + 1] = (redis.call('HGET', job_key(id), 'cancel') == '1') and 2 or 1
  end
end
return out
