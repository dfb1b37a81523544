// c10d process groups for data-parallel training; see dist.h. CMake defines USE_C10D_GLOO when
// the Gloo headers are installed (Debian: libgloo-dev; libtorch itself carries the library) and
// USE_C10D_NCCL when the libtorch was built with CUDA and NCCL's header is present, the same
// macros under which libtorch's own headers declare those process groups.
#include "convert/dist.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>

#include "io/error.h"

#if defined(USE_C10D_GLOO) || defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace qrwkv::convert {

bool distributed_supported(const std::string& device) {
#ifdef USE_C10D_NCCL
  if (device == "cuda") return true;
#endif
#ifdef USE_C10D_GLOO
  if (device == "cpu") return true;
#endif
  (void)device;
  return false;
}

#if defined(USE_C10D_GLOO) || defined(USE_C10D_NCCL)

struct Comm::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
};

namespace {

// Rank 0 waits this long for the others to connect, and every collective this long for its
// peers: generous, because a rank may first spend minutes loading a large teacher.
constexpr std::chrono::minutes kTimeout{30};

#ifdef USE_C10D_GLOO
// Gloo's transport binds to one address. On one machine the loopback interface always works
// (a container's host name often does not resolve); across machines Gloo's default finds the
// address of the host name, and GLOO_SOCKET_IFNAME names an interface, as in PyTorch.
std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master_addr) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname != nullptr && *ifname != '\0')
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (master_addr == "localhost" || master_addr.rfind("127.", 0) == 0)
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

}  // namespace

Comm::Comm(const DistOptions& o, const at::Device& device)
    : rank_(o.rank), world_(o.world_size), device_(device) {
  if (world_ < 1) fail("--world-size", "must be at least 1");
  if (rank_ < 0 || rank_ >= world_)
    fail("--rank", std::to_string(rank_) + " is outside 0.." + std::to_string(world_ - 1));
  if (world_ == 1) return;
  if (o.master_port < 1 || o.master_port > 65535)
    fail("--master-port", "must be between 1 and 65535");
  if (!distributed_supported(device.is_cuda() ? "cuda" : "cpu"))
    fail("--world-size", device.is_cuda()
                             ? "this libtorch has no NCCL, which several CUDA processes need"
                             : "this build has no Gloo (install libgloo-dev and rebuild)");
  impl_ = std::make_unique<Impl>();
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(o.master_port);
    so.isServer = rank_ == 0;
    so.numWorkers = static_cast<std::size_t>(world_);
    so.waitWorkers = true;
    so.timeout = kTimeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
    // A prefix keeps this group's keys apart from anything else a store might be shared with.
    auto store = c10::make_intrusive<c10d::PrefixStore>("qrwkv", impl_->store);
#ifdef USE_C10D_NCCL
    if (device.is_cuda()) {
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = kTimeout;
      impl_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank_, world_, opts);
    }
#endif
#ifdef USE_C10D_GLOO
    if (!device.is_cuda()) {
      auto opts = c10d::ProcessGroupGloo::Options::create(kTimeout);
      opts->devices.push_back(gloo_device(o.master_addr));
      opts->threads = 1;
      impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank_, world_, opts);
    }
#endif
  } catch (const std::exception& e) {
    // c10d's messages run over many lines with C++ stack traces; the first line says it.
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    fail("--master-addr " + o.master_addr + ":" + std::to_string(o.master_port),
         "cannot join the process group as rank " + std::to_string(rank_) + " of " +
             std::to_string(world_) + ": " + what);
  }
}

Comm::~Comm() = default;

namespace {
// Runs a collective and waits for it, turning c10d's multi-line errors (a peer that died, a
// timeout) into the usual one-line error.
template <typename F>
void run_collective(const char* what, F&& f) {
  try {
    f()->wait();
  } catch (const std::exception& e) {
    std::string msg = e.what();
    fail(what, "a collective operation failed (did another process stop?): " +
                   msg.substr(0, msg.find('\n')));
  }
}

// Concatenates runs of tensors of one dtype into flat buffers of up to this many elements, so
// that a step of a model with hundreds of parameters makes a few collective calls.
constexpr int64_t kBucketElements = int64_t{1} << 24;

template <typename Op>
void bucketed(const std::vector<at::Tensor>& tensors, Op&& op) {
  size_t i = 0;
  while (i < tensors.size()) {
    size_t j = i;
    int64_t n = 0;
    while (j < tensors.size() && tensors[j].scalar_type() == tensors[i].scalar_type() &&
           tensors[j].device() == tensors[i].device() &&
           (j == i || n + tensors[j].numel() <= kBucketElements)) {
      n += tensors[j].numel();
      ++j;
    }
    std::vector<at::Tensor> flat;
    for (size_t k = i; k < j; ++k) flat.push_back(tensors[k].reshape({-1}));
    std::vector<at::Tensor> buf = {at::cat(flat)};
    op(buf);
    int64_t offset = 0;
    for (size_t k = i; k < j; ++k) {
      const int64_t m = tensors[k].numel();
      tensors[k].copy_(buf[0].narrow(0, offset, m).view(tensors[k].sizes()));
      offset += m;
    }
    i = j;
  }
}
}  // namespace

void Comm::all_reduce_sum(const std::vector<at::Tensor>& tensors) {
  if (world_ == 1 || tensors.empty()) return;
  bucketed(tensors, [&](std::vector<at::Tensor>& buf) {
    run_collective("all-reduce", [&] { return impl_->group->allreduce(buf); });
  });
}

void Comm::broadcast(const std::vector<at::Tensor>& tensors) {
  if (world_ == 1 || tensors.empty()) return;
  bucketed(tensors, [&](std::vector<at::Tensor>& buf) {
    c10d::BroadcastOptions bo;
    bo.rootRank = 0;
    run_collective("broadcast", [&] { return impl_->group->broadcast(buf, bo); });
  });
}

namespace {
std::vector<double> reduce_numbers(c10d::ProcessGroup& group, const at::Device& device,
                                   std::vector<double> values, c10d::ReduceOp op) {
  if (values.empty()) return values;
  std::vector<at::Tensor> t = {
      at::tensor(values, at::TensorOptions().dtype(at::kDouble)).to(device)};
  c10d::AllreduceOptions ao;
  ao.reduceOp = op;
  run_collective("all-reduce", [&] { return group.allreduce(t, ao); });
  const at::Tensor back = t[0].cpu();
  return {back.data_ptr<double>(), back.data_ptr<double>() + back.numel()};
}
}  // namespace

std::vector<double> Comm::sum(std::vector<double> values) {
  if (world_ == 1) return values;
  return reduce_numbers(*impl_->group, device_, std::move(values), c10d::ReduceOp::SUM);
}

std::vector<double> Comm::min(std::vector<double> values) {
  if (world_ == 1) return values;
  return reduce_numbers(*impl_->group, device_, std::move(values), c10d::ReduceOp::MIN);
}

std::vector<double> Comm::max(std::vector<double> values) {
  if (world_ == 1) return values;
  return reduce_numbers(*impl_->group, device_, std::move(values), c10d::ReduceOp::MAX);
}

#else  // neither Gloo nor NCCL: one process only

struct Comm::Impl {};

Comm::Comm(const DistOptions& o, const at::Device& device)
    : rank_(o.rank), world_(o.world_size), device_(device) {
  if (world_ < 1) fail("--world-size", "must be at least 1");
  if (rank_ < 0 || rank_ >= world_)
    fail("--rank", std::to_string(rank_) + " is outside 0.." + std::to_string(world_ - 1));
  if (world_ > 1)
    fail("--world-size",
         "this build has no Gloo or NCCL process group (install libgloo-dev and rebuild)");
}

Comm::~Comm() = default;
void Comm::all_reduce_sum(const std::vector<at::Tensor>&) {}
void Comm::broadcast(const std::vector<at::Tensor>&) {}
std::vector<double> Comm::sum(std::vector<double> values) { return values; }
std::vector<double> Comm::min(std::vector<double> values) { return values; }
std::vector<double> Comm::max(std::vector<double> values) { return values; }

#endif

}  // namespace qrwkv::convert
