// The MPI backend: CPU tensors, blocking collectives on a private duplicate of
// MPI_COMM_WORLD whose errors are returned (and become kdseg::Error), watched by a Watchdog.
#include <mpi.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <memory>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "dist/backends.h"
#include "dist/check_mpi.h"
#include "dist/watchdog.h"

namespace kdseg::dist {
namespace {

// Initialises MPI once per process (with MPI_THREAD_MULTIPLE when available: the gradient
// reducer's thread communicates while the main thread computes) and finalises it at exit.
class MpiEnvironment {
 public:
  static MpiEnvironment& get() {
    static MpiEnvironment environment;
    return environment;
  }
  int thread_level() const { return provided_; }

 private:
  MpiEnvironment() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) {
      MPI_Query_thread(&provided_);
      return;
    }
    KDSEG_CHECK_MPI(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided_));
    owner_ = true;
  }
  ~MpiEnvironment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owner_ && !finalized) MPI_Finalize();
  }
  int provided_ = MPI_THREAD_SINGLE;
  bool owner_ = false;
};

MPI_Datatype mpi_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    case at::kByte: return MPI_UINT8_T;
    case at::kChar: return MPI_INT8_T;
    case at::kBool: return MPI_C_BOOL;
    case at::kShort: return MPI_INT16_T;
    default:
      KDSEG_THROW("MPI backend: dtype ", t.scalar_type(), " is not supported; use float32/64 or an integer type");
  }
}

MPI_Op mpi_op(ReduceOp op, const at::Tensor& t) {
  if (t.scalar_type() == at::kBool) {
    KDSEG_CHECK(op == ReduceOp::kMax || op == ReduceOp::kMin, "MPI backend: bool tensors reduce with max or min only");
    return op == ReduceOp::kMax ? MPI_LOR : MPI_LAND;
  }
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAverage: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

std::string describe(const char* what, const at::Tensor& t) {
  return kdseg::detail::concat(what, " of ", t.numel(), " x ", t.scalar_type(), " (", t.nbytes(),
                               " bytes) on the MPI backend");
}

// Elements per MPI call: counts are int, so larger tensors go in pieces.
std::atomic<int64_t> g_piece_elements{int64_t{1} << 30};

// Calls call(pointer, count) over consecutive pieces of a contiguous tensor (once for an empty one).
template <typename Call>
void in_pieces(const at::Tensor& t, Call&& call) {
  auto* base = static_cast<char*>(t.data_ptr());
  const int64_t n = t.numel(), piece = g_piece_elements.load(), item = static_cast<int64_t>(t.element_size());
  int64_t at = 0;
  do {
    call(base + at * item, static_cast<int>(std::min(piece, n - at)));
    at += piece;
  } while (at < n);
}

class MpiCommunicator final : public Communicator {
 public:
  // `polite`: wait for all-reduces by polling with short sleeps instead of MPI's busy wait, so
  // that a background communication thread leaves the cores to the computation.
  MpiCommunicator(MPI_Comm parent, std::chrono::milliseconds timeout, bool polite = false) : polite_(polite) {
    MpiEnvironment::get();
    KDSEG_CHECK_MPI(MPI_Comm_dup(parent, &comm_));
    KDSEG_CHECK_MPI(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    KDSEG_CHECK_MPI(MPI_Comm_rank(comm_, &rank_));
    KDSEG_CHECK_MPI(MPI_Comm_size(comm_, &size_));
    MPI_Comm node;
    KDSEG_CHECK_MPI(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    KDSEG_CHECK_MPI(MPI_Comm_rank(node, &local_rank_));
    KDSEG_CHECK_MPI(MPI_Comm_size(node, &local_size_));
    MPI_Comm_free(&node);
    watchdog_ = std::make_unique<Watchdog>(timeout, [this](const std::string& reason) { abort(reason); });
  }
  ~MpiCommunicator() override {
    watchdog_.reset();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  Backend backend() const override { return Backend::kMpi; }
  c10::Device device() const override { return c10::kCPU; }

  void all_reduce(at::Tensor& tensor, ReduceOp op) override {
    check_cpu_contiguous(tensor, "all_reduce");
    KDSEG_CHECK(op != ReduceOp::kAverage || tensor.is_floating_point(),
                "all_reduce: average needs a floating-point tensor, got ", tensor.scalar_type());
    {
      WatchedCollective watch(watchdog_.get(), [&tensor] { return describe("all_reduce", tensor); });
      in_pieces(tensor, [&](void* data, int count) {
        if (polite_) {
          MPI_Request request;
          KDSEG_CHECK_MPI(
              MPI_Iallreduce(MPI_IN_PLACE, data, count, mpi_type(tensor), mpi_op(op, tensor), comm_, &request));
          wait_politely(request);
        } else {
          KDSEG_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, data, count, mpi_type(tensor), mpi_op(op, tensor), comm_));
        }
      });
    }
    if (op == ReduceOp::kAverage) tensor.div_(size_);
  }

  void broadcast(at::Tensor& tensor, int root) override {
    check_cpu_contiguous(tensor, "broadcast");
    KDSEG_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " outside [0, ", size_, ")");
    WatchedCollective watch(watchdog_.get(), [&tensor] { return describe("broadcast", tensor); });
    in_pieces(tensor,
              [&](void* data, int count) { KDSEG_CHECK_MPI(MPI_Bcast(data, count, mpi_type(tensor), root, comm_)); });
  }

  at::Tensor all_gather(const at::Tensor& input) override {
    const at::Tensor tensor = input.contiguous();
    check_cpu_contiguous(tensor, "all_gather");
    std::vector<int64_t> shape = tensor.sizes().vec();
    KDSEG_CHECK(!shape.empty(), "all_gather: needs at least one dimension");
    shape[0] *= size_;
    KDSEG_CHECK(tensor.numel() <= INT_MAX, "all_gather: ", tensor.numel(),
                " elements per rank exceed what one MPI call ", "takes (", INT_MAX, ")");
    at::Tensor out = torch::empty(shape, tensor.options());
    WatchedCollective watch(watchdog_.get(), [&tensor] { return describe("all_gather", tensor); });
    KDSEG_CHECK_MPI(MPI_Allgather(tensor.data_ptr(), static_cast<int>(tensor.numel()), mpi_type(tensor), out.data_ptr(),
                                  static_cast<int>(tensor.numel()), mpi_type(tensor), comm_));
    return out;
  }

  void barrier() override {
    WatchedCollective watch(watchdog_.get(), [] { return std::string("barrier on the MPI backend"); });
    KDSEG_CHECK_MPI(MPI_Barrier(comm_));
  }

  void wait_for_all() override {
    MPI_Request request;
    KDSEG_CHECK_MPI(MPI_Ibarrier(comm_, &request));
    wait_politely(request);
  }

  // The duplicate serves a background thread: it waits politely.
  std::unique_ptr<Communicator> duplicate() override {
    return std::make_unique<MpiCommunicator>(comm_, watchdog_->timeout(), /*polite=*/true);
  }

  [[noreturn]] void abort(const std::string& reason) noexcept override {
    const std::string who = kdseg::detail::concat("[rank ", rank_, "/", size_, "] error: ", reason);
    std::fprintf(stderr, "%s\n", who.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);
  }

 private:
  static void check_cpu_contiguous(const at::Tensor& t, const char* what) {
    KDSEG_CHECK(t.device().is_cpu(), what, ": the MPI backend reduces CPU tensors, got one on ", t.device(),
                "; use --backend nccl for CUDA tensors");
    KDSEG_CHECK(t.is_contiguous(), what, ": tensor must be contiguous");
    KDSEG_CHECK(t.numel() <= INT32_MAX, what, ": ", t.numel(), " elements exceed MPI's int count");
  }

  // Tests the request (which also drives MPI's progress) in a short spin, then with sleeps
  // that grow to 200 us.
  void wait_politely(MPI_Request& request) {
    int done = 0;
    for (int spin = 0; spin < 64 && !done; ++spin) KDSEG_CHECK_MPI(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    auto pause = std::chrono::microseconds(10);
    while (!done) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(200));
      KDSEG_CHECK_MPI(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    }
  }

  bool polite_ = false;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace

namespace detail {
std::unique_ptr<Communicator> make_mpi_communicator(const CommunicatorOptions& options) {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, options.collective_timeout);
}

// The MPI thread level, for the gradient reducer's choice of a communication thread.
bool mpi_supports_threads() { return MpiEnvironment::get().thread_level() >= MPI_THREAD_MULTIPLE; }
int64_t set_mpi_piece_elements(int64_t elements) {
  KDSEG_CHECK(elements >= 1 && elements <= INT_MAX, "MPI piece size must be in [1, ", INT_MAX, "], got ", elements);
  return g_piece_elements.exchange(elements);
}
}  // namespace detail

}  // namespace kdseg::dist
