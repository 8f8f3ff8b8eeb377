-- wrk script: POST the body in $TOLLGATE_BENCH_BODY as JSON and write a JSON
-- summary (microseconds) to $TOLLGATE_BENCH_OUT when the run ends.
local body_path = os.getenv("TOLLGATE_BENCH_BODY")
local out_path = os.getenv("TOLLGATE_BENCH_OUT")

local f = assert(io.open(body_path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

-- No response() callback: defining one makes wrk hand every response to Lua.
-- Non-2xx/3xx answers are counted by wrk itself (errors.status).

done = function(summary, latency, requests)
  local out = assert(io.open(out_path, "w"))
  local e = summary.errors
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "max": %d, "mean": %.1f, "stdev": %.1f, "percentiles": {',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev))
  local ps = {10, 25, 50, 75, 90, 95, 99, 99.9, 99.99}
  for i, p in ipairs(ps) do
    if i > 1 then out:write(", ") end
    out:write(string.format('"%s": %d', tostring(p), latency:percentile(p)))
  end
  out:write("}}}\n")
  out:close()
end
