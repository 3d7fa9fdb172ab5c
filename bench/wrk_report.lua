-- Prints one machine-readable line at the end of a wrk run:
-- RESULT <requests/s> <p50 µs> <p99 µs> <non-2xx> <socket errors>
-- Optional: WRK_METHOD, WRK_BODY, WRK_CONTENT_TYPE in the environment.
local method = os.getenv("WRK_METHOD")
if method then wrk.method = method end
local body = os.getenv("WRK_BODY")
if body then wrk.body = body end
local ct = os.getenv("WRK_CONTENT_TYPE")
if ct then wrk.headers["Content-Type"] = ct end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT %.1f %d %d %d %d\n",
    summary.requests / secs, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
