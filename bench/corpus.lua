-- wrk script: send the requests of a corpus file written by bench/corpus.py, in order.
--
-- Environment: BENCH_CORPUS (the file), BENCH_PATH (the webhook path), BENCH_THREADS
-- (wrk's -t). Thread i of n sends entries i, i+n, i+2n, ... so that no two threads send
-- the same delivery at the same moment unless the corpus itself repeats it. A thread
-- that reaches the end of its share starts again from the top; those requests are
-- duplicates, which the benchmark reports.

local corpus_path = os.getenv("BENCH_CORPUS")
local webhook_path = os.getenv("BENCH_PATH") or "/webhooks/hitl"
local thread_count = tonumber(os.getenv("BENCH_THREADS") or "1")
local next_thread_id = 0

function setup(thread)
    thread:set("thread_id", next_thread_id)
    next_thread_id = next_thread_id + 1
end

function init(args)
    local file = assert(io.open(corpus_path, "rb"), "cannot open BENCH_CORPUS " .. tostring(corpus_path))
    local data = file:read("*a")
    file:close()

    requests = {}
    local position = 1
    local index = 0
    while position <= #data do
        local line_end = data:find("\n", position, true)
        local signature, length = data:sub(position, line_end - 1):match("^(%x+) (%d+)$")
        length = tonumber(length)
        if index % thread_count == thread_id then
            local body = data:sub(line_end + 1, line_end + length)
            requests[#requests + 1] = wrk.format("POST", webhook_path, {
                ["Content-Type"] = "application/json",
                ["X-HITL-Signature"] = "sha256=" .. signature,
            }, body)
        end
        index = index + 1
        position = line_end + 1 + length
    end
    cursor = 0
end

function request()
    cursor = cursor % #requests + 1
    return requests[cursor]
end
