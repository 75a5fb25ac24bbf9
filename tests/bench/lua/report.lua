-- Loaded into every wrk run of the benchmark: at the end, one machine-readable
-- line "BENCH_RESULT {json}" with exact latency percentiles (microseconds),
-- error counts, and how many lines of a token or proof file each thread used
-- (tokens.lua) if any, and how many threads ran out of them.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local used, available, wrapped, most, ran_out = 0, 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    ran_out = ran_out + (thread:get("ran_out") or 0)
    local thread_used = thread:get("used") or 0
    local thread_available = thread:get("available") or 0
    used = used + thread_used
    most = math.max(most, thread_used)
    available = available + thread_available
    if thread_available > 0 and thread_used > thread_available then
      wrapped = wrapped + (thread_used - thread_available)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    "BENCH_RESULT {\"duration_us\": %d, \"requests\": %d, \"bytes\": %d, " ..
    "\"errors\": {\"connect\": %d, \"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d}, " ..
    "\"latency_us\": {\"min\": %d, \"mean\": %.1f, \"stdev\": %.1f, \"max\": %d, " ..
    "\"p50\": %d, \"p90\": %d, \"p99\": %d, \"p99.9\": %d}, " ..
    "\"tokens\": {\"used\": %d, \"available\": %d, \"reused\": %d, \"most_per_thread\": %d, " ..
    "\"threads_ran_out\": %d}}\n",
    summary.duration, summary.requests, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9),
    used, available, wrapped, most, ran_out))
end
