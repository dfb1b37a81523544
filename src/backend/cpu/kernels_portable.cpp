// The portable level: the generic kernels over VecScalar (one lane), no packed GEMM.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "backend/cpu/kernels.h"
#include "io/error.h"
#include "ops/vec.h"

namespace qrwkv::cpu::portable {

using V = VecScalar;
#define QRWKV_TARGET
#include "backend/cpu/kernels_generic.inl"
#undef QRWKV_TARGET

void fill(Kernels& k) { fill_generic(k); }

}  // namespace qrwkv::cpu::portable
