// The AVX2 level: the generic kernels over VecAvx2 (8 lanes), no packed GEMM.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "backend/cpu/kernels.h"
#include "backend/cpu/vec_avx2.h"
#include "io/error.h"

namespace qrwkv::cpu::avx2 {

using V = VecAvx2;
#define QRWKV_TARGET QRWKV_TARGET_AVX2
#include "backend/cpu/kernels_generic.inl"
#undef QRWKV_TARGET

void fill(Kernels& k) { fill_generic(k); }

}  // namespace qrwkv::cpu::avx2
