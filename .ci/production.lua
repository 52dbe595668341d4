-- wrk script of .ci/production.py: on every connection, GET /health and POST /health in turn (the
-- POST answers 405 without touching the database), a pause between requests so that the load stays
-- modest; at the end, one JSON line: the requests sent, the answers by status, wrk's socket errors.
-- Arguments (after --): the pause in milliseconds.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  sent, statuses, pause = 0, {}, tonumber(args[1] or "20")
  get = wrk.format("GET", "/health")
  post = wrk.format("POST", "/health", { ["Content-Length"] = "0" })
end

function request()
  sent = sent + 1
  if sent % 2 == 1 then
    return get
  end
  return post
end

function delay()
  return pause
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total, counts = 0, {}
  for _, thread in ipairs(threads) do
    total = total + thread:get("sent")
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'DRILL_JSON {"sent": %d, "statuses": {%s}, "connect": %d, "read": %d, "write": %d, "timeout": %d, '
      .. '"max_ms": %.1f}\n',
    total, table.concat(parts, ", "), e.connect, e.read, e.write, e.timeout, latency.max / 1000))
end
