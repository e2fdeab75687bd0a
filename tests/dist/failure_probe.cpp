// A job that fails on purpose, run under mpiexec by ctest: the other ranks must end, with a
// non-zero exit, within a bounded time instead of waiting in a collective.
//   failure_probe throw   rank 1 throws while the others wait in an all-reduce
//   failure_probe kill    rank 1 is killed (SIGKILL) while the others wait
//   failure_probe hang    rank 1 stops calling collectives; the watchdog (1 s) ends the job
// and one that must not fail:
//   failure_probe slow    rank 1 works 3 s longer, then wait_for_all(): no timeout applies
#include <signal.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "dist/communicator.h"

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  kdseg::dist::CommunicatorOptions options;
  options.backend = kdseg::dist::Backend::kMpi;
  options.collective_timeout = std::chrono::seconds(mode == "hang" || mode == "slow" ? 1 : 60);
  auto comm = kdseg::dist::make_communicator(options);
  return kdseg::dist::run_or_abort(*comm, [&]() -> int {
    at::Tensor value = torch::ones({1024});
    comm->all_reduce(value, kdseg::dist::ReduceOp::kSum);  // everyone is alive here
    if (mode == "slow") {
      const auto start = std::chrono::steady_clock::now();
      if (comm->rank() == 1) std::this_thread::sleep_for(std::chrono::seconds(3));
      comm->wait_for_all();
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("rank %d waited %.1f s for a slower rank\n", comm->rank(), waited);
      return 0;
    }
    if (comm->rank() == 1) {
      if (mode == "throw") KDSEG_THROW("injected failure on rank 1 in mode ", mode);
      if (mode == "kill") ::raise(SIGKILL);
      if (mode == "hang") std::this_thread::sleep_for(std::chrono::seconds(120));
    }
    comm->all_reduce(value, kdseg::dist::ReduceOp::kSum);  // rank 1 never arrives
    std::fprintf(stderr, "rank %d: the collective completed, which it must not\n", comm->rank());
    return 0;
  });
}
