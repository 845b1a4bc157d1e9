#!/usr/bin/env python3
"""roomcast soak: a long mixed workload, then checks that memory and file descriptors
came back flat (shared/RELIABILITY.md, issue 6 "A soak").

Started by `bash scripts/soak.sh [MINUTES]` (which builds the release binaries first).

What runs, all on loopback, for MINUTES (default 30) in rounds of ROUND_S seconds:
  - redis-server with the module (room history on), lease 1.5 s;
  - edge A: long-lived, the one whose memory and descriptors are judged;
  - edge B: SIGKILLed in the middle of every round while it holds clients, and
    started again (a fresh node id each time; the module sweeps the dead one);
  - per round, with the roomcast-fanout load generator: open-loop publishing in rooms
    whose members sit on A (latency, loss counted), connect/join/close churn over A and
    B, and idle connections held on B when it is killed.
Sampled every SAMPLE_S seconds: edge A's RSS and open descriptors, redis-server's
RSS, used_memory and clients, and RC.INFO's connections/rooms/nodes.

Verdict, after the load stops and one lease has passed:
  - edge A's descriptors back to their baseline (+ 4 for Redis reconnects),
  - edge A's RSS at the end of the last round within 15 % + 2 MiB of its value at the
    end of round 2 (the allocator keeps freed pages; growth across rounds is the leak
    signal, not the first round's warm-up),
  - RC.INFO connections and rooms back to 0 and one node (edge A's worker) left,
  - Redis used_memory within 1 MiB + 10 % of its value after round 2 (every round
    reuses the same room and user names, so room history stays bounded by history-len
    and inboxes by inbox-maxlen; fresh names each round would add retained history,
    which lives for history-ttl-ms by design),
  - no fan-out loss reported by any round (edge A is never killed).
Writes target/soak/<stamp>/samples.jsonl and summary.json; exit status 0 = pass.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
MINUTES = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
ROUND_S = float(os.environ.get("ROUND_S", "60"))
SAMPLE_S = float(os.environ.get("SAMPLE_S", "5"))
LEASE_MS = 1500
STAMP = time.strftime("%Y%m%d-%H%M%S")
OUT = os.path.join(ROOT, "target", "soak", STAMP)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print(f"== [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Soak:
    def __init__(self):
        os.makedirs(OUT, exist_ok=True)
        self.procs = []
        self.redis_port = free_port()
        self.redis = None
        self.edge_a = None
        self.edge_b = None
        self.b_generation = 0
        self.samples = open(os.path.join(OUT, "samples.jsonl"), "w")

    # ------------------------------------------------------------ processes
    def start_redis(self):
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", OUT,
             "--logfile", os.path.join(OUT, "redis.log"),
             "--loadmodule", os.path.join(REL, "libroomcast.so"),
             "history-len", "200", "inbox-maxlen", "10000"])
        for _ in range(100):
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.1)
        raise SystemExit("soak: redis-server did not start; see " + OUT + "/redis.log")

    def start_edge(self, node):
        err = open(os.path.join(OUT, f"{node}.err"), "w")
        out_path = os.path.join(OUT, f"{node}.out")
        p = subprocess.Popen(
            [os.path.join(REL, "roomcast-edge"), "--redis", f"redis://127.0.0.1:{self.redis_port}/",
             "--workers", "1", "--allow-anonymous", "--conn-rate", "0", "--listen", "127.0.0.1:0",
             "--node-id", node, "--lease-ms", str(LEASE_MS), "--drain-ms", "1000"],
            stdout=open(out_path, "w"), stderr=err)
        for _ in range(150):
            text = open(out_path).read()
            if "listening on http://" in text:
                addr = text.split("listening on http://", 1)[1].split()[0]
                time.sleep(0.5)  # lease taken, inbox reader running
                return p, addr
            if p.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"soak: edge {node} did not start; see {OUT}/{node}.err")

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.redis_port), *args],
                           capture_output=True, text=True)
        return r.stdout.strip()

    def gen(self, mode, edges, *args, name):
        f = os.path.join(OUT, f"{name}.json")
        p = subprocess.Popen(
            [os.path.join(REL, "roomcast-fanout"), mode, "--edges", ",".join(edges),
             "--out", f, *args],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(OUT, f"{name}.err"), "w"))
        return p, f

    # ------------------------------------------------------------ sampling
    @staticmethod
    def proc_status(pid):
        try:
            rss = 0
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            return rss, fds
        except OSError:
            return None, None

    def rc_info(self):
        # redis-cli prints one value per line, the nested `tags` array included, so
        # look each wanted name up and take the line after it.
        info = {}
        lines = self.cli("RC.INFO").splitlines()
        for key in ("nodes", "connections", "rooms", "published", "routed"):
            if key in lines:
                i = lines.index(key)
                try:
                    info[key] = int(lines[i + 1])
                except (IndexError, ValueError):
                    pass
        return info

    def sample(self, phase):
        a_rss, a_fds = self.proc_status(self.edge_a[0].pid)
        r_rss, _ = self.proc_status(self.redis.pid)
        mem = {}
        for line in self.cli("INFO", "memory").splitlines() + self.cli("INFO", "clients").splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                mem[k] = v
        s = {
            "t": round(time.time() - self.t0, 1), "phase": phase,
            "edge_a_rss_kb": a_rss, "edge_a_fds": a_fds, "redis_rss_kb": r_rss,
            "redis_used_memory": int(mem.get("used_memory", 0)),
            "redis_clients": int(mem.get("connected_clients", 0)),
            "rc": self.rc_info(),
        }
        self.samples.write(json.dumps(s) + "\n")
        self.samples.flush()
        return s

    def wait_sampling(self, seconds, phase):
        end = time.time() + seconds
        last = None
        while time.time() < end:
            last = self.sample(phase)
            time.sleep(min(SAMPLE_S, max(0.0, end - time.time())))
        return last or self.sample(phase)

    # ------------------------------------------------------------ the run
    def round(self, n):
        a, b = self.edge_a[1], self.edge_b[1]
        half = ROUND_S / 2
        fan, fan_f = self.gen("fanout", [a], "--rooms", "20", "--members", "10", "--rate", "20",
                              "--seconds", str(ROUND_S - 6), "--warmup", "1", "--drain", "2",
                              "--prefix", "sf", name=f"round{n}-fanout")
        churn, churn_f = self.gen("churn", [a, b], "--conns", "600", "--rooms", "60",
                                  "--rate", "50", "--seconds", str(half - 4), "--warmup", "1",
                                  "--prefix", "sc", name=f"round{n}-churn")
        idle, _ = self.gen("idle", [b], "--conns", "1000", "--hold", str(ROUND_S),
                           "--prefix", "si", name=f"round{n}-idle")
        self.wait_sampling(half, f"round{n}")
        # Kill B while it holds the idle clients (and whatever churn left there).
        self.edge_b[0].send_signal(signal.SIGKILL)
        self.edge_b[0].wait()
        log(f"round {n}: edge B killed with SIGKILL while holding clients")
        self.b_generation += 1
        self.edge_b = self.start_edge(f"soakb{self.b_generation}")
        last = self.wait_sampling(half, f"round{n}")
        for p in (fan, churn, idle):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        loss = None
        try:
            r = json.load(open(fan_f))
            loss = r.get("loss")
            log(f"round {n}: fan-out {r.get('delivered_per_s', 0):,.0f}/s, loss {loss}, "
                f"p99 {r['latency_us']['p99'] / 1000:.2f} ms; edge A RSS {last['edge_a_rss_kb']} KB, "
                f"fds {last['edge_a_fds']}; redis used_memory {last['redis_used_memory']:,}")
        except (OSError, ValueError, KeyError) as e:
            log(f"round {n}: no fan-out result ({e})")
        return loss, last

    def run(self):
        self.t0 = time.time()
        self.start_redis()
        self.edge_a = self.start_edge("soaka")
        self.edge_b = self.start_edge("soakb0")
        self.procs = [self.redis]
        baseline = self.sample("baseline")
        log(f"soak for {MINUTES:g} min in rounds of {ROUND_S:g} s; results in {OUT}")
        rounds = max(3, int(MINUTES * 60 // ROUND_S))
        losses, ends = [], []
        for n in range(1, rounds + 1):
            loss, last = self.round(n)
            losses.append(loss)
            ends.append(last)
        # Load stopped: kill the last B too (its clients are gone), let a lease pass.
        self.edge_b[0].send_signal(signal.SIGTERM)
        self.edge_b[0].wait()
        final = self.wait_sampling(3 * LEASE_MS / 1000 + 2, "after")
        return self.verdict(baseline, ends, final, losses)

    def verdict(self, baseline, ends, final, losses):
        ref = ends[1]  # end of round 2
        checks = []

        def check(name, ok, detail):
            checks.append({"check": name, "ok": bool(ok), "detail": detail})

        check("edge A descriptors back to baseline",
              final["edge_a_fds"] is not None and final["edge_a_fds"] <= baseline["edge_a_fds"] + 4,
              f"baseline {baseline['edge_a_fds']}, after {final['edge_a_fds']}")
        last = ends[-1]
        check("edge A RSS flat across rounds",
              last["edge_a_rss_kb"] <= ref["edge_a_rss_kb"] * 1.15 + 2048,
              f"end of round 2 {ref['edge_a_rss_kb']} KB, end of round {len(ends)} "
              f"{last['edge_a_rss_kb']} KB, after {final['edge_a_rss_kb']} KB")
        check("presence and rooms empty, one node left",
              final["rc"].get("connections") == 0 and final["rc"].get("rooms") == 0
              and final["rc"].get("nodes") == 1,
              f"RC.INFO after: {final['rc']}")
        check("Redis memory flat",
              final["redis_used_memory"] <= ref["redis_used_memory"] * 1.10 + 1024 * 1024,
              f"after round 2 {ref['redis_used_memory']:,}, after {final['redis_used_memory']:,}")
        check("no fan-out loss on the long-lived edge",
              all(loss == 0 for loss in losses), f"loss per round: {losses}")
        summary = {"minutes": MINUTES, "rounds": len(ends), "round_s": ROUND_S,
                   "edge_b_kills": self.b_generation, "baseline": baseline,
                   "round2": ref, "last_round": last, "after": final, "checks": checks}
        json.dump(summary, open(os.path.join(OUT, "summary.json"), "w"), indent=1)
        print()
        for c in checks:
            print(f"  {'PASS' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}")
        ok = all(c["ok"] for c in checks)
        print(f"\nsoak {'passed' if ok else 'FAILED'}: {len(ends)} rounds, "
              f"{self.b_generation} edge kills; {OUT}/summary.json")
        return 0 if ok else 1

    def stop(self):
        for p in [self.edge_a and self.edge_a[0], self.edge_b and self.edge_b[0], self.redis]:
            if p and p.poll() is None:
                p.kill()
                p.wait()


def main():
    soak = Soak()
    try:
        return soak.run()
    finally:
        soak.stop()


if __name__ == "__main__":
    sys.exit(main())
