#!/usr/bin/env bash
# Everything that needs a GPU, in one go; results land in benchmarks/results/ ready to commit.
#
#   bash benchmarks/measure_gpu.sh CIFAR10_PATH [fast|paper] [RECIPE ...]
#
# 1. the training-speed benchmark (this trainer vs the reports' DataLoader loop), once per day and device
#    (FORCE_SPEED=1 runs it again, SKIP_SPEED=1 skips it);
# 2. compress-bench over the recipes (default: all) into runs/<budget>-<recipes>, a line per epoch (the
#    progress bar is drawn only on a terminal); re-running resumes, so
#    a long run can be split over several calls;
# 3. the run's results.json, report.md and plots copied to benchmarks/results/<budget>-<recipes>-<date>/.
#
# Environment: RESULTS_OUT=DIR also copies every file written in 1 and 3 into DIR (flat), for machines
# whose working tree is a throw-away copy; COMPRESS_GIT_COMMIT names the commit where the tree has no .git.
# For tests on the CPU: DEVICE (default cuda), RESULTS_DIR (default benchmarks/results), RUNS_DIR
# (default runs), SPEED_ARGS (default "--steps 200 --batch-size 128") and BENCH_ARGS (extra
# compress-bench flags, e.g. "--epochs 1"). TIME_LIMIT=SECONDS stops training after that long, writes the
# report of the recipes finished so far and exits 124 (run the same command again to resume).
# See benchmarks/README.md for a whole GPU session.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: benchmarks/measure_gpu.sh CIFAR10_PATH [fast|paper] [RECIPE ...]}
budget=${2:-fast}
shift $(( $# >= 2 ? 2 : 1 ))
device=${DEVICE:-cuda}
results=${RESULTS_DIR:-benchmarks/results}
if [ "$device" != cpu ]; then
  python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to measure')"
fi
day=$(date -u +%F)
written=()
if [ -z "${SKIP_SPEED:-}" ] && { ! ls "$results"/train_speed-*-"$day".json >/dev/null 2>&1 || [ -n "${FORCE_SPEED:-}" ]; }; then
  # shellcheck disable=SC2086  # SPEED_ARGS is a list of flags
  python3 benchmarks/train_speed.py --data "$data" ${SPEED_ARGS:---steps 200 --batch-size 128} --device "$device" --out "$results"
  written+=("$(ls -t "$results"/train_speed-*-"$day".json | head -n 1)")
fi
tag=$(IFS=-; echo "${*:-all}")
run="${RUNS_DIR:-runs}/$budget-$tag"
status=0
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
timeout --signal=INT --kill-after=30 "${TIME_LIMIT:-0}" \
  python3 -m compress "$@" --data "$data" --budget "$budget" --out "$run" --device "$device" ${BENCH_ARGS:-} \
  || status=$?
if [ "$status" = 124 ]; then  # TIME_LIMIT reached: report the recipes finished so far; the next call resumes
  echo "TIME_LIMIT of ${TIME_LIMIT}s reached: partial results; run the same command again to resume"
  python3 -c "import sys; from compress import bench; bench.collect(sys.argv[1])" "$run"
  python3 -m compress report "$run"
elif [ "$status" != 0 ]; then
  exit "$status"
fi
dest="$results/$budget-$tag-$day"
mkdir -p "$dest"
cp "$run"/results.json "$run"/report.md "$run"/*.png "$dest/"
written+=("$dest"/*)
if [ -n "${RESULTS_OUT:-}" ]; then
  mkdir -p "$RESULTS_OUT"
  cp "${written[@]}" "$RESULTS_OUT/"
fi
echo "results in $dest"
exit "$status"
