-- ARGV: prefix, now_ms, now_s, retention_ms, max_attempts, limit
-- Takes back leases that expired (`take_back`). Returns {id, new_state, ...}.
local out = {}
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
