-- Prints one machine-readable line at the end of a wrk run:
-- RESULT <requests/s> <p50 µs> <p99 µs> <non-2xx> <socket errors> <requests>
-- Optional: WRK_METHOD, WRK_BODY, WRK_CONTENT_TYPE in the environment;
-- WRK_TOKENS, a file of tokens (one a line): each request sends
-- `Authorization: Token <one of them>`, picked uniformly at random, or in
-- order (each thread from its own offset) with WRK_TOKENS_ORDER=seq.
local method = os.getenv("WRK_METHOD")
if method then wrk.method = method end
local body = os.getenv("WRK_BODY")
if body then wrk.body = body end
local ct = os.getenv("WRK_CONTENT_TYPE")
if ct then wrk.headers["Content-Type"] = ct end

local tokens_file = os.getenv("WRK_TOKENS")
if tokens_file then
  local list = {}
  for line in io.lines(tokens_file) do list[#list + 1] = "Token " .. line end
  local n = #list
  local seq = os.getenv("WRK_TOKENS_ORDER") == "seq"
  local next_id = 0
  local pos = 0

  setup = function(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
  end

  init = function(args)
    local id = id or 0
    math.randomseed(os.time() * 1000 + id * 7919)
    -- Two threads (run.py uses two) start half the list apart.
    pos = math.floor(id * n / 2) % n
  end

  request = function()
    local t
    if seq then
      pos = pos % n + 1
      t = list[pos]
    else
      t = list[math.random(n)]
    end
    wrk.headers["Authorization"] = t
    return wrk.format()
  end
end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT %.1f %d %d %d %d %d\n",
    summary.requests / secs, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
