-- ARGV: prefix, worker, ttl_ms, now_ms, field, value, ...
-- A worker's health record (a hash that expires unless renewed) and its place in the index of workers.
local key = P .. ':worker:' .. ARGV[2]
redis.call('HSET', key, unpack(ARGV, 5))
redis.call('PEXPIRE', key, ARGV[3])
redis.call('ZADD', P .. ':workers', ARGV[4], ARGV[2])
return 1
