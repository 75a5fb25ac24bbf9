-- A distinct token per request: every request carries the next line of a token
-- file as "Authorization: Bearer <token>". Appended to report.lua (which
-- numbers the threads) by the benchmark and run as
--   wrk ... -s script.lua URL -- TOKEN_FILE OFFSET THREADS
-- Thread k of THREADS takes lines OFFSET+k, OFFSET+k+THREADS, ... so no two
-- requests of one run share a token; OFFSET lets consecutive runs (warm-up,
-- measured, concurrency 1) start on unused tokens. A thread that runs out starts
-- over; done() reports how many tokens were reused that way.

function init(args)
  local path = args[1]
  local offset = tonumber(args[2] or "0")
  local count = tonumber(args[3] or "1")
  tokens = {}
  local index = 0
  for line in io.lines(path) do
    if index >= offset and (index - offset) % count == id and #line > 0 then
      tokens[#tokens + 1] = "Bearer " .. line
    end
    index = index + 1
  end
  if #tokens == 0 then
    error("no tokens left in " .. path .. " from line " .. offset)
  end
  available = #tokens
  used = 0
end

function request()
  used = used + 1
  return wrk.format(nil, nil, {["Authorization"] = tokens[(used - 1) % available + 1]})
end
