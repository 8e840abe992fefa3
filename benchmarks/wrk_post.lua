-- POSTs a JSON body built from a template and a list of ids (taken in turn), and
-- counts responses: ok = HTTP 200 without an "errors" member.
-- The spec file (first script argument) holds the token on line 1, the body template
-- (with one %d) on line 2, then one id per line, optionally followed by a space and a
-- token of its own (requests as several trainers). A second script argument, when given,
-- is sent as every request's Origin header (a browser's cross-origin call).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function read_spec(path)
  local lines = {}
  for line in io.lines(path) do
    table.insert(lines, line)
  end
  local ids, tokens = {}, {}
  for i = 3, #lines do
    local id, own = lines[i]:match("^(%d+)%s*(%S*)$")
    table.insert(ids, tonumber(id))
    table.insert(tokens, own)
  end
  return lines[2], ids, lines[1], tokens
end

function init(args)
  template, ids, token, tokens = read_spec(args[1])
  position = 0
  ok = 0
  failed = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
  origin = args[2] or ""
  if origin ~= "" then
    wrk.headers["Origin"] = origin
  end
end

function request()
  position = position % #ids + 1
  local headers = nil
  if tokens[position] ~= "" then
    headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. tokens[position],
    }
    if origin ~= "" then
      headers["Origin"] = origin
    end
  end
  return wrk.format(nil, nil, headers, string.format(template, ids[position]))
end

function response(status, headers, body)
  if status == 200 and not body:find('"errors"', 1, true) then
    ok = ok + 1
  else
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local total_ok, total_failed = 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_failed = total_failed + thread:get("failed")
  end
  io.write(string.format(
    'RESULT {"requests": %d, "ok": %d, "failed": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, total_ok, total_failed, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
