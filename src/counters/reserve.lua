-- Holds `ARGV[1]` against the balance `KEYS[1]` and, when `KEYS[2]` is
-- given, adds it to that spend counter, refusing if `ARGV[2]` (a hard limit;
-- empty for none) would be passed. All or nothing. `ARGV[3]` is -`ARGV[1]`.
-- Returns `{status, balance, spend, balance stamp, spend stamp}`: status 1
-- held, 0 insufficient, 2 limit reached, -1 balance missing, -2 spend
-- missing. Amounts go back as decimal text made with '%d': Lua's
-- `tostring` writes numbers past 14 digits (balances over $100,000) in
-- exponent form, which would not parse as an exact amount.
local has_spend = #KEYS == 2
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1, '0', '0', '', ''}
end
local bstamp = redis.call('HGET', KEYS[1], 's') or ''
local spent = '0'
local sstamp = ''
if has_spend then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    return {-2, '0', '0', bstamp, ''}
  end
  spent = redis.call('HGET', KEYS[2], 'v') or '0'
  sstamp = redis.call('HGET', KEYS[2], 's') or ''
  if ARGV[2] ~= '' and tonumber(spent) + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
    return {2, '0', spent, bstamp, sstamp}
  end
end
local after = redis.call('HINCRBY', KEYS[1], 'v', ARGV[3])
if after < 0 then
  local restored = redis.call('HINCRBY', KEYS[1], 'v', ARGV[1])
  return {0, string.format('%d', restored), '0', bstamp, sstamp}
end
local spend_after = '0'
if has_spend then
  spend_after = string.format('%d', redis.call('HINCRBY', KEYS[2], 'v', ARGV[1]))
end
return {1, string.format('%d', after), spend_after, bstamp, sstamp}
