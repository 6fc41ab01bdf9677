-- Shared by every script (prepended by dcc.store). All keys share the caller's hash tag, so a script
-- touching a job, its queue and the indexes stays in one cluster slot.
local P = ARGV[1]            -- key prefix, e.g. "{dcc}"

local function job_key(id) return P .. ':job:' .. id end

-- Move a job that this script has just taken out of the queue or the leases into a terminal state.
-- submitted: the job's 'submitted' field (its index score); fields: flat list of extra hash fields.
local function terminate(id, state, submitted, now_s, retention_ms, fields)
  local key = job_key(id)
  redis.call('HSET', key, 'state', state, 'finished', now_s, unpack(fields))
  local submitted_ms = math.floor(tonumber(submitted or '0') * 1000)
  redis.call('ZADD', P .. ':st:' .. state, submitted_ms, id)
  redis.call('PEXPIRE', key, retention_ms)
  redis.call('PUBLISH', P .. ':ev:' .. id, state)
  return redis.call('HINCRBY', P .. ':stats:count', state, 1)
end

-- Put a job that this script has just taken out of the leases back at its place in its queue.
local function requeue(id, fields)
  local key = job_key(id)
  local q = redis.call('HMGET', key, 'queue', 'qscore')
  redis.call('HSET', key, 'state', 'queued', 'worker', '', unpack(fields))
  local log = redis.call('HGET', key, 'task_log')
  if (not log or log == '') and redis.call('HEXISTS', key, 'task') == 1 then
    -- a task's attempt lost before it logged anything (e.g. while its inputs came in) still counts as one
    log = '{"attempt":' .. (redis.call('HGET', key, 'attempts') or '0') .. '}'
  end
  if log then  -- a TES task keeps the log of each attempt that ended without a result (a JSON array)
    local history = redis.call('HGET', key, 'task_history')
    history = history and (string.sub(history, 1, -2) .. ',' .. log .. ']') or ('[' .. log .. ']')
    redis.call('HSET', key, 'task_history', history)
    redis.call('HDEL', key, 'task_log')
  end
  redis.call('ZADD', P .. ':q:' .. q[1], q[2], id)
  redis.call('LPUSH', P .. ':sig:' .. q[1], '1')
  redis.call('PUBLISH', P .. ':ev:' .. id, 'queued')
end

-- Take back one lease (`id|attempt`, just removed from the leases): the job is requeued, or ends in `error`
-- (worker_lost) after max_attempts, or in `cancelled` if a cancel was asked. Returns the new state, or nil when
-- the lease was not the job's current attempt's (nothing changes).
local function take_back(member, now_s, retention_ms, max_attempts)
  local id, attempt = string.match(member, '^(.*)|(%d+)$')
  local cur = redis.call('HMGET', job_key(id), 'state', 'attempts', 'cancel', 'submitted', 'max_attempts',
                         'handbacks')
  local counted = tonumber(attempt) - tonumber(cur[6] or '0')  -- clean shutdowns' hand-backs do not count
  if cur[1] ~= 'running' or cur[2] ~= attempt then return nil end
  if cur[3] == '1' then
    terminate(id, 'cancelled', cur[4], now_s, retention_ms, {})
    return 'cancelled'
  elseif counted >= tonumber(cur[5] or max_attempts) then
    local err = cjson.encode({code = 'worker_lost', message = 'the worker running the job was lost ' .. counted .. ' times'})
    terminate(id, 'error', cur[4], now_s, retention_ms, {'error', err})
    return 'error'
  end
  requeue(id, {})
  return 'queued'
end

-- Redis's own clock, in ms: what silences and holds are timed by, so that no worker's or reaper's clock skew can
-- start a hold or stretch one (leases are scored by their workers' clocks; a lease outlives a skew below it).
local function redis_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local DAY_MS = 86400000

-- Every worker's heartbeat fell silent at once for longer than a lease allows (Redis unreachable, failed over,
-- restarted) from pulse_ms on, and the silence ended at now_ms (Redis's clock): leases that lapsed meanwhile say
-- nothing of their workers, which renew them once they reach Redis again. For hold_ms (P:reap_hold, which expires
-- then and holds pulse_ms) the reaper takes back only leases that lapsed before the silence began: their workers
-- died before it, so a worker whose heartbeats keep pausing cannot shield a dead worker's lease. P:resumed says when
-- the silence ended (the scaler gives missing health keys their grace again from then).
local function silence_ended(pulse_ms, now_ms, hold_ms)
  redis.call('SET', P .. ':resumed', now_ms, 'PX', DAY_MS)
  redis.call('SET', P .. ':reap_hold', pulse_ms, 'PX', hold_ms)
end
