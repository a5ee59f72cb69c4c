#!/usr/bin/env python3
"""Instructions per keep-alive request of gatehouse builds, counted by callgrind.

    python3 bench/instructions.py NAME=BINARY [NAME=BINARY ...] [--rounds 3] [--path /1k]

Each build runs under `valgrind --tool=callgrind` behind the same nginx origin as bench/run
(bench.py's Setup), twice per round: a short and a long run of wrk (1 thread, 10 connections).
Start-up and shutdown cost the same in both, so the slope between them,
(Ir_long - Ir_short) / (requests_long - requests_short), is the cost of one request in user
space. callgrind counts instructions, not time: the figure repeats on a busy machine (it moves
by about 1% with how many requests each wake-up finds). Builds alternate within each round;
the median over rounds is printed, with each build's ratio to the first.
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


class Counted(bench.Setup):
    """bench.py's setup, with gatehouse started under callgrind."""

    out_file = None

    def spawn(self, args, cpu, **kw):
        if self.out_file:
            args = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out_file}",
                    "--dump-instr=no", "--compress-strings=no"] + args
        return super().spawn(args, cpu, **kw)


def totals(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def one_run(s, name, binary, seconds, path):
    out_file = os.path.join(s.work, f"cg-{name}-{seconds}-{time.monotonic_ns()}.out")
    s.out_file = out_file
    try:
        p, port, _ = s.start_gatehouse_slow(binary, name)
    finally:
        s.out_file = None
    out = bench.run_load(["wrk", "-t1", "-c10", f"-d{seconds}s", f"http://127.0.0.1:{port}{path}"])
    got = bench.parse_wrk(out)
    if got["bad"]:
        raise RuntimeError(f"{name}: {got['bad']} bad answers")
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    return totals(out_file), got["requests"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("builds", nargs="+", metavar="NAME=BINARY")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--short", type=int, default=4)
    ap.add_argument("--long", type=int, default=15)
    ap.add_argument("--path", default="/1k")
    ap.add_argument("--headers", choices=["same", "xff"], default="same")
    args = ap.parse_args()
    bench.HEADERS = args.headers
    builds = [b.split("=", 1) for b in args.builds]
    work = tempfile.mkdtemp(prefix="gatehouse-instr-")
    s = Counted(work)

    def start_slow(binary, name):
        # The same config as bench.py's; valgrind needs longer than its 10 s to open the port.
        real_wait = bench.wait_port
        bench.wait_port = lambda port, what, proc=None, timeout=10.0: real_wait(port, what, proc, 120.0)
        try:
            return s.start_gatehouse(binary, name)
        finally:
            bench.wait_port = real_wait

    s.start_gatehouse_slow = start_slow
    per = {name: [] for name, _ in builds}
    try:
        s.start_origin()
        for rnd in range(args.rounds):
            order = builds[rnd % len(builds):] + builds[:rnd % len(builds)]
            for name, binary in order:
                ir_s, n_s = one_run(s, name, binary, args.short, args.path)
                ir_l, n_l = one_run(s, name, binary, args.long, args.path)
                slope = (ir_l - ir_s) / max(1, n_l - n_s)
                per[name].append(slope)
                print(f"round {rnd + 1} {name}: {slope:,.0f} instructions per request "
                      f"({n_s} and {n_l} requests)", flush=True)
    finally:
        s.stop()
    first = builds[0][0]
    base = statistics.median(per[first])
    print("\n| build | instructions per request (median) | rounds | ratio to " + first + " |")
    print("|---|---:|---|---:|")
    for name, _ in builds:
        m = statistics.median(per[name])
        rounds = ", ".join(f"{x / 1000:.1f}K" for x in per[name])
        print(f"| {name} | {m:,.0f} | {rounds} | {m / base:.3f} |")


if __name__ == "__main__":
    main()
