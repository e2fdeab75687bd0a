// The NCCL backend: CUDA tensors, collectives enqueued on the current CUDA stream, one GPU
// per local rank, bootstrapped over MPI (rank 0 creates the unique id, MPI broadcasts it).
// Compiled only with KDSEG_HAVE_NCCL. The watchdog polls a CUDA event recorded after each
// collective, so a collective stuck on the GPU is reported like a blocking one.
#include <c10/cuda/CUDAStream.h>
#include <mpi.h>
#include <torch/torch.h>

#include "core/error.h"
#include "dist/backends.h"
#include "dist/check_cuda.h"
#include "dist/check_mpi.h"
#include "dist/watchdog.h"

namespace kdseg::dist {
namespace {

ncclDataType_t nccl_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    case at::kChar: return ncclInt8;
    case at::kBool: return ncclUint8;
    default: KDSEG_THROW("NCCL backend: dtype ", t.scalar_type(), " is not supported");
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAverage: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(const CommunicatorOptions& options, const ncclUniqueId* shared_id = nullptr)
      : options_(options) {
    bootstrap_ = detail::make_mpi_communicator(options);
    rank_ = bootstrap_->rank();
    size_ = bootstrap_->size();
    local_rank_ = bootstrap_->local_rank();
    // The other ranks wait for this one in the broadcast and in ncclCommInitRank: a rank that
    // cannot join brings the job down rather than leaving them waiting.
    try {
      connect(shared_id);
    } catch (const std::exception& e) {
      if (size_ > 1) bootstrap_->abort(error_message(e));
      throw;
    }
    watchdog_ = std::make_unique<Watchdog>(options.collective_timeout, [this](const std::string& r) { abort(r); });
  }

  void connect(const ncclUniqueId* shared_id) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
    device_ = node_local_gpu(local_rank_, bootstrap_->local_size(), devices);
    KDSEG_CHECK_CUDA(cudaSetDevice(device_));
    ncclUniqueId id;
    if (shared_id) {
      id = *shared_id;
    } else {
      if (rank_ == 0) KDSEG_CHECK_NCCL(ncclGetUniqueId(&id));
      at::Tensor bytes = torch::from_blob(&id, {static_cast<int64_t>(sizeof id)}, torch::kByte);
      bootstrap_->broadcast(bytes, 0);
    }
    id_ = id;
    KDSEG_CHECK_NCCL(ncclCommInitRank(&comm_, size_, id, rank_));
  }

  ~NcclCommunicator() override {
    watchdog_.reset();
    if (comm_) ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return bootstrap_->local_size(); }
  Backend backend() const override { return Backend::kNccl; }
  c10::Device device() const override { return {c10::kCUDA, static_cast<c10::DeviceIndex>(device_)}; }

  void all_reduce(at::Tensor& tensor, ReduceOp op) override {
    check(tensor, "all_reduce");
    const auto stream = c10::cuda::getCurrentCUDAStream(tensor.device().index());
    KDSEG_CHECK_NCCL(
        ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), nccl_type(tensor),
                      tensor.scalar_type() == at::kBool ? (op == ReduceOp::kMin ? ncclMin : ncclMax) : nccl_op(op),
                      comm_, stream.stream()));
    watch("all_reduce", tensor, stream.stream());
  }

  void broadcast(at::Tensor& tensor, int root) override {
    check(tensor, "broadcast");
    const auto stream = c10::cuda::getCurrentCUDAStream(tensor.device().index());
    KDSEG_CHECK_NCCL(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), nccl_type(tensor), root, comm_,
                                   stream.stream()));
    watch("broadcast", tensor, stream.stream());
  }

  at::Tensor all_gather(const at::Tensor& input) override {
    const at::Tensor tensor = input.contiguous();
    check(tensor, "all_gather");
    std::vector<int64_t> shape = tensor.sizes().vec();
    shape[0] *= size_;
    at::Tensor out = torch::empty(shape, tensor.options());
    const auto stream = c10::cuda::getCurrentCUDAStream(tensor.device().index());
    KDSEG_CHECK_NCCL(
        ncclAllGather(tensor.data_ptr(), out.data_ptr(), tensor.numel(), nccl_type(tensor), comm_, stream.stream()));
    watch("all_gather", tensor, stream.stream());
    return out;
  }

  void barrier() override {
    at::Tensor one = torch::ones({1}, torch::TensorOptions().dtype(torch::kInt).device(torch::kCUDA, device_));
    all_reduce(one, ReduceOp::kSum);
    KDSEG_CHECK_CUDA(cudaStreamSynchronize(c10::cuda::getCurrentCUDAStream(device_).stream()));
  }

  void wait_for_all() override {
    // Outstanding work on this rank's stream first, then the host-side wait of the bootstrap.
    KDSEG_CHECK_CUDA(cudaStreamSynchronize(c10::cuda::getCurrentCUDAStream(device_).stream()));
    bootstrap_->wait_for_all();
  }

  std::unique_ptr<Communicator> duplicate() override {
    // A new NCCL communicator over the same ranks: rank 0 makes a fresh id, MPI shares it.
    ncclUniqueId id;
    if (rank_ == 0) KDSEG_CHECK_NCCL(ncclGetUniqueId(&id));
    at::Tensor bytes = torch::from_blob(&id, {static_cast<int64_t>(sizeof id)}, torch::kByte);
    bootstrap_->broadcast(bytes, 0);
    return std::make_unique<NcclCommunicator>(options_, &id);
  }

  [[noreturn]] void abort(const std::string& reason) noexcept override {
    std::fprintf(stderr, "[rank %d/%d] error: %s\n", rank_, size_, reason.c_str());
    std::fflush(stderr);
    if (comm_) ncclCommAbort(comm_);
    bootstrap_->abort("NCCL communicator aborted");
    std::abort();  // not reached: the bootstrap's abort ends the job
  }

 private:
  void check(const at::Tensor& t, const char* what) const {
    KDSEG_CHECK(t.is_cuda(), what, ": the NCCL backend reduces CUDA tensors, got one on ", t.device(),
                "; use --backend mpi for CPU tensors");
    KDSEG_CHECK(t.device().index() == device_, what, ": tensor on ", t.device(), " but this rank uses cuda:", device_);
    KDSEG_CHECK(t.is_contiguous(), what, ": tensor must be contiguous");
  }

  // Registers the enqueued collective with the watchdog until the stream passes it.
  void watch(const char* what, const at::Tensor& t, cudaStream_t stream) {
    if (watchdog_->timeout().count() == 0) return;
    cudaEvent_t event;
    KDSEG_CHECK_CUDA(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    KDSEG_CHECK_CUDA(cudaEventRecord(event, stream));
    std::string text = kdseg::detail::concat(what, " of ", t.nbytes(), " bytes on the NCCL backend");
    watchdog_->start([text] { return text; },
                     [event]() {
                       const bool done = cudaEventQuery(event) != cudaErrorNotReady;
                       if (done) cudaEventDestroy(event);
                       return done;
                     });
  }

  CommunicatorOptions options_;
  std::unique_ptr<Communicator> bootstrap_;
  ncclComm_t comm_ = nullptr;
  ncclUniqueId id_{};
  int rank_ = 0, size_ = 1, local_rank_ = 0, device_ = 0;
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace

namespace detail {
std::unique_ptr<Communicator> make_nccl_communicator(const CommunicatorOptions& options) {
  return std::make_unique<NcclCommunicator>(options);
}
}  // namespace detail

}  // namespace kdseg::dist
