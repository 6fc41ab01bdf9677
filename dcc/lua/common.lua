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
