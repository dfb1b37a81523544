#include <algorithm>

#include "backend/backend.h"

namespace qrwkv {

namespace {
constexpr size_t kAlign = 64;
constexpr size_t kMinBlock = size_t{256} << 10;
size_t aligned(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

Workspace::~Workspace() {
  for (const Block& b : blocks_) backend_->free(b.p);
}

void Workspace::reset() {
  const bool fragmented = blocks_.size() > 1 || (blocks_.size() == 1 && blocks_[0].bytes < peak_);
  if (fragmented) {
    for (const Block& b : blocks_) backend_->free(b.p);
    blocks_.clear();
    // A quarter of headroom, so that passes a little larger than this one fit too.
    const size_t bytes = aligned(peak_ + peak_ / 4);
    blocks_.push_back({backend_->alloc(bytes), bytes});
  }
  current_ = used_ = total_ = 0;
}

float* Workspace::take(int64_t n) {
  const size_t bytes = aligned(static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float));
  if (blocks_.empty() || blocks_[current_].bytes - used_ < bytes) {
    // Move on to the next block, making one (without moving what was taken) if none fits.
    size_t next = blocks_.empty() ? 0 : current_ + 1;
    if (next >= blocks_.size() || blocks_[next].bytes < bytes) {
      const size_t size = std::max(bytes, kMinBlock);
      blocks_.insert(blocks_.begin() + static_cast<std::ptrdiff_t>(next),
                     Block{backend_->alloc(size), size});
    }
    current_ = next;
    used_ = 0;
  }
  float* p = reinterpret_cast<float*>(static_cast<char*>(blocks_[current_].p) + used_);
  used_ += bytes;
  total_ += bytes;
  peak_ = std::max(peak_, total_);
  return p;
}

void Workspace::release(const Mark& m) {
  current_ = m.block;
  used_ = m.used;
  total_ = m.total;
}

}  // namespace qrwkv
