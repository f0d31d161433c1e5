-- Seeds a missing counter: value `ARGV[1]`, stamp `ARGV[2]`, and expiry
-- `ARGV[3]` seconds when not empty.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 1
