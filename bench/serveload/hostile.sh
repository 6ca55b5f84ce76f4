#!/bin/bash
# The hostile-client measurements of bench/RESULTS.md, for servers built from different commits,
# interleaved: for each round and each LABEL=BINARY given, a fresh `BINARY serve` (default flags,
# the embedded tiny-chat model) on a loopback port, measured by bench/serveload, then stopped.
# Per round and server: one amplification request alone (--amplify), a plain load with hostile
# clients beside it (--hostile 10 at 10 requests/s each, and back to back), and 300 slow-body plus
# 300 idle connections held for 40 s (--hold). Raw output lands in OUT, one file per run, each
# with the machine's load average and CPU busy share over the run (from /proc/stat).
#
#	bench/serveload/hostile.sh OUT ROUNDS before=build/tiller-OLD after=bin/tiller
set -euo pipefail
out=$1 rounds=$2
shift 2
mkdir -p "$out"
cd "$(dirname "$0")/../.."
CGO_LDFLAGS=-L$PWD/build/tokenizers CGO_ENABLED=1 go build -o build/serveload ./bench/serveload
export TILLER_CACHE=$PWD/build/hostile-cache
cpu() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat; }
port=18400
measure() { # label binary kind args...
	local label=$1 bin=$2 kind=$3
	shift 3
	port=$((port + 1))
	"$bin" serve --addr 127.0.0.1:$port >"$out/.serve.out" 2>"$out/.serve.err" &
	local pid=$!
	for _ in $(seq 100); do grep -q http:// "$out/.serve.out" 2>/dev/null && break; sleep 0.1; done
	local file="$out/$label-$kind-$round.txt"
	read -r t0 i0 < <(cpu)
	{
		echo "server: $bin serve (default flags, embedded tiny-chat model), pid $pid; $(date -u +%FT%TZ)"
		echo "load average before: $(cat /proc/loadavg)"
		build/serveload --url http://127.0.0.1:$port --hidden-size 128 --layers 6 --server-pid $pid "$@" 2>&1 || echo "serveload exit $?"
		read -r t1 i1 < <(cpu)
		echo "load average after: $(cat /proc/loadavg); CPU busy over the run: $(( 100 * ((t1 - t0) - (i1 - i0)) / (t1 - t0) ))% of 2 vCPUs"
	} >"$file"
	kill $pid
	wait $pid 2>/dev/null || true
	echo "$file"
}
for round in $(seq "$rounds"); do
	for pair in "$@"; do
		label=${pair%%=*} bin=${pair#*=}
		measure "$label" "$bin" amplify --amplify --max-tokens 16 --timeout 5m
		measure "$label" "$bin" load --hostile 10 --hostile-rate 10 --concurrency 8 --requests 512 --rounds 2 --max-tokens 32 --timeout 8m
		measure "$label" "$bin" load-backtoback --hostile 10 --hostile-rate 0 --concurrency 8 --requests 512 --rounds 2 --max-tokens 32 --timeout 8m
		measure "$label" "$bin" hold --hold 300 --hold-for 40s --timeout 5m
	done
done
