"""1, 2 and 3 dynamcp replicas on one PostgreSQL, side by side in one run, with the same client:
chat and search throughput, how soon an agent deleted through one replica has its server stopped
on another (with DYNAMCP_PACKAGE_DIR set to a package store holding mcp-server-time), how soon a `dynamcp catalog import` is searchable on each replica and
what searches meanwhile take (five imports, one after the other), the latency of a request with the shared rate limit (a budget row in
PostgreSQL) against one without, and how much of one tenant's budget three replicas let through
against one replica.

    [DYNAMCP_PACKAGE_DIR=target/tmp/mcp-package-store] \
    python3 scripts/bench-scale.py target/release/dynamcp postgres://user@host:port/empty_db [SECONDS]

The database must be empty (the first start imports the default catalog into it). Replicas listen
on loopback ports 8301-8303, each with its own temporary data dir, one ENCRYPTION_KEY and the
offline planner (no model API key); plans are not verified (DYNAMCP_VERIFY_SERVERS=false), so a
chat turn is planning and storing. The client is 8 threads with keep-alive connections sending to
the replicas in turn; it runs on the same machine, so the figures are for this machine's cores
shared by the client, PostgreSQL and every replica."""
import base64, http.client, json, os, statistics, subprocess, sys, tempfile, threading, time

BIN, DATABASE_URL = sys.argv[1], sys.argv[2]
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models/all-MiniLM-L6-v2")
KEY = base64.b64encode(os.urandom(32)).decode()
PORTS = [8301, 8302, 8303]
THREADS = 8
# Where replicas find installed MCP server packages (the tests' store has mcp-server-time).
PACKAGES = os.environ.get("DYNAMCP_PACKAGE_DIR")


def environment(**extra):
    return dict(os.environ, DATABASE_URL=DATABASE_URL, ENCRYPTION_KEY=KEY, DYNAMCP_MODEL_DIR=MODEL,
                DYNAMCP_LOG="warn", DYNAMCP_VERIFY_SERVERS="false", **extra)


DATA_DIRS = {}


def start(port, **extra):
    DATA_DIRS[port] = tempfile.mkdtemp(prefix=f"scale-{port}-")
    env = environment(DYNAMCP_DATA_DIR=DATA_DIRS[port], DYNAMCP_ADDR=f"127.0.0.1:{port}", **extra)
    p = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if json.loads(c.getresponse().read())["catalog"]["servers"] > 0:
                return p
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"replica on {port} did not start")


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()


def request(conn, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    t = time.perf_counter()
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    r.read()
    return r.status, time.perf_counter() - t


def load(ports, make, seconds=SECONDS, threads=THREADS):
    """Sends `make(i)` = (method, path, body) requests round robin over `ports` for `seconds`."""
    results, lock, end = [], threading.Lock(), time.time() + seconds
    counter = iter(range(10**9))

    def worker(w):
        conns = {p: http.client.HTTPConnection("127.0.0.1", p, timeout=60) for p in ports}
        mine = []
        while time.time() < end:
            i = next(counter)
            port = ports[i % len(ports)]
            method, path, body = make(i)
            mine.append(request(conns[port], method, path, body))
        with lock:
            results.extend(mine)

    ts = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results, time.time() - t0


def summary(results, took):
    ok = [d for s, d in results if s == 200]
    lat = sorted(ok) or [0.0]
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    return (f"{len(ok) / took:7.1f}/s ok, {len(results) - len(ok)} other, "
            f"p50 {p(0.5):6.1f} ms, p99 {p(0.99):6.1f} ms")


CITIES = ["Tokyo", "Paris", "Lima", "Oslo", "Cairo", "Perth", "Quito", "Delhi"]
WORDS = ["weather", "invoices", "calendar", "github issues", "slack", "postgres", "files", "notes"]
chat = lambda i: ("POST", "/api/chat", {"message": f"what time is it in {CITIES[i % 8]}? ({i})"})
search = lambda i: ("POST", "/api/servers/search", {"query": f"{WORDS[i % 8]} {i}", "limit": 5})
agents = lambda i: ("GET", "/api/agents?limit=1", None)

print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.cpu_count()} cores, {SECONDS:.0f} s per row, "
      f"{THREADS} client threads")
t0 = time.time()
unlimited = {"DYNAMCP_RATE_LIMIT_PER_SEC": "0"}
procs = [start(PORTS[0], **unlimited)]
print(f"first replica up on the empty database (default catalog imported) in {time.time() - t0:.1f} s")
t0 = time.time()
procs += [start(p, **unlimited) for p in PORTS[1:]]
print(f"two more replicas up in {time.time() - t0:.1f} s")
print("\n-- throughput (no rate limit), requests sent to the replicas in turn --")
for name, make in [("search", search), ("chat", chat)]:
    for n in (1, 2, 3):
        print(f"{name:6} x{n} replicas: {summary(*load(PORTS[:n], make))}")


def found(port, word):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", f"/api/servers?q={word}")
    return json.loads(c.getresponse().read())["total"] > 0


IMPORTS = 5
print(f"\n-- `dynamcp catalog import` of one server, {IMPORTS} times, one client thread searching the first replica --")
lat, phase, searching = {"before": [], "during": [], "between": []}, ["before"], [True]


def search_loop():
    conn, i = http.client.HTTPConnection("127.0.0.1", PORTS[0], timeout=60), 0
    while searching[0]:
        i += 1
        # Queries of their own: the throughput rows' answers are cached.
        status, took = request(conn, "POST", "/api/servers/search",
                               {"query": f"{WORDS[i % 8]} during import {i}", "limit": 5})
        lat[phase[0]].append(took if status == 200 else float("inf"))


th = threading.Thread(target=search_loop)
th.start()
time.sleep(5)
probes = tempfile.mkdtemp(prefix="scale-probe-")
for n in range(IMPORTS):
    # A word of its own per import, so each import's server is told apart.
    word = f"paperclips{n}x"
    probe = os.path.join(probes, f"probe{n}.json")
    json.dump({"servers": [{"name": f"Replica Probe {n}", "description": f"Counts {word} in a warehouse",
                            "tools": ["count_paperclips"]}]}, open(probe, "w"))
    phase[0] = "during"
    t_import = time.time()
    out = subprocess.run([BIN, "catalog", "import", probe], capture_output=True, text=True,
                         env=environment(DYNAMCP_DATA_DIR=tempfile.mkdtemp(prefix="scale-cli-")))
    t_returned, seen = time.time(), {}
    while len(seen) < len(PORTS) and time.time() - t_returned < 120:
        for port in PORTS:
            if port not in seen and found(port, word):
                seen[port] = time.time() - t_returned
        time.sleep(0.01)
    phase[0] = "between"
    print(f"import {n + 1}: exit {out.returncode}, took {t_returned - t_import:.2f} s; searchable after it returned: "
          + ", ".join(f"replica {PORTS.index(p) + 1} {seen.get(p, float('nan')):.2f} s" for p in PORTS))
    time.sleep(2)
searching[0] = False
th.join()
for k in ("before", "during"):
    v = sorted(lat[k]) or [0.0]
    print(f"  search {k:6}: n={len(v)} ({sum(x == float('inf') for x in v)} not 200), p50 {statistics.median(v) * 1000:.1f} ms, "
          f"p99 {v[min(len(v) - 1, int(0.99 * len(v)))] * 1000:.1f} ms, max {v[-1] * 1000:.1f} ms")


def under(port, replica_pid):
    """Pids of the processes a replica started (found by its data dir, as its sandboxes bind it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if DATA_DIRS[port] in cmd and int(pid) != replica_pid:
            found.append(pid)
    return found


print("\n-- an agent planned on replica 1, its server started on replica 2, deleted through replica 3 --")
if PACKAGES:
    c = http.client.HTTPConnection("127.0.0.1", PORTS[0], timeout=60)
    c.request("POST", "/api/chat", json.dumps({"message": "what time is it in Tokyo?"}),
              {"Content-Type": "application/json"})
    agent = json.loads(c.getresponse().read())["agent_id"]
    c = http.client.HTTPConnection("127.0.0.1", PORTS[1], timeout=300)
    t = time.time()
    c.request("GET", f"/api/agents/{agent}/tools")
    tools = json.loads(c.getresponse().read())
    print(f"tools on replica 2: {[x['status'] for x in tools['servers']]} in {time.time() - t:.2f} s; "
          f"processes under it: {len(under(PORTS[1], procs[1].pid))}")
    c = http.client.HTTPConnection("127.0.0.1", PORTS[2], timeout=60)
    t = time.time()
    c.request("DELETE", f"/api/agents/{agent}")
    status = c.getresponse().status
    returned = time.time()
    while under(PORTS[1], procs[1].pid) and time.time() - returned < 60:
        time.sleep(0.01)
    print(f"delete answered {status} in {returned - t:.3f} s; replica 2's server processes gone "
          f"{time.time() - returned:.2f} s after (left: {len(under(PORTS[1], procs[1].pid))})")
else:
    print("skipped: set DYNAMCP_PACKAGE_DIR to a package store holding mcp-server-time")
stop(procs)

print("\n-- a guarded request (GET /api/agents?limit=1) on one replica --")
for label, extra in [("no rate limit        ", {"DYNAMCP_RATE_LIMIT_PER_SEC": "0"}),
                     ("shared budget (on PG)", {"DYNAMCP_RATE_LIMIT_PER_SEC": "1000000",
                                                "DYNAMCP_RATE_LIMIT_BURST": "1000000"})]:
    p = start(PORTS[0], **extra)
    load(PORTS[:1], agents, seconds=2)
    print(f"{label}: {summary(*load(PORTS[:1], agents, threads=1))} (1 client thread)")
    stop([p])

print("\n-- one tenant's budget: 20/s, burst 20, hammered for the row's seconds --")
extra = {"DYNAMCP_RATE_LIMIT_PER_SEC": "20", "DYNAMCP_RATE_LIMIT_BURST": "20"}
procs = [start(p, **extra) for p in PORTS]
expected = 20 + 20 * SECONDS
for n in (1, 3):
    time.sleep(2)  # the budget fills again
    results, took = load(PORTS[:n], agents)
    ok = sum(1 for s, _ in results if s == 200)
    print(f"x{n} replicas: {ok} of {len(results)} let through in {took:.1f} s "
          f"(the budget allows {expected:.0f}: {100 * ok / expected:.0f}%)")
stop(procs)
