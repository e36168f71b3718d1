-- Hooks appended by kubekms-bench to every generated wrk script, after the lines that set
-- wrk.method, wrk.body and wrk.headers for one pre-signed request.
--
-- Every response's status is checked here (not only wrk's own ">399" counter), so a run that
-- serves errors, redirects or anything but 200 is never mistaken for speed. The cost is one
-- Lua call per response in wrk's thread, which kubekms-bench accounts for by giving wrk a
-- core of its own at high concurrency.
--
-- done() prints one machine-readable line (and the first bad response, if any) that
-- kubekms-bench parses; latencies are in microseconds.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   ok = 0
   bad = 0
   first_bad = ""
end

function response(status, headers, body)
   if status == 200 then
      ok = ok + 1
   else
      bad = bad + 1
      if first_bad == "" then
         first_bad = status .. " " .. string.sub(body or "", 1, 300)
      end
   end
end

function done(summary, latency, requests)
   local ok_total, bad_total, first = 0, 0, ""
   for _, t in ipairs(threads) do
      ok_total = ok_total + t:get("ok")
      bad_total = bad_total + t:get("bad")
      local f = t:get("first_bad")
      if first == "" and f ~= nil then
         first = f
      end
   end
   local e = summary.errors
   io.write(string.format(
      "KUBEKMS-BENCH requests=%d duration_us=%d ok=%d non200=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.duration, ok_total, bad_total,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
   if first ~= "" then
      io.write("KUBEKMS-BENCH-FIRST-BAD " .. (string.gsub(first, "[\r\n]", " ")) .. "\n")
   end
end
