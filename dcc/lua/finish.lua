-- ARGV: prefix, id, attempt, state, now_s, retention_ms, submitted, queue, sample, handed_back, field, value, ...
-- sample: "finished,queue_wait,run_time,state,worker" for the statistics ('' for none).
-- handed_back: '1' when a worker that stopped cleanly gives the job back; that attempt does not count.
-- Ends attempt `attempt` of the job in a terminal state, or (state 'queued') puts it back in its queue.
-- Returns 1, or 0 when the attempt no longer holds its lease (reaped, or the job ended otherwise).
local id, state = ARGV[2], ARGV[4]
if redis.call('ZREM', P .. ':leases', id .. '|' .. ARGV[3]) == 0 then return 0 end
local fields = {unpack(ARGV, 11)}
if state == 'queued' and redis.call('HGET', job_key(id), 'cancel') == '1' then
  terminate(id, 'cancelled', ARGV[7], ARGV[5], ARGV[6], fields)  -- a cancel asked meanwhile is not undone
elseif state == 'queued' then
  if ARGV[10] == '1' then redis.call('HINCRBY', job_key(id), 'handbacks', 1) end
  requeue(id, fields)
else
  local n = terminate(id, state, ARGV[7], ARGV[5], ARGV[6], fields)
  if ARGV[9] ~= '' then
    local samples = P .. ':stats:samples:' .. ARGV[8]
    redis.call('LPUSH', samples, ARGV[9])
    if n % 100 == 0 then redis.call('LTRIM', samples, 0, 4999) end
  end
end
return 1
