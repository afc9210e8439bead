#!/usr/bin/env python3
"""Workspace start times on this machine (docs/workspaces.md, "Measured").

Starts a `vt server` (SQLite in a temporary directory, both origins on free loopback ports,
the default template), creates a workspace, then stops and starts it RUNS times. For each run
it prints, phase by phase: the API's answer, the node's boot timings of the IDE's instance
(root disk, VMM spawned, kernel->init, init->entrypoint, healthy), the workspace `running`
as `vt workspace get` sees it, and the workbench served through the workspace origin; then
p50/p95 per phase. With `--suspend`, each stop is a suspend (`stop?suspend=true`, waited for
`suspended`) and each start a resume (the boot timings are then those of the resume: no
kernel or init phases).

    scripts/workspace-bench.py [--runs 5] [--suspend] [--vt target/release/vt]     # as root
"""
import argparse, base64, json, os, re, signal, socket, statistics, subprocess, sys, tempfile, time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PHASES = ["root_disk_ms", "vmm_spawned_ms", "kernel_to_init_ms", "init_to_entrypoint_ms", "healthy_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--suspend", action="store_true", help="suspend and resume instead of stop and start")
    ap.add_argument("--vt", default=os.path.join(HERE, "..", "target", "release", "vt"))
    a = ap.parse_args()
    env = dict(os.environ, VT=a.vt)
    layout = subprocess.run(["bash", os.path.join(HERE, "workspace-template.sh")], env=env, check=True,
                            stdout=subprocess.PIPE, text=True).stdout.strip()
    d = tempfile.mkdtemp(prefix="vt-ws-bench-")
    data = os.path.join(d, "data")
    server = subprocess.Popen(
        [a.vt, "server", "--data-dir", data, "--listen", "127.0.0.1:0", "--workspace-listen", "127.0.0.1:0",
         "--no-ingress", "--node-name", "bench", "--workspace-template", layout],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    api = origin = None
    for line in server.stdout:
        m = re.match(r"workspaces on (http://[^/]+)/", line)
        origin = m.group(1) if m else origin
        if line.startswith("vt server ready on "):
            api = line.split()[-1]
            break
    if not api:
        sys.exit("the server did not start")
    try:
        run(a, api, origin, data)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        subprocess.run(["rm", "-rf", d])


def run(a, api, origin, data):
    token = open(os.path.join(data, "admin-token")).read().strip()
    password = open(os.path.join(data, "console-password")).read().strip()
    basic = "Basic " + base64.b64encode(f"vt:{password}".encode()).decode()

    def call(method, path, body=None):
        req = urllib.request.Request(api + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            return json.load(r)

    def workbench():
        req = urllib.request.Request(origin + "/workspace/bench/?folder=/home/vt", headers={"Authorization": basic})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return b"workbench" in r.read()
        except Exception:
            return False

    def measure(what, action):
        began = time.monotonic()
        action()
        answered = time.monotonic() - began
        running = None
        while True:
            w = call("GET", "/v1/workspaces/bench")
            if w["status"] == "running" and running is None:
                running = time.monotonic() - began
            if w["status"] == "failed":
                sys.exit(f"failed: {w['reason']}")
            if running is not None and workbench():
                served = time.monotonic() - began
                break
            time.sleep(0.1)
        boot = call("GET", f"/v1/instances/{w['instance_id']}").get("boot") or {}
        row = {"run": what, "answered": answered * 1000, "running": running * 1000, "served": served * 1000}
        row.update({p: boot.get(p) for p in PHASES})
        return row

    call("POST", "/v1/orgs", {"name": "bench"})
    rows = [measure("create", lambda: call("POST", "/v1/workspaces", {"name": "bench", "org": "bench"}))]
    for i in range(a.runs):
        began = time.monotonic()
        call("POST", "/v1/workspaces/bench/stop" + ("?suspend=true" if a.suspend else ""))
        until = "suspended" if a.suspend else "stopped"
        while call("GET", "/v1/workspaces/bench")["status"] != until:
            time.sleep(0.1)
        print(f"{until} in {(time.monotonic() - began) * 1000:.0f} ms", file=sys.stderr)
        rows.append(measure(f"start {i + 1}", lambda: call("POST", "/v1/workspaces/bench/start")))
    cols = ["answered", *PHASES, "running", "served"]
    print(f"{'run':<9}" + "".join(f"{c:>22}" for c in cols) + "   (ms)")
    for r in rows:
        print(f"{r['run']:<9}" + "".join(f"{fmt(r[c]):>22}" for c in cols))
    starts = rows[1:]
    for name, q in [("p50", 0.5), ("p95", 0.95)]:
        print(f"{'start ' + name:<9}" + "".join(f"{fmt(rank([r[c] for r in starts if r[c] is not None], q)):>22}" for c in cols))


def rank(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[max(0, min(len(values) - 1, int(round(q * len(values) + 0.5)) - 1))]


def fmt(v):
    return "-" if v is None else f"{v:.0f}"


if __name__ == "__main__":
    main()
