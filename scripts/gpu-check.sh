#!/usr/bin/env bash
# The CUDA check, as one prepared script for a machine with an NVIDIA GPU and a CUDA build of PyTorch:
# builds dsforge against that PyTorch's libtorch, runs the CUDA-relevant tests on the GPU, trains the
# tiny pipeline on cuda in fp32, bf16 and fp16 (loss scaling), and prints the figures for
# bench/RESULTS.md. Usage: bash scripts/gpu-check.sh [build-dir]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$HERE/build-cuda}"
PY="${PYTHON:-python3}"
PREFIX="$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')"
$PY -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

cmake -S "$HERE" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" -DDSFORGE_NATIVE=ON
cmake --build "$BUILD" -j "$(nproc)"
(cd "$BUILD" && ctest --output-on-failure -j "$(nproc)")

RUN="$(mktemp -d)"
for prec in fp32 bf16 fp16; do
  echo "== pipeline on cuda, $prec"
  "$BUILD/dsforge" pipeline --config "$HERE/configs/run/quickstart.toml" --run.device=cuda \
    --run.out_dir="$RUN/$prec" --train.precision="$prec" --train.max_steps=300 --train.log_every=50 2>&1 | \
    grep -E "micro-batch|step 300/|eval:|perplexity" || true
done
# Data parallelism over every GPU: NCCL for the gradients when this libtorch has it (dsforge doctor says).
"$BUILD/dsforge" doctor | grep -i -E "libtorch|nccl" || true
NGPU="$(nvidia-smi -L | wc -l)"
echo "== data-parallel training on $NGPU GPU(s)"
for stage in "data prepare" "tokenizer train" "tokenize"; do
  "$BUILD/dsforge" $stage --config "$HERE/configs/run/quickstart.toml" --run.out_dir="$RUN/ddp" > /dev/null
done
"$BUILD/dsforge" launch --nproc-per-node "$NGPU" -- train --config "$HERE/configs/run/quickstart.toml" \
  --run.device=cuda --run.out_dir="$RUN/ddp" --train.max_steps=100 --train.log_every=50 2>&1 | \
  grep -E "dist:|NCCL|step 100/" || true
echo "results under $RUN (metrics.jsonl, report.html per precision)"
