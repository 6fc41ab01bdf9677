-- ARGV: prefix, queue, worker, now_s, lease_deadline_ms
-- Takes the first job of the queue and leases it to the worker. Returns false when the queue is empty,
-- else {attempt, id, field, value, ...} of the job's hash as it was before the claim.
-- A worker with a drain mark (dcc.drain) takes nothing: checked here, in the claim itself, so that the
-- scaler's last check before it removes an idle worker (fence.lua) cannot interleave with a claim.
if redis.call('EXISTS', P .. ':drain:' .. ARGV[3]) == 1 then return false end
local popped = redis.call('ZPOPMIN', P .. ':q:' .. ARGV[2])
if #popped == 0 then return false end
local id = popped[1]
local key = job_key(id)
local record = redis.call('HGETALL', key)
local attempts, earlier_error = 0, false
for i = 1, #record, 2 do
  if record[i] == 'attempts' then attempts = tonumber(record[i + 1]) end
  if record[i] == 'error' then earlier_error = true end
end
local attempt = attempts + 1
redis.call('HSET', key, 'state', 'running', 'attempts', attempt, 'worker', ARGV[3], 'claimed', ARGV[4])
-- the reason an earlier attempt was retried is shown while the job waits; the new attempt starts clean
if earlier_error then redis.call('HDEL', key, 'error') end
redis.call('ZADD', P .. ':leases', ARGV[5], id .. '|' .. attempt)
redis.call('PUBLISH', P .. ':ev:' .. id, 'running')
table.insert(record, 1, id)
table.insert(record, 1, attempt)
return record
