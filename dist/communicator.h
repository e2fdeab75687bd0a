// Collective communication between the processes of a job (one per GPU, or per CPU socket).
//
// Every method marked "collective" must be called by every rank of the communicator, in the
// same order, with tensors of the same shape and dtype; the call returns on a rank once that
// rank's part is done. Backends: local (world size 1, no MPI), MPI (CPU tensors) and NCCL
// (CUDA tensors, enqueued on the current CUDA stream, bootstrapped over MPI).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/enum_names.h"

namespace kdseg::dist {

enum class ReduceOp { kSum, kAverage, kMax, kMin };
enum class Backend { kAuto, kLocal, kMpi, kNccl };

// --backend: parse_enum<dist::Backend>, enum_name.
inline constexpr EnumName<Backend> kBackendNames[] = {
    {Backend::kAuto, "auto", "NCCL on CUDA, MPI on CPU, local without mpirun"},
    {Backend::kLocal, "local", ""},
    {Backend::kMpi, "mpi", ""},
    {Backend::kNccl, "nccl", ""},
};
constexpr EnumNames<Backend> enum_names(EnumTag<Backend>) { return kBackendNames; }

// True when this process was started by mpirun/mpiexec or srun (their environment variables).
bool launched_by_launcher();

struct CommunicatorOptions {
  // Backend::kAuto picks NCCL for CUDA training, MPI on CPU, local for a single process that
  // no launcher started.
  Backend backend = Backend::kAuto;
  bool cuda = false;
  // A collective that runs longer than this is reported (which one, which rank) by a watchdog
  // and the job is aborted. Zero disables the watchdog.
  std::chrono::milliseconds collective_timeout = std::chrono::minutes(10);
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Rank among the processes of this node, and their number (one GPU per local rank).
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;
  virtual Backend backend() const = 0;
  // Where the tensors this communicator reduces live: this rank's GPU for NCCL, else the CPU.
  virtual c10::Device device() const = 0;

  // Collective. Reduces `tensor` (contiguous) across ranks in place.
  virtual void all_reduce(at::Tensor& tensor, ReduceOp op) = 0;
  // Collective. Copies `tensor` of rank `root` into `tensor` on every rank.
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  // Collective. Concatenates every rank's `tensor` along dim 0 in rank order:
  // [size * tensor.size(0), ...]. Tensors of all ranks must have the same shape.
  virtual at::Tensor all_gather(const at::Tensor& tensor) = 0;
  // Collective. Returns once every rank has entered it.
  virtual void barrier() = 0;
  // Collective. A barrier for ranks that finish uneven amounts of work (the end of a resumed
  // teacher pass): waiting for a slower rank is expected there, so the collective timeout does
  // not apply, and the wait polls with sleeps on the host instead of occupying a core or a GPU.
  virtual void wait_for_all() = 0;

  // A second communicator over the same ranks whose collectives never interleave with this
  // one's (used by the gradient reducer's communication thread). Collective.
  virtual std::unique_ptr<Communicator> duplicate() = 0;

  // Brings the whole job down after an unrecoverable error on this rank: aborts NCCL, then
  // MPI_Abort, so that no other rank waits forever. Never returns.
  [[noreturn]] virtual void abort(const std::string& reason) noexcept = 0;
};

// Collective. Reduces `tensor` in place whatever device it lives on: directly when that is the
// communicator's device(), otherwise staged through it (a CPU metric sum over NCCL, a GPU
// count over MPI). For small values such as metric sums, pixel counts and flags.
void all_reduce_any_device(Communicator& comm, at::Tensor& tensor, ReduceOp op);

// Runs `body` and returns its exit code; on an exception, reports "[rank r/N] error: ..." and
// aborts the whole job through `comm` (NCCL abort, then MPI_Abort) so that no rank is left
// waiting in a collective. What every subcommand's entry point does.
int run_or_abort(Communicator& comm, const std::function<int()>& body);

// The GPU a rank uses, from its node-local rank and the CUDA devices this process sees: GPU 0
// when it sees one (one rank per node, or a launcher that gives each rank its own GPU through
// CUDA_VISIBLE_DEVICES or --gpus-per-task), else GPU `local_rank`, which needs at least as
// many visible GPUs as ranks on the node. Errors say what is missing. (Two ranks that see the
// same single GPU are refused by NCCL itself: "duplicate GPU".)
int node_local_gpu(int local_rank, int local_size, int visible_gpus);

// The CUDA device of this rank for --device cuda: the communicator's own when it reduces on a
// GPU, otherwise node_local_gpu() of the devices this process sees.
c10::Device rank_cuda_device(const Communicator& comm);
// The device of this rank for a command's --device: the CPU, or rank_cuda_device().
c10::Device rank_device(c10::DeviceType type, const Communicator& comm);

// Creates the communicator for this process (initialising MPI when needed). Asking for a
// backend that was not compiled in names the CMake option that turns it on.
std::unique_ptr<Communicator> make_communicator(const CommunicatorOptions& options = {});

}  // namespace kdseg::dist
