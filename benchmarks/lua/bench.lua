-- The one wrk script every benchmark run uses.
--
-- Arguments (after wrk's "--"):
--   close         send "Connection: close" on every request (one request per connection)
--   upload=BYTES  POST a body of BYTES bytes on every request
--
-- done() prints one line "BENCH-JSON {...}" with wrk's own exact counters and latency
-- percentiles in microseconds, so the runner does not have to parse rounded text.

function init(args)
   for _, arg in ipairs(args) do
      if arg == "close" then
         wrk.headers["Connection"] = "close"
      elseif arg:sub(1, 7) == "upload=" then
         local size = tonumber(arg:sub(8))
         wrk.method = "POST"
         wrk.headers["Content-Type"] = "application/octet-stream"
         wrk.body = string.rep("x", size)
      else
         error("bench.lua: unknown argument " .. arg)
      end
   end
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      'BENCH-JSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"p50": %d, "p75": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
      summary.duration, summary.requests, summary.bytes,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean))
end
