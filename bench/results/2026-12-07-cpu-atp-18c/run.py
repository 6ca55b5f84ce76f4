#!/usr/bin/env python3
"""Runs `go test` binaries of the AtP benchmark in turn (A, B, A, B, ...), each run's output with
its own CPU time and the background load during it: others_busy is the share of both cores that
other processes used, from /proc/stat less the run's own CPU time.

Usage: [BENCH=regexp] run.py OUTDIR REPS NAME=BINARY ...   (TILLER_BENCH_MODEL: the SmolLM2 folder;
BENCH: the benchmarks, default AtPReal)
"""
import os, resource, subprocess, sys

def stat():
    f = open("/proc/stat").readline().split()[1:]
    v = list(map(int, f))
    idle = v[3] + v[4]
    return sum(v), sum(v) - idle

out, reps, bins = sys.argv[1], int(sys.argv[2]), [a.split("=", 1) for a in sys.argv[3:]]
hz = os.sysconf("SC_CLK_TCK")
for rep in range(1, reps + 1):
    for name, binary in bins:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0, b0 = stat()
        p = subprocess.run([binary, "-test.run", "X", "-test.bench", os.environ.get("BENCH", "AtPReal"), "-test.benchtime", "3x"],
                           capture_output=True, text=True)
        t1, b1 = stat()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        total, busy = (t1 - t0) / hz, (b1 - b0) / hz
        others = max(0.0, (busy - own) / total) if total > 0 else 0.0
        with open(f"{out}/{name}-{rep}.txt", "w") as f:
            f.write(p.stdout + p.stderr)
            f.write(f"OWN {r1.ru_utime - r0.ru_utime:.2f} {r1.ru_stime - r0.ru_stime:.2f} minflt={r1.ru_minflt - r0.ru_minflt}\n")
            f.write(f"others_busy={others:.2f}\n")
        print(name, rep, f"others_busy={others:.2f}", flush=True)
