-- The one wrk script every benchmark run uses (counted.lua adds a count of requests sent).
--
-- Arguments (after wrk's "--"):
--   close         send "Connection: close" on every request (one request per connection)
--   upload=BYTES  POST a body of BYTES bytes on every request
--
-- done() prints one line "BENCH-JSON {...}" with wrk's own exact counters and latency
-- percentiles in microseconds, so the runner does not have to parse rounded text. "sent" is the
-- number of requests written when the script counts them (counted.lua), else -1.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("first_thread", #threads == 1)
end

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

local function requests_sent()
   local total = -1
   for _, thread in ipairs(threads) do
      local count = thread:get("sent")
      if count then
         total = math.max(total, 0) + count
      end
   end
   return total
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      'BENCH-JSON {"duration_us": %d, "requests": %d, "bytes": %d, "sent": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"p50": %d, "p75": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
      summary.duration, summary.requests, summary.bytes, requests_sent(),
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean))
end
