#include "backend/cpu/kernels.h"

#include <algorithm>
#include <array>
#include <iterator>

#include "ops/quant.h"

namespace qrwkv::cpu {

const Kernels& kernels_for(Isa level) {
  static const auto tables = [] {
    std::array<Kernels, std::size(kAllIsas)> t{};
    for (Isa l : kAllIsas) {
      if (l > max_isa()) break;
      Kernels& k = t[static_cast<size_t>(l)];
      // Each level starts from the one below and replaces what it does better.
      if (l > Isa::Portable) k = t[static_cast<size_t>(l) - 1];
      k.level = l;
      switch (l) {
        case Isa::Portable:
          portable::fill(k);
          k.dequant_row = [](DType dt, const uint8_t* blocks, int64_t nb, float* out) {
            dequantize_blocks(dt, blocks, 0, nb, out);
          };
          break;
        case Isa::AVX2:
          avx2::fill(k);
          break;
        case Isa::AVX512:
          avx512::fill(k);
          k.dequant_row = avx512kq::dequant_rows;
          k.rowdot_kquant = avx512kq::rowdot;
          break;
        case Isa::AVX512BF16:
          k.panels = true;
          k.linear_bf16 = avx512bf16::linear;
          k.matmul_packed = avx512bf16::matmul_packed;
          k.prepare_bf16 = avx512bf16::prepare_panels;
          k.linear_blocks = avx512int16::linear;
          k.prepare_blocks = avx512int16::prepare_panels;
          k.bf16_probe = avx512bf16::probe;
          k.int16_probe = avx512int16::probe;
          break;
        case Isa::AVX512VNNI:
          k.linear_blocks = avx512vnni::linear;
          k.prepare_blocks = avx512vnni::prepare_panels;
          k.int8_probe = avx512vnni::probe;
          break;
        case Isa::AMX:
          // The function of AVX512BF16 (not of the int8 level below it), with tiles for prefill.
          k.linear_bf16 = amx::linear_bf16;
          k.prepare_bf16 = amx::prepare_bf16;
          k.linear_blocks = amx::linear_blocks;
          k.prepare_blocks = amx::prepare_blocks;
          k.amx_probe = amx::probe;
          break;
      }
    }
    return t;
  }();
  return tables[static_cast<size_t>(std::min(level, max_isa()))];
}

int64_t panel_prefetch_bytes() {
  static const int64_t bytes = cpu_features().amd ? 0 : 16384;
  return bytes;
}

ActivationRounding activation_rounding(Isa level) {
  if (level == Isa::AMX) return ActivationRounding::Int16;
  if (level >= Isa::AVX512VNNI) return ActivationRounding::Int8;
  if (level >= Isa::AVX512BF16) return ActivationRounding::Int16;
  return ActivationRounding::Exact;
}

}  // namespace qrwkv::cpu
