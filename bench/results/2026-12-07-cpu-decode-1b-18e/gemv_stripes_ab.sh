#!/bin/bash
# Alternates main's bench test binary (build/bench-main.test) with the striped GEMV's
# (build/bench.test: gemv-stripes.diff applied, the stripe size from TILLER_GEMV_STRIPE), each
# `go test -c ./bench`. busy_frac is the share of both cores busy during a run, the benchmark's own
# work included (it runs single-threaded set-up between timed GEMVs).
# Usage: [CFGS="main 128 256"] gemv_stripes_ab.sh OUT (default CFGS: main 64 128 256)
cd "$(git rev-parse --show-toplevel)"
out=$1
cpu() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }
for rep in 1 2 3; do
  for cfg in ${CFGS:-main 64 128 256}; do
    read b0 i0 < <(cpu)
    if [ $cfg = main ]; then bin=build/bench-main.test; env=; else bin=build/bench.test; env="TILLER_GEMV_STRIPE=$cfg"; fi
    res=$(env $env $bin -test.run XXX -test.bench 'MatMul1B_.*1$' -test.benchtime 50x 2>&1 | grep ^Benchmark)
    read b1 i1 < <(cpu)
    echo "$res" | sed "s/^/rep=$rep cfg=$cfg /" >> $out
    echo "rep=$rep cfg=$cfg busy_frac=$(python3 -c "print(round(($b1-$b0)/($b1-$b0+$i1-$i0),3))")" >> $out
  done
done
