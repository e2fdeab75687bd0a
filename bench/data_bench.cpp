// Data pipeline throughput on CPU:
//   1. `prepare` of synthetic 512x512 LiTS-like volumes (slices/s, all slices kept);
//   2. augmented 384x384 training batches from that store per loader worker count, against
//      plain sequential reads of the same slices through HDF5 (H5Dread, no augmentation).
//   data_bench [--cases 6] [--slices 48] [--batches 30] [--batch 8] [--dir /tmp/kdseg-data-bench]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "data/loader.h"
#include "data/prepared_store.h"
#include "data/synth.h"

namespace {
namespace D = kdseg::data;
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

int main(int argc, char** argv) {
  int cases = 6;
  int64_t slices = 48, batches = 30, batch = 8;
  std::string dir = (std::filesystem::temp_directory_path() / "kdseg-data-bench").string();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--cases") cases = std::stoi(v);
    else if (k == "--slices") slices = std::stoll(v);
    else if (k == "--batches") batches = std::stoll(v);
    else if (k == "--batch") batch = std::stoll(v);
    else if (k == "--dir") dir = v;
  }
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  torch::set_num_threads(cores);
  std::filesystem::remove_all(dir);
  D::SynthOptions s;
  s.cases = cases;
  s.size = 512;
  s.slices = slices;
  s.seed = 1;
  auto t0 = Clock::now();
  D::write_synthetic_dataset(dir + "/raw", s);
  std::printf("synth: %d cases of 512x512x%lld in %.1f s\n", cases, static_cast<long long>(slices), since(t0));

  D::PrepareOptions p;
  p.input = dir + "/raw";
  p.output = dir + "/prepared.h5";
  p.slices = D::SliceSelection::kAll;
  p.size = 512;
  const D::PrepareSummary summary = D::prepare_store(p);
  std::printf("prepare: %lld slices (%s, deflate 4 + shuffle) in %.2f s = %.1f slices/s with %d threads; %.1f MiB\n",
              static_cast<long long>(summary.slices), summary.image_dtype.c_str(), summary.seconds,
              static_cast<double>(summary.slices) / summary.seconds, cores,
              static_cast<double>(std::filesystem::file_size(p.output)) / (1 << 20));

  const D::PreparedStore store(p.output);
  std::vector<int64_t> rows(static_cast<size_t>(store.slices()));
  std::iota(rows.begin(), rows.end(), 0);
  const D::DistributedSampler sampler(rows, 0, 1, batch, 7, /*drop_last=*/false);
  std::vector<std::vector<D::DistributedSampler::Item>> plan;
  for (int64_t epoch = 0; static_cast<int64_t>(plan.size()) < batches; ++epoch) {
    for (auto& b : sampler.batches(epoch)) {
      if (static_cast<int64_t>(plan.size()) < batches) plan.push_back(b);
    }
  }
  const int64_t total = batches * batch;
  t0 = Clock::now();
  for (const auto& b : plan) {
    for (const auto& item : b) {
      (void)store.image(item.row);
      (void)store.label(item.row);
    }
  }
  const double baseline = static_cast<double>(total) / since(t0);
  std::printf("\nloader: %lld batches of %lld augmented 384x384 slices (scale 0.5-2, flip, crop) from 512x512\n",
              static_cast<long long>(batches), static_cast<long long>(batch));
  std::printf("%-44s %12s %8s\n", "reader", "slices/s", "ratio");
  std::printf("%-44s %12.1f %7.2fx\n", "H5Dread of image+label, sequential, no aug", baseline, 1.0);
  const D::Task task = D::make_task(D::parse_task("tumor"), D::Layout::kLits);
  for (int workers : {1, 2, 3, 4}) {
    D::LoaderOptions o;
    o.workers = workers;
    o.prefetch = 2 * workers;
    D::BatchLoader loader(p.output, task, o, plan);
    t0 = Clock::now();
    int64_t n = 0;
    while (auto b = loader.next()) n += b->images.size(0);
    const double rate = static_cast<double>(n) / since(t0);
    char label[64];
    std::snprintf(label, sizeof label, "BatchLoader, %d worker%s", workers, workers > 1 ? "s" : "");
    std::printf("%-44s %12.1f %7.2fx\n", label, rate, rate / baseline);
  }
  std::filesystem::remove_all(dir);
  return 0;
}
