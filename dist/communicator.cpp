#include "dist/communicator.h"

#include <torch/torch.h>

#include <cstdlib>
#include <iostream>

#include "core/build_config.h"
#include "core/error.h"
#include "dist/backends.h"

namespace kdseg::dist {

bool launched_by_launcher() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "SLURM_NTASKS"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

namespace {

// World size 1: every collective is the identity.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  Backend backend() const override { return Backend::kLocal; }
  c10::Device device() const override { return c10::kCPU; }
  void all_reduce(at::Tensor&, ReduceOp) override {}
  void broadcast(at::Tensor&, int root) override {
    KDSEG_CHECK(root == 0, "broadcast: root ", root, " does not exist in a world of size 1");
  }
  at::Tensor all_gather(const at::Tensor& tensor) override { return tensor.clone(); }
  void barrier() override {}
  void wait_for_all() override {}
  std::unique_ptr<Communicator> duplicate() override { return std::make_unique<LocalCommunicator>(); }
  [[noreturn]] void abort(const std::string& reason) noexcept override { detail::die(reason); }
};

}  // namespace

namespace detail {

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

void die(const std::string& reason) noexcept {
  const int rank = std::max(0, process_rank());
  const int size = std::max(1, process_world_size());
  std::cerr << "[rank " << rank << "/" << size << "] error: " << reason << std::endl;
  std::_Exit(1);
}

#if !KDSEG_HAVE_MPI
bool mpi_supports_threads() { return false; }
std::unique_ptr<Communicator> make_mpi_communicator(const CommunicatorOptions&) {
  KDSEG_THROW("--backend mpi: this kdseg was built without MPI; rebuild with -DKDSEG_WITH_MPI=ON");
}
#endif
#if !KDSEG_HAVE_NCCL
std::unique_ptr<Communicator> make_nccl_communicator(const CommunicatorOptions&) {
  KDSEG_THROW(
      "--backend nccl: this kdseg was built without NCCL; rebuild against a CUDA LibTorch with "
      "-DKDSEG_WITH_NCCL=ON (NCCL_ROOT=... if CMake does not find it)");
}
#endif

}  // namespace detail

int run_or_abort(Communicator& comm, const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    if (comm.size() == 1) throw;  // nobody to wake: the caller reports it
    comm.abort(kdseg::detail::concat(e.message(), " (", e.file(), ":", e.line(), ")"));
  } catch (const std::exception& e) {
    if (comm.size() == 1) throw;
    comm.abort(error_message(e));
  }
  return 1;  // not reached: abort() does not return
}

void all_reduce_any_device(Communicator& comm, at::Tensor& tensor, ReduceOp op) {
  if (tensor.device() == comm.device() && tensor.is_contiguous()) {
    comm.all_reduce(tensor, op);
    return;
  }
  at::Tensor staged = tensor.to(tensor.options().device(comm.device()), /*non_blocking=*/false, /*copy=*/true,
                                at::MemoryFormat::Contiguous);
  comm.all_reduce(staged, op);
  tensor.copy_(staged);
}

int node_local_gpu(int local_rank, int local_size, int visible_gpus) {
  KDSEG_CHECK(visible_gpus > 0, "--device cuda: this process sees no CUDA device (is this LibTorch built with ",
              "CUDA, and CUDA_VISIBLE_DEVICES set?)");
  if (visible_gpus == 1) return 0;
  KDSEG_CHECK(local_size <= visible_gpus, "--device cuda: ", local_size, " ranks on this node but ", visible_gpus,
              " visible GPUs; start one rank per GPU, or give each rank its own GPU (CUDA_VISIBLE_DEVICES)");
  return local_rank;
}

c10::Device rank_cuda_device(const Communicator& comm) {
  if (comm.device().is_cuda()) return comm.device();
  const int visible = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  return {c10::kCUDA, static_cast<c10::DeviceIndex>(node_local_gpu(comm.local_rank(), comm.local_size(), visible))};
}

c10::Device rank_device(c10::DeviceType type, const Communicator& comm) {
  if (type == c10::kCPU) return c10::kCPU;
  KDSEG_CHECK(type == c10::kCUDA, "--device must be cpu or cuda, got '", c10::DeviceTypeName(type, true), "'");
  return rank_cuda_device(comm);
}

std::unique_ptr<Communicator> make_communicator(const CommunicatorOptions& options) {
  Backend backend = options.backend;
  if (backend == Backend::kAuto) {
    if (!launched_by_launcher()) backend = Backend::kLocal;
    else
      backend = options.cuda && KDSEG_HAVE_NCCL ? Backend::kNccl : (KDSEG_HAVE_MPI ? Backend::kMpi : Backend::kLocal);
  }
  KDSEG_CHECK(!(backend == Backend::kNccl && !options.cuda),
              "--backend nccl reduces CUDA tensors: train with --device cuda, or use --backend mpi on CPU");
  std::unique_ptr<Communicator> comm;
  switch (backend) {
    case Backend::kLocal: comm = detail::make_local_communicator(); break;
    case Backend::kMpi: comm = detail::make_mpi_communicator(options); break;
    case Backend::kNccl: comm = detail::make_nccl_communicator(options); break;
    case Backend::kAuto: break;
  }
  set_process_rank(comm->rank(), comm->size());
  return comm;
}

}  // namespace kdseg::dist
