-- A budget lease (see `lease.rs`): gives back what this process's last
-- slice of these counters has left, then holds `ARGV[1]` for one request
-- plus, where the budget allows, a slice of up to `ARGV[6]` more that the
-- process admits from locally. All in one step.
--
-- `KEYS`: balance, [spend,] the give-back's mark. `ARGV`: 1 the request's
-- hold (0: only give back), 2 the hard limit ('' for none), 3 the amount
-- given back (0: none), 4 and 5 the stamps it was taken under (it goes
-- back only to a counter that still has them: a rebuilt one never had
-- it), 6 the slice wanted, 7 seconds to keep the mark.
--
-- The give-back happens at most once per mark: a retry after a lost reply
-- finds the mark and gives nothing twice. The slice is at most half of
-- what the counters have beyond the request (so others still find budget,
-- and slices shrink near the limit); smaller than the request itself, no
-- slice is taken (a plain hold, as `reserve.lua`).
--
-- Returns `{status, balance, spend, balance stamp, spend stamp, slice}`
-- with `reserve.lua`'s statuses (1 held, 0 insufficient, 2 limit
-- reached, -1 balance missing, -2 spend missing). Amounts are decimal
-- text made with '%d'.
local has_spend = #KEYS == 3
local mark = KEYS[#KEYS]
local amount = tonumber(ARGV[1])
local back = tonumber(ARGV[3])
if back > 0 and redis.call('SET', mark, '1', 'NX', 'EX', ARGV[7]) then
  if redis.call('HGET', KEYS[1], 's') == ARGV[4] then
    redis.call('HINCRBY', KEYS[1], 'v', back)
  end
  if has_spend and redis.call('HGET', KEYS[2], 's') == ARGV[5] then
    redis.call('HINCRBY', KEYS[2], 'v', -back)
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1, '0', '0', '', '', '0'}
end
local bstamp = redis.call('HGET', KEYS[1], 's') or ''
local balance = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local spent = 0
local sstamp = ''
local room = balance
if has_spend then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    return {-2, '0', '0', bstamp, '', '0'}
  end
  spent = tonumber(redis.call('HGET', KEYS[2], 'v') or '0')
  sstamp = redis.call('HGET', KEYS[2], 's') or ''
  if ARGV[2] ~= '' then
    local headroom = tonumber(ARGV[2]) - spent
    if amount > 0 and headroom < amount then
      return {2, '0', string.format('%d', spent), bstamp, sstamp, '0'}
    end
    if headroom < room then
      room = headroom
    end
  end
end
if amount == 0 then
  return {1, string.format('%d', balance), string.format('%d', spent), bstamp, sstamp, '0'}
end
if balance < amount then
  return {0, string.format('%d', balance), string.format('%d', spent), bstamp, sstamp, '0'}
end
local slice = math.floor((room - amount) / 2)
if slice > tonumber(ARGV[6]) then
  slice = tonumber(ARGV[6])
end
if slice < amount then
  slice = 0
end
local take = amount + slice
local after = redis.call('HINCRBY', KEYS[1], 'v', -take)
local spend_after = spent
if has_spend then
  spend_after = redis.call('HINCRBY', KEYS[2], 'v', take)
end
return {1, string.format('%d', after), string.format('%d', spend_after), bstamp, sstamp, string.format('%d', slice)}
