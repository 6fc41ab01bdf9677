-- ARGV: prefix, id, queue, qscore, submitted_ms, only_if_new ('1'|'0'), tes ('1'|'0'), field, value, ...
-- Returns 1 when created, 0 when a job with this id exists (nothing changed).
local id, queue = ARGV[2], ARGV[3]
local key = job_key(id)
if ARGV[6] == '1' and redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, unpack(ARGV, 8))
redis.call('ZADD', P .. ':q:' .. queue, ARGV[4], id)
redis.call('ZADD', P .. ':all', ARGV[5], id)
if ARGV[7] == '1' then redis.call('ZADD', P .. ':tes', ARGV[5], id) end
redis.call('LPUSH', P .. ':sig:' .. queue, '1')
redis.call('DEL', P .. ':ws:sent:' .. id)  -- a new job under an id used before: its changes are new (dcc.push)
redis.call('PUBLISH', P .. ':ev:' .. id, 'queued')  -- (for a client watching the id before it was used)
return 1
