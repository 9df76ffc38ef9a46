-- wrk script: POST JPEG bodies, count non-2xx responses across all threads.
--
--   wrk -t2 -c16 -d10s --latency -s benchmarks/wrk_post_image.lua \
--       http://127.0.0.1:8000/v1/models/resnet50/classify -- img1.jpg [img2.jpg ...]
--
-- Each file becomes one pre-built request (cycled per thread). WRK_CONTENT_TYPE overrides the
-- Content-Type (default image/jpeg).
--
-- wrk gives every thread its own Lua state: a counter incremented in response() lives in that
-- thread only, and done() runs in yet another state. So setup() keeps a handle on each thread
-- and done() sums each thread's counters through thread:get(); without that the non-2xx
-- responses go unseen (wrk's own "Non-2xx" line counts them, but not by status).
-- The last line is machine-readable: WRK_JSON {...}.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local content_type = os.getenv("WRK_CONTENT_TYPE") or "image/jpeg"
  requests_ = {}
  for _, path in ipairs(args) do
    local f = assert(io.open(path, "rb"), "cannot open " .. path)
    local body = f:read("*a")
    f:close()
    table.insert(requests_, wrk.format("POST", nil, {["Content-Type"] = content_type}, body))
  end
  assert(#requests_ > 0, "give image files after --, e.g. -- image.jpg")
  next_ = 0
  non2xx = 0
  responses = 0
  by_status = {}
end

function request()
  next_ = next_ % #requests_ + 1
  return requests_[next_]
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    local key = tostring(status)
    by_status[key] = (by_status[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total_non2xx, total_responses, statuses = 0, 0, {}
  for _, thread in ipairs(threads) do
    total_non2xx = total_non2xx + (thread:get("non2xx") or 0)
    total_responses = total_responses + (thread:get("responses") or 0)
    local per = thread:get("by_status") or {}
    for status, n in pairs(per) do
      statuses[status] = (statuses[status] or 0) + n
    end
  end
  local seconds = summary.duration / 1e6
  local parts = {}
  for status, n in pairs(statuses) do
    table.insert(parts, string.format('"%s": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format("non-2xx responses (all threads): %d of %d\n", total_non2xx, total_responses))
  io.write(string.format(
    'WRK_JSON {"requests": %d, "responses": %d, "duration_s": %.3f, "requests_per_s": %.2f, '
      .. '"ok_per_s": %.2f, "non2xx": %d, "by_status": {%s}, "socket_errors": {"connect": %d, '
      .. '"read": %d, "write": %d, "timeout": %d}, "p50_ms": %.2f, "p90_ms": %.2f, '
      .. '"p99_ms": %.2f, "p99_9_ms": %.2f, "mean_ms": %.2f, "max_ms": %.2f}\n',
    summary.requests, total_responses, seconds, summary.requests / seconds,
    (total_responses - total_non2xx) / seconds, total_non2xx, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.mean / 1000, latency.max / 1000))
end
