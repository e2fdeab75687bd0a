// What kdseg's integrity checks cost beside the reads they guard, timed in one process (median of
// three runs each):
//   - a checkpoint of `arch` at width 1 with its optimiser's moments: LibTorch's load of the
//     archive and the network's weights (the baseline) against the CRC-32 pass over every record
//     (core/zip_check.h) that every kdseg reader now adds;
//   - a store of `cases` x `slices` synthetic slices at `size`, deflate level 4 and uncompressed:
//     reading every slice's image and label as training and evaluation do (the baseline) against
//     `kdseg verify`'s recomputation of the content hash (data/store_check.h).
// Exits 1 unless every file checks as intact. The work folder is written into and its files
// replaced: give one of your own (not a shared /tmp name).
//   integrity_bench <work dir> [size 512] [slices 64] [cases 4] [arch unet-resnet50d]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/adamw.h"
#include "core/enum_names.h"
#include "core/models/checkpoint.h"
#include "core/zip_check.h"
#include "data/prepared_store.h"
#include "data/store_check.h"
#include "data/synth.h"

namespace {

namespace M = kdseg::models;
namespace D = kdseg::data;

double median_seconds(const std::function<void()>& run) {
  std::vector<double> seconds;
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[1];
}

void print_row(const std::string& file, double megabytes, const char* baseline, double base_s, double check_s) {
  std::printf("| %s | %.0f | %s %.3f s | %.3f s | %.2fx |\n", file.c_str(), megabytes, baseline, base_s, check_s,
              check_s / base_s);
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) return line.substr(line.find(':') + 2);
  }
  return "an unknown CPU";
}

const char* build_type() {
#ifdef NDEBUG
  return "Release";
#else
  return "Debug";
#endif
}

double megabytes(const std::string& path) { return static_cast<double>(std::filesystem::file_size(path)) / 1e6; }

// A checkpoint as training writes it: weights and the optimiser's moments (one step on zero
// gradients creates them).
std::string write_checkpoint(const std::string& path, M::Encoder arch) {
  M::UNet model(M::UNetOptions().encoder(arch).classes(2));
  kdseg::MultiTensorAdamW optimizer(kdseg::unet_param_groups(*model, 1e-4, 0.01), torch::optim::AdamWOptions(1e-4));
  for (auto& p : model->parameters()) p.mutable_grad() = torch::zeros_like(p);
  optimizer.step();
  M::CheckpointInfo info;
  info.config = "{}";
  info.classes = 2;
  M::save_checkpoint(path, model, optimizer, info);
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 6) {
    std::fprintf(stderr, "usage: integrity_bench <work dir> [size 512] [slices 64] [cases 4] [arch unet-resnet50d]\n");
    return 2;
  }
  const std::string work = argv[1];
  const int64_t size = argc > 2 ? std::stoll(argv[2]) : 512;
  const int64_t slices = argc > 3 ? std::stoll(argv[3]) : 64;
  const int cases = argc > 4 ? std::stoi(argv[4]) : 4;
  const M::Encoder arch = kdseg::parse_enum<M::Encoder>("arch", argc > 5 ? argv[5] : "unet-resnet50d");
  const int threads = static_cast<int>(std::thread::hardware_concurrency());
  torch::set_num_threads(threads);
  std::filesystem::create_directories(work);
  std::printf("integrity_bench: %s, %s build, %d threads; %s, %lld x %lld x %lld slices a case, %d cases\n\n",
              cpu_model().c_str(), build_type(), threads, kdseg::enum_name(arch), static_cast<long long>(size),
              static_cast<long long>(size), static_cast<long long>(slices), cases);
  std::printf("| file | MB | baseline | check | check / baseline |\n|---|---|---|---|---|\n");
  bool intact = true;

  const std::string checkpoint = write_checkpoint(work + "/checkpoint.pt", arch);
  M::UNet model(M::UNetOptions().encoder(arch).classes(2));  // built once: the load alone is timed
  const double load_s = median_seconds([&] {
    torch::serialize::InputArchive archive, weights;
    archive.load_from(checkpoint);
    archive.read("model", weights);
    model->load(weights);
  });
  std::string damage;
  const double crc_s = median_seconds([&] { damage = kdseg::check_zip(checkpoint).damage; });
  intact = intact && damage.empty();
  print_row("checkpoint (weights and moments)", megabytes(checkpoint), "LibTorch load", load_s, crc_s);

  D::SynthOptions synth;
  synth.cases = cases;
  synth.size = size;
  synth.slices = slices;
  synth.force = true;
  D::write_synthetic_dataset(work + "/raw", synth);
  for (const int level : {4, 0}) {
    D::PrepareOptions p;
    p.input = work + "/raw";
    p.output = work + "/store-" + std::to_string(level) + ".h5";
    p.size = size;
    p.slices = D::SliceSelection::kAll;
    p.compression = level;
    p.folds = std::min(5, cases);
    p.force = true;
    D::prepare_store(p);
    const double read_s = median_seconds([&] {
      const D::PreparedStore store(p.output);
      for (int64_t row = 0; row < store.slices(); ++row) {
        store.image(row);
        store.label(row);
      }
    });
    D::StoreCheck check;
    const double verify_s = median_seconds([&] { check = D::check_store_content(p.output, false); });
    intact = intact && check.intact();
    print_row("store, deflate level " + std::to_string(level) + " (" + std::to_string(check.slices) + " slices)",
              megabytes(p.output), "read every slice", read_s, verify_s);
  }
  if (!intact) {
    std::fprintf(stderr, "integrity_bench: a file it wrote did not check as intact\n");
    return 1;
  }
  return 0;
}
