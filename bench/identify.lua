-- wrk script: a realistic POST /identify mix over a seeded database (bench/seed.py keys).
-- Environment: BENCH_PEOPLE (seeded persons), BENCH_NONCE (digits, unique per run),
-- BENCH_MIX ("lookup:68,hot:5,secondary:12,person:12,merge:3"), BENCH_HOT (hot persons).
-- done() prints one JSON line: requests, duration, latency percentiles, status counts.

local people = tonumber(os.getenv("BENCH_PEOPLE") or "1000")
local nonce = os.getenv("BENCH_NONCE") or "1"
local hot = tonumber(os.getenv("BENCH_HOT") or "10")
local mix_spec = os.getenv("BENCH_MIX") or "lookup:68,hot:5,secondary:12,person:12,merge:3"

local kinds, cumulative, total = {}, {}, 0
for name, weight in string.gmatch(mix_spec, "(%a+):(%d+)") do
  total = total + tonumber(weight)
  table.insert(kinds, name)
  table.insert(cumulative, total)
end

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(tonumber(nonce) % 100000 * 97 + tid * 7919 + os.time())
  counter = 0
  statuses = {}
end

local function email(p) return "u" .. p .. "@seed.test" end
local function phone(p) return string.format("9%010d", p) end
local function person() return math.random(hot, people - 1) end
local function fresh()
  counter = counter + 1
  return string.format("%s%02d%08d", nonce, tid, counter)
end

local headers = { ["Content-Type"] = "application/json" }
local function body(e, p)
  local parts = {}
  if e then table.insert(parts, '"email":"' .. e .. '"') end
  if p then table.insert(parts, '"phoneNumber":"' .. p .. '"') end
  return "{" .. table.concat(parts, ",") .. "}"
end

function request()
  local r = math.random(total)
  local kind = kinds[#kinds]
  for i, limit in ipairs(cumulative) do
    if r <= limit then kind = kinds[i]; break end
  end
  local b
  if kind == "lookup" then
    local p, how = person(), math.random(3)
    if how == 1 then b = body(email(p), nil)
    elseif how == 2 then b = body(nil, phone(p))
    else b = body(email(p), phone(p)) end
  elseif kind == "hot" then
    local p = math.random(0, hot - 1)
    b = body(email(p), phone(p))
  elseif kind == "secondary" then
    b = body(email(person()), "6" .. fresh())
  elseif kind == "person" then
    local n = fresh()
    b = body("n" .. n .. "@new.test", "5" .. n)
  else -- merge: one person's email with another person's phone
    b = body(email(person()), phone(person()))
  end
  return wrk.format("POST", "/identify", headers, b)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, n in pairs(s) do counts[code] = (counts[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(counts) do table.insert(parts, '"' .. code .. '":' .. n) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"timeouts":%d,"non2xx":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write,
    e.timeout, e.status, table.concat(parts, ",")))
end
