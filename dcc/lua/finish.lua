-- ARGV: prefix, id, attempt, state, now_s, retention_ms, submitted, field, value, ...
-- Ends attempt `attempt` of the job in a terminal state, or (state 'queued') puts it back in its queue.
-- Returns 1, or 0 when the attempt no longer holds its lease (reaped, or the job ended otherwise).
local id, state = ARGV[2], ARGV[4]
if redis.call('ZREM', P .. ':leases', id .. '|' .. ARGV[3]) == 0 then return 0 end
local fields = {unpack(ARGV, 8)}
if state == 'queued' then
  requeue(id, fields)
else
  terminate(id, state, ARGV[7], ARGV[5], ARGV[6], fields)
end
return 1
