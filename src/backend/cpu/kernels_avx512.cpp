// The AVX-512 level: the generic kernels over VecAvx512 (16 lanes) and the packed float32 GEMM
// of gemm_avx512.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "backend/cpu/kernels.h"
#include "backend/cpu/vec_avx512.h"
#include "io/error.h"

namespace qrwkv::cpu::avx512 {

using V = VecAvx512;
#define QRWKV_TARGET QRWKV_TARGET_AVX512
#include "backend/cpu/kernels_generic.inl"
#undef QRWKV_TARGET

void fill(Kernels& k) {
  fill_generic(k);
  k.gemm = gemm;
}

}  // namespace qrwkv::cpu::avx512
