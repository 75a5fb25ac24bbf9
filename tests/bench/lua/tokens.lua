-- A distinct credential per request: every request carries the next line of a
-- file in one header, "Authorization: Bearer <token>" for distinct tokens or
-- "DPoP: <proof>" for DPoP proofs. Appended to report.lua (which numbers the
-- threads) by the benchmark and run as
--   wrk ... -s script.lua URL -- FILE OFFSET THREADS HEADER PREFIX WHEN_OUT
-- Thread k of THREADS takes lines OFFSET+k, OFFSET+k+THREADS, ... so no two
-- requests of one run share a line; OFFSET lets consecutive runs (warm-up,
-- measured, concurrency 1) start on unused lines. The other headers (Host,
-- and any --header such as the DPoP-bound token) go with every request.
-- A thread that runs out of lines, with WHEN_OUT "reuse", starts over and
-- done() reports how many lines were reused; with WHEN_OUT "stop" (a DPoP
-- proof is accepted once: a reused one is refused) it sends nothing more and
-- stops, and done() reports that it ran out.

function init(args)
  local path = args[1]
  local offset = tonumber(args[2] or "0")
  local count = tonumber(args[3] or "1")
  header = args[4] or "Authorization"
  prefix = args[5] or "Bearer "
  stop_when_out = args[6] == "stop"
  values = {}
  local index = 0
  for line in io.lines(path) do
    if index >= offset and (index - offset) % count == id and #line > 0 then
      values[#values + 1] = prefix .. line
    end
    index = index + 1
  end
  if #values == 0 then
    error("no lines left in " .. path .. " from line " .. offset)
  end
  -- wrk.format() takes these instead of wrk.headers, not besides them.
  headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  available = #values
  used = 0
  ran_out = 0
end

function request()
  if stop_when_out and used >= available then
    -- An empty request writes nothing; the stopped thread asks for no more.
    ran_out = 1
    wrk.thread:stop()
    return ""
  end
  used = used + 1
  headers[header] = values[(used - 1) % available + 1]
  return wrk.format(nil, nil, headers)
end
