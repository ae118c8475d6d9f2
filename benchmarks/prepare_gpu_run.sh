#!/usr/bin/env bash
# What a GPU machine needs to run benchmarks/gpu_check.py with real data
# (docs/measurements/gpu.md, "Bringing CIFAR-10 to a GPU machine"):
#
#   1. the Python packages its image lacks (optuna and what it needs,
#      optuna-dashboard), as wheels for its Python 3.12, at the versions
#      installed here, in .whl/;
#   2. the CIFAR-10 tarball cut into parts in .gpudata/, each small enough to
#      travel with the working tree under the device tool's 64 MiB a call.
#
# Both folders are git-ignored through .git/info/exclude (they are this
# machine's, not the project's). Prints the three device calls to make, one
# after the other, each within the machine's warm window.
#
#   bash benchmarks/prepare_gpu_run.sh [TARBALL]   # default ../shared/data/cifar10-png.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
tarball=${1:-../shared/data/cifar10-png.tar.gz}
part_mib=${PART_MIB:-46}
[ -f "$tarball" ] || { echo "prepare_gpu_run: no tarball at $tarball" >&2; exit 2; }

exclude="$(git rev-parse --git-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
for folder in /.whl/ /.gpudata/; do
    grep -qxF "$folder" "$exclude" 2>/dev/null || echo "$folder" >> "$exclude"
done

# The device image (KINDS.md) has torch, numpy, pandas, scipy, yaml, tqdm,
# matplotlib, PIL, grpcio, pytest; not these.
packages=(optuna alembic colorlog sqlalchemy mako optuna-dashboard bottle)
rm -rf .whl && mkdir -p .whl
for name in "${packages[@]}"; do
    version=$(python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    if ! log=$(python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$name==$version" 2>&1); then
        echo "$log" >&2
        echo "prepare_gpu_run: no Python 3.12 wheel of $name==$version" >&2
        exit 2
    fi
done

rm -rf .gpudata && mkdir -p .gpudata
split -b "${part_mib}M" -d "$tarball" .gpudata/data.part
sha256sum "$tarball" | cut -d' ' -f1 > .gpudata/data.sha256

# What travels besides the carried paths: tracked and untracked-not-ignored files.
tree_mib=$(git ls-files -z --cached --others --exclude-standard | python -c "
import os, sys
names = [n for n in sys.stdin.read().split('\0') if n and os.path.isfile(n)]
print(f'{sum(os.path.getsize(n) for n in names) / 2**20:.1f}')")
whl_mib=$(du -cb .whl/*.whl | tail -1 | awk '{printf "%.1f", $1 / 1048576}')
parts=(.gpudata/data.part*)
echo "working tree ${tree_mib} MiB, wheels ${whl_mib} MiB, ${#parts[@]} data parts of at most ${part_mib} MiB"
echo
last=$(( ${#parts[@]} - 1 ))
for i in "${!parts[@]}"; do
    part=${parts[$i]}
    if [ "$i" -lt "$last" ]; then
        echo "run $((i + 1)): carry [\"$part\"]"
        echo "  mkdir -p /tmp/parts && cp $part /tmp/parts/"
    else
        echo "run $((i + 1)): carry [\"$part\", \".gpudata/data.sha256\", \".whl\"]"
        echo "  cp $part /tmp/parts/ && cat /tmp/parts/data.part* > /tmp/data.tar.gz &&"
        echo "  [ \"\$(sha256sum /tmp/data.tar.gz | cut -d' ' -f1)\" = \"\$(cat .gpudata/data.sha256)\" ] &&"
        echo "  mkdir -p /tmp/cifar10 && tar xzf /tmp/data.tar.gz -C /tmp/cifar10 &&"
        echo "  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl &&"
        echo "  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 &&"
        echo "  python3 benchmarks/gpu_check.py --data /tmp/cifar10 --out \$OUT/gpu_check.json 2>&1 | tee \$OUT/gpu_check.log"
    fi
done
