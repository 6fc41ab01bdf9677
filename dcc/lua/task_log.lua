-- ARGV: prefix, id, attempt, worker, log (JSON)
-- Writes a running TES task's log if this attempt of this worker still holds the job. Returns 1 if written.
local key = job_key(ARGV[2])
local cur = redis.call('HMGET', key, 'state', 'attempts', 'worker')
if cur[1] ~= 'running' or cur[2] ~= ARGV[3] or cur[3] ~= ARGV[4] then return 0 end
redis.call('HSET', key, 'task_log', ARGV[5])
return 1
