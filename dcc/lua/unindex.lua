-- ARGV: prefix, n, index key (n of them) ..., id ...
-- Drops from the listing indexes each job whose record is gone (expired). Checked here, in one step: a job
-- submitted again under the same id since the caller looked keeps its entries.
local n = tonumber(ARGV[2])
local dropped = 0
for i = 3 + n, #ARGV do
  local id = ARGV[i]
  if redis.call('EXISTS', job_key(id)) == 0 then
    for k = 3, 2 + n do
      redis.call('ZREM', ARGV[k], id)
    end
    dropped = dropped + 1
  end
end
return dropped
