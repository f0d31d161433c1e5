-- Applies one counter correction, at most once. `KEYS`: the counter, the
-- correction's mark. `ARGV`: 1 the stamp the counter must still have,
-- 2 'rebuild' or 'add', 3 the amount to add, 4 seconds to keep the mark.
-- Another stamp (or no counter): it was rebuilt from the ledger since,
-- and the rebuild counted what the correction would: nothing to do.
-- 'rebuild' drops the counter (the next request seeds it from the ledger;
-- dropping twice is harmless). 'add' adds once: the mark stops a second
-- application by a retry after a lost reply.
if redis.call('HGET', KEYS[1], 's') ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'rebuild' then
  redis.call('DEL', KEYS[1])
  return 1
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'v', ARGV[3])
return 1
