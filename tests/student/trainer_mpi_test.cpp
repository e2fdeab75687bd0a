// N ranks with global batch B follow the trajectory of 1 rank with batch B (dropout 0):
// interleaved sampling, per-sample augmentation seeds, SyncBatchNorm, global-batch DML and
// bucketed gradient averaging together.
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/models/unet.h"
#include "data/prepared_store.h"
#include "student/trainer.h"
#include "tests/data/temp_dir.h"
#include "tests/dist/mpi_test_main.h"

namespace {
using kdseg::test::all_ranks;
using kdseg::test::world;

// A folder made by rank 0 and shared with the others.
std::string shared_folder(std::unique_ptr<kdseg::test::TempDir>& owner) {
  std::string path;
  if (world().rank() == 0) {
    owner = std::make_unique<kdseg::test::TempDir>();
    path = owner->path();
  }
  at::Tensor bytes = torch::zeros({512}, torch::kByte);
  if (world().rank() == 0) std::memcpy(bytes.data_ptr(), path.data(), path.size());
  world().broadcast(bytes, 0);
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr()));
}

// The global-batch loss of every logged step in metrics.jsonl.
std::vector<double> losses_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<double> out;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j.at("loss").get<double>());
  }
  return out;
}

TEST(DistributedTraining, TwoOrThreeRanksFollowOneRank) {
  std::unique_ptr<kdseg::test::TempDir> owner;
  const std::string dir = shared_folder(owner);
  if (world().rank() == 0) {
    kdseg::test::write_small_dataset(dir + "/raw", 4, 32, 10);
    kdseg::data::PrepareOptions p;
    p.input = dir + "/raw";
    p.output = dir + "/p.h5";
    p.size = 0;
    p.folds = 2;
    p.slices = kdseg::data::SliceSelection::kOrgan;
    kdseg::data::prepare_store(p);
  }
  world().barrier();
  kdseg::student::TrainConfig c;
  c.data = dir + "/p.h5";
  c.width = 0.125;
  c.dropout = 0;
  c.crop = 32;
  c.batch_size = 6;  // global: 3 per rank on 2 ranks, 2 on 3
  c.max_steps = 4;
  c.lr = 1e-3;
  c.workers = 1;
  c.validate_every = 0;
  c.log_every = 1;
  c.output = dir + "/parallel";
  kdseg::student::train(c, world());
  bool ok = true;
  double first = 0, worst = 0;
  if (world().rank() == 0) {
    auto local = kdseg::dist::make_communicator({kdseg::dist::Backend::kLocal});
    c.output = dir + "/single";
    kdseg::student::train(c, *local);
    const auto a = losses_of(dir + "/parallel/metrics.jsonl"), b = losses_of(dir + "/single/metrics.jsonl");
    ok = a.size() == 4 && b.size() == 4;
    for (size_t i = 0; ok && i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / std::abs(b[i]));
    first = ok ? std::abs(a[0] - b[0]) / std::abs(b[0]) : 1.0;
    // Step 1 sees the same weights and data: only the order of float32 sums differs. Later
    // steps go through AdamW, whose normalised update turns rounding-level differences in
    // near-zero gradients into steps of the learning rate, so the trajectories separate slowly.
    ok = ok && first < 1e-5 && worst < 1e-2;
  }
  if (world().rank() == 0) std::printf("relative loss difference: step 1 %.3g, worst of 4 steps %.3g\n", first, worst);
  EXPECT_TRUE(all_ranks(ok)) << "relative loss difference at step 1: " << first << ", at worst: " << worst;
}

}  // namespace
