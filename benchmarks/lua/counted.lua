-- bench.lua, plus a count of the requests wrk writes, so a run can tell how many requests were
-- never answered: wrk's own summary counts only responses, and a server that stops answering
-- shows 0 requests, 0 errors and a latency of 0. Used by the scenarios with misbehaving clients,
-- for their baseline runs too (a request() function costs wrk a Lua call per request).

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "bench.lua")

local prepare = init

function init(args)
   prepare(args)
   prepared = wrk.format()
   -- wrk calls request() once more in the first thread before the run, to count pipelined
   -- requests: start that thread at -1 so the count is of requests really written.
   sent = first_thread and -1 or 0
end

function request()
   sent = sent + 1
   return prepared
end
