// All-reduce bus bandwidth of kdseg's MPI communicator against OpenMPI's MPI_Allreduce on a
// raw buffer, side by side in the same job, 1 KiB to 256 MiB of float32.
//   mpirun -np 2 bench/allreduce_bench [--max-mib 256] [--reps R]
// Bus bandwidth = 2 (n-1)/n * bytes / time, as nccl-tests reports it. As nccl-tests does, each
// size is checked after it is timed: one more all-reduce of each kind on rank-dependent values
// whose sum is exact in float32, and the largest error against that sum (over every rank) is
// printed on the size's row; an error makes the program exit 1.
#include <mpi.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "dist/communicator.h"

namespace {

template <typename F>
double median_seconds(F&& run, int reps) {
  std::vector<double> times;
  run();  // warm-up
  for (int r = 0; r < reps; ++r) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    run();
    double elapsed = MPI_Wtime() - t0, slowest = 0;
    MPI_Allreduce(&elapsed, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    times.push_back(slowest);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Element i of `rank`'s buffer: small integers, so that every partial sum is exact in float32.
float value_at(int rank, int64_t i) { return static_cast<float>(rank + 1 + i % 7); }

// The largest |x[i] - sum over ranks of value_at(r, i)| on any rank.
double largest_error(const float* x, int64_t count, int ranks) {
  double worst = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double expected = ranks * (ranks + 1) / 2.0 + static_cast<double>(ranks) * static_cast<double>(i % 7);
    const double error = std::abs(static_cast<double>(x[i]) - expected);
    worst = std::isnan(error) ? INFINITY : std::max(worst, error);
  }
  double everywhere = 0;
  MPI_Allreduce(&worst, &everywhere, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return everywhere;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t max_mib = 256;
  int reps = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--max-mib" && i + 1 < argc) max_mib = std::atoll(argv[++i]);
    else if (arg == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
  }
  kdseg::dist::CommunicatorOptions options;
  options.backend = kdseg::dist::Backend::kMpi;
  auto comm = kdseg::dist::make_communicator(options);
  const int n = comm->size();
  if (comm->rank() == 0) {
    std::printf("all-reduce (sum, float32), %d ranks, median of %d\n", n, reps);
    std::printf("%12s %14s %14s %14s %14s %8s %10s %10s\n", "bytes", "raw MPI us", "kdseg us", "raw GB/s", "kdseg GB/s",
                "ratio", "raw err", "kdseg err");
  }
  bool wrong = false;
  for (int64_t bytes = 1024; bytes <= max_mib * (int64_t{1} << 20); bytes *= 4) {
    const int64_t count = bytes / 4;
    at::Tensor tensor = torch::ones({count});
    std::vector<float> raw(static_cast<size_t>(count), 1.0f);
    const int r = std::max(3, static_cast<int>(std::min<int64_t>(reps, (int64_t{1} << 30) / bytes)));
    const auto raw_all_reduce = [&] {
      MPI_Allreduce(MPI_IN_PLACE, raw.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    };
    const auto kdseg_all_reduce = [&] { comm->all_reduce(tensor, kdseg::dist::ReduceOp::kSum); };
    const double t_raw = median_seconds(raw_all_reduce, r);
    const double t_kdseg = median_seconds(kdseg_all_reduce, r);
    // The check: the same calls once more, on values with a known sum.
    float* values = tensor.data_ptr<float>();
    for (int64_t i = 0; i < count; ++i) raw[static_cast<size_t>(i)] = values[i] = value_at(comm->rank(), i);
    raw_all_reduce();
    kdseg_all_reduce();
    const double raw_error = largest_error(raw.data(), count, n);
    const double kdseg_error = largest_error(tensor.data_ptr<float>(), count, n);
    wrong = wrong || raw_error != 0 || kdseg_error != 0;
    const double factor = 2.0 * (n - 1) / n * static_cast<double>(bytes) / 1e9;
    if (comm->rank() == 0) {
      std::printf("%12lld %14.1f %14.1f %14.2f %14.2f %7.2fx %10.2g %10.2g\n", static_cast<long long>(bytes),
                  t_raw * 1e6, t_kdseg * 1e6, factor / t_raw, factor / t_kdseg, t_raw / t_kdseg, raw_error,
                  kdseg_error);
    }
  }
  if (wrong && comm->rank() == 0)
    std::fprintf(stderr, "allreduce_bench: a sum differs from the exact one (err column)\n");
  return wrong ? 1 : 0;
}
