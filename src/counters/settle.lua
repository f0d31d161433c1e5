-- Settles one hold, at most once. `KEYS`: balance, [spend,] the request's
-- settled mark. `ARGV`: 1 balance stamp of the hold, 2 spend stamp, 3 the
-- unused part (hold − cost), 4 −cost, 5 cost − hold, 6 cost, 7 seconds to
-- keep the mark. The mark is set only if absent: a settlement retried after
-- a lost reply finds it and changes nothing (if Redis restarted between
-- the two, the first was lost with it, and the retry applies). Same stamp:
-- return the unused part; another stamp (rebuilt): apply the cost. Returns
-- the stamps the cost is counted under (`''` where missing).
local has_spend = #KEYS == 3
local counted = {'', ''}
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'EX', ARGV[7]) then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    counted[1] = redis.call('HGET', KEYS[1], 's') or ''
  end
  if has_spend and redis.call('EXISTS', KEYS[2]) == 1 then
    counted[2] = redis.call('HGET', KEYS[2], 's') or ''
  end
  return counted
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local stamp = redis.call('HGET', KEYS[1], 's') or ''
  if stamp == ARGV[1] then
    redis.call('HINCRBY', KEYS[1], 'v', ARGV[3])
  else
    redis.call('HINCRBY', KEYS[1], 'v', ARGV[4])
  end
  counted[1] = stamp
end
if has_spend and redis.call('EXISTS', KEYS[2]) == 1 then
  local stamp = redis.call('HGET', KEYS[2], 's') or ''
  if stamp == ARGV[2] then
    redis.call('HINCRBY', KEYS[2], 'v', ARGV[5])
  else
    redis.call('HINCRBY', KEYS[2], 'v', ARGV[6])
  end
  counted[2] = stamp
end
return counted
