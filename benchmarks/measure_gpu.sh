#!/usr/bin/env bash
# Everything that needs a GPU, in one go; results land in benchmarks/results/ ready to commit.
#
#   bash benchmarks/measure_gpu.sh CIFAR10_PATH [fast|paper] [RECIPE ...]
#
# 1. the training-speed benchmark (this trainer vs the reports' DataLoader loop), once per day and device;
# 2. compress-bench over the recipes (default: all) into runs/<budget>; re-running resumes, so a long
#    run can be split over several calls;
# 3. the run's results.json, report.md and plots copied to benchmarks/results/<budget>-<recipes>-<date>/.
# Without .git in the tree (a copied checkout), set COMPRESS_GIT_COMMIT so results name their commit.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: benchmarks/measure_gpu.sh CIFAR10_PATH [fast|paper] [RECIPE ...]}
budget=${2:-fast}
shift $(( $# >= 2 ? 2 : 1 ))
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to measure')"
day=$(date -u +%F)
if ! ls benchmarks/results/train_speed-*-"$day".json >/dev/null 2>&1 || [ -n "${FORCE_SPEED:-}" ]; then
  python3 benchmarks/train_speed.py --data "$data" --steps 200 --batch-size 128 --device cuda
fi
tag=$(IFS=-; echo "${*:-all}")
run="runs/$budget-$tag"
python3 -m compress "$@" --data "$data" --budget "$budget" --out "$run" --no-progress
dest="benchmarks/results/$budget-$tag-$day"
mkdir -p "$dest"
cp "$run"/results.json "$run"/report.md "$run"/*.png "$dest/"
echo "results in $dest"
