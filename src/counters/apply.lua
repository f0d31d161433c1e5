-- Adds `ARGV[1]` to the counter if its stamp is `ARGV[2]`.
if redis.call('HGET', KEYS[1], 's') == ARGV[2] then
  redis.call('HINCRBY', KEYS[1], 'v', ARGV[1])
  return 1
end
return 0
