-- Replays one dead letter: appends the original entry (every field but the worker's dead_* ones) to the email
-- stream and deletes the dead letter. KEYS[1] = saaschat:emails:dead, KEYS[2] = saaschat:emails,
-- ARGV[1] = the dead letter's entry id. Returns the new entry id on the email stream.
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entries == 0 then
  return redis.error_reply('no dead letter ' .. ARGV[1])
end
local fields = {}
local original = entries[1][2]
for index = 1, #original, 2 do
  if string.sub(original[index], 1, 5) ~= 'dead_' then
    table.insert(fields, original[index])
    table.insert(fields, original[index + 1])
  end
end
local replayed = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
return replayed
