#include "backend/cpu/features.h"

#include <algorithm>
#include <cstdlib>

#include "backend/cpu/kernels.h"
#include "io/error.h"

namespace qrwkv::cpu {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    __builtin_cpu_init();
    CpuFeatures c;
    c.avx2 = __builtin_cpu_supports("avx2");
    c.fma = __builtin_cpu_supports("fma");
    // F16C has no __builtin_cpu_supports name in GCC 12; every AVX2 CPU has it (cpuid 1, ecx 29).
    unsigned eax, ebx, ecx, edx;
    __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
    c.f16c = (ecx >> 29) & 1;
    c.avx512f = __builtin_cpu_supports("avx512f");
    c.avx512bw = __builtin_cpu_supports("avx512bw");
    c.avx512vl = __builtin_cpu_supports("avx512vl");
    c.avx512dq = __builtin_cpu_supports("avx512dq");
    c.avx512bf16 = __builtin_cpu_supports("avx512bf16");
    c.avx512vnni = __builtin_cpu_supports("avx512vnni");
    // AMX: cpuid leaf 7, edx bits 22 (bf16) and 25 (int8).
    __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(0));
    c.amx_bf16 = (edx >> 22) & 1;
    c.amx_int8 = (edx >> 25) & 1;
    const bool amx_tile = (edx >> 24) & 1;
    if (amx_tile && c.amx_bf16 && c.amx_int8) {
      // XCR0 (xgetbv 0): the OS saves the tile configuration and data (bits 17, 18).
      unsigned lo, hi;
      __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
      const bool os = ((lo >> 17) & 3) == 3;
      c.amx_usable = os && amx::request_permission();
    }
    c.amd = __builtin_cpu_is("amd");
    return c;
  }();
  return f;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Portable:
      return "portable";
    case Isa::AVX2:
      return "avx2";
    case Isa::AVX512:
      return "avx512";
    case Isa::AVX512BF16:
      return "avx512bf16";
    case Isa::AVX512VNNI:
      return "avx512vnni";
    case Isa::AMX:
      return "amx";
  }
  return "?";
}

std::string isa_names() {
  std::string s;
  for (Isa i : kAllIsas) s += (s.empty() ? "" : ", ") + std::string(isa_name(i));
  return s;
}

std::optional<Isa> parse_isa(const std::string& name) {
  for (Isa i : kAllIsas)
    if (name == isa_name(i)) return i;
  return std::nullopt;
}

Isa max_isa() {
  const CpuFeatures& f = cpu_features();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  // The AVX512BF16 level's block kernels use vpdpwssd (AVX512-VNNI) as well: every CPU with
  // AVX512-BF16 has it.
  const bool bf16 = avx512 && f.avx512bf16 && f.avx512vnni;
  if (bf16 && f.amx_usable) return Isa::AMX;
  if (bf16) return Isa::AVX512VNNI;
  if (avx512) return Isa::AVX512;
  if (avx2) return Isa::AVX2;
  return Isa::Portable;
}

Isa default_isa() {
  if (const char* env = std::getenv("QRWKV_ISA")) {
    const std::optional<Isa> i = parse_isa(env);
    if (!i)
      fail("QRWKV_ISA",
           std::string("unknown instruction-set level '") + env + "' (" + isa_names() + ")");
    return std::min(*i, max_isa());
  }
  if (max_isa() == Isa::AMX) return Isa::AMX;
  if (max_isa() >= Isa::AVX512BF16 && !cpu_features().amd) return Isa::AVX512;
  // int8 activations cost more accuracy than Q8_0 weights do (docs/model.md): opt-in only.
  return std::min(max_isa(), Isa::AVX512BF16);
}

Isa float32_isa() { return std::min(default_isa(), Isa::AVX512); }

}  // namespace qrwkv::cpu
