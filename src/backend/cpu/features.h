// What this CPU can run, detected once at start-up, and the instruction-set levels of the CPU
// backend's kernels.
#pragma once

#include <optional>
#include <string>

namespace qrwkv::cpu {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512bf16 = false, avx512vnni = false;
  bool amx_bf16 = false, amx_int8 = false;
  // The OS saves the tile state (XCR0 bits 17 and 18) and has granted this process its use.
  bool amx_usable = false;
  bool amd = false;
};

// Detected on first use (cpuid), then constant.
const CpuFeatures& cpu_features();

// The levels, each a superset of the one before. A level names what its kernels may use:
//   Portable    C++ only
//   AVX2        AVX2 + FMA + F16C, 8 float lanes
//   AVX512      AVX-512 F/BW/VL/DQ, 16 float lanes, the packed float32 GEMM
//   AVX512BF16  + bf16 dot products (vdpbf16ps) for BF16 weights, with activations rounded to
//               bf16, and int16 dot products (vpdpwssd, AVX512-VNNI) for block-quantized
//               weights, with activations quantized to int16 per block of 32
//   AVX512VNNI  + int8 dot products (vpdpbusd) for block-quantized weights (Q8_0, Q4_0), with
//               activations quantized to int8 per block of 32; BF16 weights as at AVX512BF16
//   AMX         + Intel AMX tiles (AMX-BF16, AMX-INT8) for prompts and batches, computing the
//               function of AVX512BF16 (bf16 activations for BF16 weights, int16 for blocks)
enum class Isa { Portable = 0, AVX2 = 1, AVX512 = 2, AVX512BF16 = 3, AVX512VNNI = 4, AMX = 5 };
constexpr Isa kAllIsas[] = {Isa::Portable,   Isa::AVX2,       Isa::AVX512,
                            Isa::AVX512BF16, Isa::AVX512VNNI, Isa::AMX};

const char* isa_name(Isa isa);
std::optional<Isa> parse_isa(const std::string& name);
// "portable, avx2, …": every level's name, for messages.
std::string isa_names();

// The highest level this CPU can run.
Isa max_isa();
// The level used when none is asked for: AMX where the CPU and the OS allow it; else max_isa()
// up to AVX512BF16, and AVX512BF16 only on CPUs whose bf16 dot products outrun float32 FMAs (AMD
// Zen 4/5; on Intel Xeons vdpbf16ps runs at half the FMA rate). AVX512VNNI is never the
// default: its int8 activations move a model's predictions more than Q8_0 weights do
// (docs/model.md, "Weight formats and precision"). The environment variable QRWKV_ISA (a
// level's name) overrides the choice, capped at max_isa(); an unknown name throws Error.
Isa default_isa();
// The highest level at or below default_isa() whose kernels compute in float32 throughout (no
// bf16 activations): what tests and tools that compare against float32 references use.
Isa float32_isa();

}  // namespace qrwkv::cpu
