#!/bin/bash
# qrwkv bench and llama.cpp's llama-bench back to back on the same shapes, weights and formats.
#
#   bench/llama_cpp_compare.sh LLAMA_CPP_DIR [MODEL_DIR ...]
#
# LLAMA_CPP_DIR is a llama.cpp source tree (for example brought with `git clone` or a mirror of
# ggerganov/llama.cpp); it is built once under it (build/, -DGGML_NATIVE=ON) unless its
# llama-bench and llama-quantize exist. Each MODEL_DIR is a BF16 checkpoint made by `qrwkv synth`
# (default: synth QRWKV6 and Qwen2 models of the Qwen2.5-0.5B shapes, written to $WORK). Each is
# written as GGUF by bench/synth_to_gguf.py (with the tree's gguf-py; needs python3-numpy),
# quantized to Q8_0 and Q4_0 by llama-quantize, and benchmarked by both engines in turn:
# pp512 and tg128, $REPS repetitions, $THREADS threads, qrwkv at its default kernel level and at
# avx512vnni (int8 activations, the precision llama.cpp uses for Q8_0 and Q4_0 weights) where
# the CPU has it. qrwkv's q4_0_pure is compared with llama.cpp's Q4_0 (every matrix in 4 bits;
# llama.cpp keeps its output matrix in Q6_K).
set -euo pipefail

LLAMA=${1:?usage: bench/llama_cpp_compare.sh LLAMA_CPP_DIR [MODEL_DIR ...]}
shift
HERE=$(cd "$(dirname "$0")/.." && pwd)
QRWKV=${QRWKV:-$HERE/build/release/qrwkv}
WORK=${WORK:-/tmp/qrwkv-llama-compare}
REPS=${REPS:-3}
THREADS=${THREADS:-$(nproc)}
PY=${PY:-/usr/bin/python3}
mkdir -p "$WORK"

B=$LLAMA/build/bin
if [[ ! -x $B/llama-bench || ! -x $B/llama-quantize ]]; then
  cmake -S "$LLAMA" -B "$LLAMA/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF
  ninja -C "$LLAMA/build" llama-bench llama-quantize
fi

models=("$@")
if [[ ${#models[@]} -eq 0 ]]; then
  for arch in rwkv6qwen2 qwen2; do
    dir=$WORK/synth-$arch-0.5b
    [[ -f $dir/config.json ]] || "$QRWKV" synth --shape qwen2.5-0.5b --arch $arch -o "$dir"
    models+=("$dir")
  done
fi

levels=(default)
if grep -q avx512_vnni /proc/cpuinfo && grep -q avx512_bf16 /proc/cpuinfo; then
  levels+=(avx512vnni)
fi

for m in "${models[@]}"; do
  name=$(basename "$m")
  bf16=$WORK/$name-BF16.gguf
  [[ -f $bf16 ]] || "$PY" "$HERE/bench/synth_to_gguf.py" --gguf-py "$LLAMA/gguf-py" -m "$m" -o "$bf16"
  for q in Q8_0 Q4_0; do
    [[ -f $WORK/$name-$q.gguf ]] || "$B/llama-quantize" "$bf16" "$WORK/$name-$q.gguf" $q "$THREADS" >/dev/null 2>&1
  done
  for fmt in BF16 Q8_0 Q4_0; do
    ours=$(echo $fmt | tr 'A-Z' 'a-z')
    [[ $fmt == Q4_0 ]] && ours=q4_0_pure
    echo "### $name $fmt"
    "$B/llama-bench" -m "$WORK/$name-$fmt.gguf" -p 512 -n 128 -t "$THREADS" -r "$REPS" | grep -E '^\|'
    for lv in "${levels[@]}"; do
      if [[ $lv == default ]]; then
        "$QRWKV" bench -m "$m" --dtype "$ours" -p 512 -n 128 -t "$THREADS" -r "$REPS" | grep -E '^\|'
      else
        QRWKV_ISA=$lv "$QRWKV" bench -m "$m" --dtype "$ours" -p 512 -n 128 -t "$THREADS" -r "$REPS" |
          grep -E '^\|' | tail -n +3
      fi
    done
  done
done
