// Data parallelism over several processes (torch.distributed's c10d): a TCPStore on rank 0 for
// the rendezvous and a Gloo process group for CPU tensors (NCCL for CUDA tensors, where the
// libtorch has it). Every rank holds the whole model and takes an equal share of each global
// batch; the gradients are summed across ranks and divided by the world size, which is exactly
// the gradient of the mean loss over the whole batch because every loss is a mean over
// sequences of the same length.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace qrwkv::convert {

struct DistOptions {
  int world_size = 1;  // processes in the run; 1: no communication at all
  int rank = 0;        // this process, 0 .. world_size − 1; rank 0 writes every file
  std::string master_addr = "127.0.0.1";  // where rank 0 listens (TCPStore)
  int master_port = 29500;
};

class Comm {
 public:
  // Joins the group (blocks until every rank has arrived). `device` is where the tensors to
  // reduce live: CPU tensors go through Gloo, CUDA tensors through NCCL.
  Comm(const DistOptions& o, const at::Device& device);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  bool is_root() const { return rank_ == 0; }
  bool distributed() const { return world_ > 1; }

  // Sums each tensor over the ranks, in place. Small tensors are packed into larger buffers so
  // that one step costs a few collective calls rather than one per parameter.
  void all_reduce_sum(const std::vector<at::Tensor>& tensors);
  // Rank 0's values replace every other rank's, in place.
  void broadcast(const std::vector<at::Tensor>& tensors);
  // The sums, minimums or maximums of a few numbers over the ranks, in double precision.
  std::vector<double> sum(std::vector<double> values);
  std::vector<double> min(std::vector<double> values);
  std::vector<double> max(std::vector<double> values);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, world_ = 1;
  at::Device device_;
};

// Whether this build can run several processes on `device` ("cpu" or "cuda").
bool distributed_supported(const std::string& device);

}  // namespace qrwkv::convert
