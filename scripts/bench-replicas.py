"""Two dynamcp replicas on one data dir (SQLite, the default catalog, the local model): how long
after `dynamcp catalog import` returns each serves the imported server, and uncached search latency
on one of them before and while the import is loaded.

    python3 scripts/bench-replicas.py target/release/dynamcp [MODEL_DIR]

Ports 8201 and 8202 on loopback; a fresh temporary data dir."""
import json, os, subprocess, sys, threading, time, urllib.request, tempfile, statistics

BIN = sys.argv[1]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "models/all-MiniLM-L6-v2")
data = tempfile.mkdtemp(prefix="repl-")
env = dict(os.environ, DYNAMCP_DATA_DIR=data, DYNAMCP_MODEL_DIR=MODEL,
           DYNAMCP_LOG="warn", DYNAMCP_SYNC_SECS="1", DYNAMCP_RATE_LIMIT_PER_SEC="0")

def start(port):
    p = subprocess.Popen([BIN, "serve"], env=dict(env, DYNAMCP_ADDR=f"127.0.0.1:{port}"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2); return p
        except Exception:
            time.sleep(0.2)

def get(port, path):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code

def found(port):
    body = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/servers?q=paperclips", timeout=10))
    return body["total"] > 0

def search(port, q):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/servers/search", method="POST",
        data=json.dumps({"query": q, "limit": 5}).encode(), headers={"Content-Type": "application/json"})
    t = time.perf_counter(); urllib.request.urlopen(req, timeout=30).read(); return time.perf_counter() - t

t0 = time.time(); a = start(8201); print(f"first replica up (default catalog imported) in {time.time()-t0:.1f} s")
b = start(8202)
words = ["weather", "invoices", "calendar", "github issues", "slack", "time in tokyo", "postgres", "files", "notes", "email"]
lat = {"before": [], "during": []}
phase = ["before"]; stop = [False]
def loop():
    i = 0
    while not stop[0]:
        i += 1
        lat[phase[0]].append(search(8201, f"{words[i % len(words)]} {i}"))
th = threading.Thread(target=loop); th.start()
time.sleep(5)
records = {"servers": [{"name": "Replica Probe", "description": "Counts paperclips in a warehouse",
           "tools": ["count_paperclips"]}]}
path = os.path.join(data, "probe.json"); json.dump(records, open(path, "w"))
phase[0] = "during"
t_import = time.time()
out = subprocess.run([BIN, "catalog", "import", path], env=env, capture_output=True, text=True)
t_committed = time.time()
seen = {}
while len(seen) < 2 and time.time() - t_committed < 60:
    for port in (8201, 8202):
        if port not in seen and found(port):
            seen[port] = time.time() - t_committed
    time.sleep(0.02)
time.sleep(3)
stop[0] = True; th.join()
for p in (a, b): p.terminate(); p.wait()
def pct(xs, q): xs = sorted(xs); return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000
print(f"import command: {t_committed - t_import:.2f} s (rc {out.returncode})")
for port, s in sorted(seen.items()): print(f"replica :{port} serves the new server {s:.2f} s after the import command returned")
for k, xs in lat.items():
    print(f"uncached searches {k}: n={len(xs)} p50={pct(xs, .5):.1f} ms p99={pct(xs, .99):.1f} ms max={max(xs)*1000:.1f} ms")
