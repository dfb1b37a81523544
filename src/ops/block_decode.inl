// The decoders of the block formats (ops/quant.h), one per format, written over a vector type V
// (ops/vec.h). Every kernel that reads Q8_0 or Q4_0 weights goes through these.
//
// Include inside a namespace that defines `V` and after defining QRWKV_TARGET (see ops/vec.h).
//
// unpack_block<DT>(blk, q) stores the block's 32 integers as float vectors, element e of the
// block in lane e mod W of q[e / W], and returns the block's scale d; the weights are d · q,
// exact in float32 (quant.h). dequant_block<DT> stores the weights themselves.

template <DType DT>
QRWKV_TARGET inline float unpack_block(const uint8_t* blk, typename V::F* q) {
  static_assert(DT == DType::Q8_0 || DT == DType::Q4_0, "not a block format");
  uint16_t dh;
  std::memcpy(&dh, blk, 2);
  const uint8_t* p = blk + 2;
  for (int v = 0; v < 32 / V::W; ++v) {
    const int e = v * V::W;
    if constexpr (DT == DType::Q8_0) {
      q[v] = V::i8_to_f(p + e);  // q_e = byte e, as int8
    } else {
      // Q4_0: byte i holds element i (low nibble) and element i + 16 (high nibble).
      q[v] = e < 16 ? V::nib_lo_to_f(p + e) : V::nib_hi_to_f(p + e - 16);
    }
  }
  return V::f16_scalar(dh);
}

template <DType DT>
QRWKV_TARGET inline void dequant_block(const uint8_t* blk, typename V::F* w) {
  const typename V::F d = V::set1(unpack_block<DT>(blk, w));
  for (int v = 0; v < 32 / V::W; ++v) w[v] = V::mul(d, w[v]);
}
