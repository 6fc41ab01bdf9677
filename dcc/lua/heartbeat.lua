-- ARGV: prefix, worker, ttl_ms, now_ms, silence_ms, hold_ms, field, value, ...
-- A worker's health record (a hash that expires unless renewed) and its place in the index of workers (scored by
-- the worker's clock). The last heartbeat of any worker is the pulse (P:pulse, Redis's clock): one that comes more
-- than silence_ms after it ends a silence of every worker (`silence_ended`; silence_ms 0: never).
local key = P .. ':worker:' .. ARGV[2]
redis.call('HSET', key, unpack(ARGV, 7))
redis.call('PEXPIRE', key, ARGV[3])
redis.call('ZADD', P .. ':workers', ARGV[4], ARGV[2])
local now, pulse = redis_ms(), tonumber(redis.call('GET', P .. ':pulse'))
if tonumber(ARGV[5]) > 0 and pulse and now - pulse > tonumber(ARGV[5]) then
  silence_ended(pulse, now, tonumber(ARGV[6]))
end
redis.call('SET', P .. ':pulse', now, 'PX', DAY_MS)
return 1
