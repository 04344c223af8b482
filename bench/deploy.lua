-- wrk script: POST /v1/modules, each a new module (unique name) on a label
-- no node has, so it stays pending. Env: BENCH_PREFIX (unique per run),
-- BENCH_TOKEN (the admin token).
local prefix = os.getenv("BENCH_PREFIX") or "b"
local token = os.getenv("BENCH_TOKEN") or ""
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
local n = 0
request = function()
  n = n + 1
  local name = string.format("%s-%d-%d", prefix, tid, n)
  local body = '{"name":"' .. name .. '","package":{"name":"demo","version":"1.0.0"},'
    .. '"placement":{"labels":{"zone":"nowhere"}}}'
  return wrk.format("POST", "/v1/modules",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
