"""The worker's state changes, each one atomic Lua call on the Redis server: starting an attempt;
recording a result together with the acknowledgement, only by the worker that holds the job's
current attempt; putting a dead worker's jobs back on their queues, or failing them once out of
attempts; handing back a job taken in a race.
"""

# KEYS: job. ARGV: worker, field, value, ... -> the attempt number; -1 if the job is completed, -2
# if a live worker runs it (both: the producer pushed the same id twice).
START = """
local state, owner = unpack(redis.call('HMGET', KEYS[1], 'state', 'worker'))
if state == 'completed' then return -1 end
if state == 'running' and owner and redis.call('EXISTS', 'ourvidz:worker:' .. owner) == 1 then return -2 end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1], unpack(ARGV, 2))
redis.call('PERSIST', KEYS[1])
return n
"""
# KEYS: job, processing, queue. ARGV: worker, attempt, payload, ttl, the producers' push ('lpush' or 'rpush') to
# retry (at the back of the queue) or '', field, value, ...
# Records only for the running attempt: once REAP put the job back or failed it, its old attempt
# records nothing (the reaper's verdict and callback stand; the next attempt runs it). The same
# call repeated (its reply lost to a dropped connection) answers 1 again and changes nothing.
FINISH = """
local state, owner, n, done = unpack(redis.call('HMGET', KEYS[1], 'state', 'worker', 'attempts', 'recorded_by'))
local removed = redis.call('LREM', KEYS[2], 1, ARGV[3])
if owner ~= ARGV[1] or n ~= ARGV[2] then return 0 end
local attempt = ARGV[1] .. ':' .. ARGV[2]
if state ~= 'running' then  -- recorded already: by this call repeated after a lost reply (1), or reaped (0)
  if done == attempt then return 1 end
  return 0
end
if (ARGV[5] == 'lpush' or ARGV[5] == 'rpush') and removed == 1 then redis.call(ARGV[5], KEYS[3], ARGV[3]) end
redis.call('HSET', KEYS[1], 'recorded_by', attempt, unpack(ARGV, 6))
if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return 1
"""
# KEYS: heartbeat, processing, queue. ARGV: force, max attempts, now, reason, ttl, the push onto the
# consumption end ('RPUSH' when workers take from the right, 'LPUSH' from the left).
# The id is read through the producers' wrappers: ["<payload>"] (2026-02 on) and {"data": "<payload>"}.
# -> nil if the worker is alive (and not forced), else {number requeued, failed payload, ...}.
REAP = """
if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return false end
local out = {0}
while true do
  local raw = redis.call('LPOP', KEYS[2])
  if not raw then break end
  local ok, job = pcall(cjson.decode, raw)
  if ok and type(job) == 'table' and type(job[1]) == 'string' then ok, job = pcall(cjson.decode, job[1]) end
  if ok and type(job) == 'table' and type(job.data) == 'string' then ok, job = pcall(cjson.decode, job.data) end
  local id = ok and type(job) == 'table' and (job.id or job.job_id or job.jobId) or nil
  local key = (type(id) == 'string' or type(id) == 'number') and ('ourvidz:job:' .. tostring(id)) or nil
  local n = key and tonumber(redis.call('HGET', key, 'attempts') or '0') or 0
  local why = ARGV[4] .. ' during attempt ' .. n
  if key and n >= tonumber(ARGV[2]) then
    redis.call('HSET', key, 'state', 'failed', 'finished_at', ARGV[3], 'progress', '',
               'error', why .. '; gave up after ' .. n .. ' attempts')
    if tonumber(ARGV[5]) > 0 then redis.call('EXPIRE', key, ARGV[5]) end
    table.insert(out, raw)
  else
    redis.call(ARGV[6] == 'LPUSH' and 'LPUSH' or 'RPUSH', KEYS[3], raw)
    out[1] = out[1] + 1
    if key then redis.call('HSET', key, 'state', 'queued', 'progress', '', 'error', why .. '; requeued') end
  end
end
return out
"""
# KEYS: processing, queue. ARGV: payload, the push onto the consumption end ('RPUSH' or 'LPUSH').
GIVE_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then redis.call(ARGV[2] == 'LPUSH' and 'LPUSH' or 'RPUSH', KEYS[2], ARGV[1]) end
"""
# KEYS: job. ARGV: worker, attempt -> 1 while this attempt holds the job (checked right before its
# folder is promoted), else 0.
MINE = """
local state, owner, n = unpack(redis.call('HMGET', KEYS[1], 'state', 'worker', 'attempts'))
if state == 'running' and owner == ARGV[1] and n == ARGV[2] then return 1 end
return 0
"""
