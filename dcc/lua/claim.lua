-- ARGV: prefix, queue, worker, now_s, lease_ms, free_gpus, worker_gpus
-- Takes the first job of the queue and leases it to the worker. Returns false when the queue is empty,
-- else {attempt, id, field, value, ...} of the job's hash as it was before the claim.
-- free_gpus ('' = no check): when the first job needs more GPUs than that, it stays first and the reply is the
-- count it needs (a number). No claim passes it, so smaller jobs behind it cannot starve it; one needing more
-- than worker_gpus (the worker's own; '' = no limit) and than any live worker has is taken all the same, for the
-- worker to end it (else it would block the queue for ever); one a bigger live worker can run is left to it.

-- The GPUs a job needs: its 'gpus' field, or, in a record stored before that field, its spec's.
local function gpus_needed(id)
  local n = redis.call('HGET', job_key(id), 'gpus')
  if n then return tonumber(n) or 0 end
  local ok, spec = pcall(cjson.decode, redis.call('HGET', job_key(id), 'spec') or '')  -- (unreadable: none)
  if not ok or type(spec) ~= 'table' or type(spec.parameters) ~= 'table' then return 0 end
  return tonumber(spec.parameters.gpu) or 0
end

-- The most GPU slots a live worker offers (from the health records' 'slots', e.g. cpu=3,gpu=4).
local function most_live_gpus()
  local most = 0
  for _, worker in ipairs(redis.call('ZRANGE', P .. ':workers', 0, -1)) do
    local slots = redis.call('HGET', P .. ':worker:' .. worker, 'slots')
    local n = slots and tonumber(string.match(slots, 'gpu=(%d+)')) or 0
    if n > most then most = n end
  end
  return most
end

-- A worker with a drain mark (dcc.drain) takes nothing: checked here, in the claim itself, so that the
-- scaler's last check before it removes an idle worker (fence.lua) cannot interleave with a claim.
if redis.call('EXISTS', P .. ':drain:' .. ARGV[3]) == 1 then return false end
local queue = P .. ':q:' .. ARGV[2]
local id
if ARGV[6] == '' then
  local popped = redis.call('ZPOPMIN', queue)
  if #popped == 0 then return false end
  id = popped[1]
else
  local head = redis.call('ZRANGE', queue, 0, 0)
  if #head == 0 then return false end
  id = head[1]
  local need = gpus_needed(id)
  if need > tonumber(ARGV[6]) and (ARGV[7] == '' or need <= tonumber(ARGV[7]) or need <= most_live_gpus()) then
    return need
  end
  redis.call('ZREM', queue, id)
end
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
-- the lease runs out by Redis's clock (as the reaper reads it): a worker's clock, however skewed, plays no part
redis.call('ZADD', P .. ':leases', redis_ms() + tonumber(ARGV[5]), id .. '|' .. attempt)
redis.call('PUBLISH', P .. ':ev:' .. id, 'running')
table.insert(record, 1, id)
table.insert(record, 1, attempt)
return record
