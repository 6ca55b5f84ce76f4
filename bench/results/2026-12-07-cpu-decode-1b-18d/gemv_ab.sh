#!/bin/sh
# The Llama-3.2-1B shape's decode GEMVs (bench/matmul_test.go, BenchmarkMatMul1B_*), the test
# binary of main (99a988c's tensor package) and of this branch alternated.
# Usage: gemv_ab.sh MAIN.test BRANCH.test REPS
main=$1 branch=$2 reps=${3:-3}
cd "$(dirname "$0")/../../.." && cd bench
i=0
while [ $i -lt "$reps" ]; do
	i=$((i + 1))
	for b in main branch; do
		eval bin=\$$b
		"$bin" -test.run X -test.bench 'MatMul1B_(QProj|GateUp|Down|LMHead)1$' -test.benchtime 1s | grep '^Benchmark' | sed "s/^/rep $i $b /"
	done
done
