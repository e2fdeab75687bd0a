// Tasks, augmentation, sampling and the prefetching loader on a real prepared store.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "data/loader.h"
#include "data/prepared_store.h"
#include "data/synth.h"
#include "tests/data/temp_dir.h"

namespace {
namespace D = kdseg::data;
using torch::Tensor;

TEST(Task, LabelMapsAndWindows) {
  const Tensor stored = torch::tensor({0, 1, 2, 3}, torch::kByte);
  const D::Task tumour = D::make_task(D::parse_task("tumor"), D::Layout::kLits);
  EXPECT_EQ(tumour.classes, 2);
  EXPECT_TRUE(tumour.classes_of(stored.narrow(0, 0, 3)).equal(torch::tensor({0, 0, 1})));
  EXPECT_EQ(tumour.classes_of(stored)[3].item<int64_t>(), 255) << "3 is not a LiTS label: ignored";
  EXPECT_TRUE(D::make_task(D::parse_task("organ-tumor"), D::Layout::kKits23, "tumor")
                  .classes_of(stored)
                  .equal(torch::tensor({0, 1, 2, 2})));
  EXPECT_TRUE(D::make_task(D::parse_task("organ-tumor"), D::Layout::kKits23, "ignore")
                  .classes_of(stored)
                  .equal(torch::tensor({0, 1, 2, 255})));
  EXPECT_TRUE(
      D::make_task(D::parse_task("tumor"), D::Layout::kKits23).classes_of(stored).equal(torch::tensor({0, 0, 1, 0})));
  const D::Task map = D::make_task(D::parse_task("map:0:0,1:1,2:1,3:ignore"), D::Layout::kKits23);
  EXPECT_EQ(map.classes, 2);
  EXPECT_TRUE(map.classes_of(stored).equal(torch::tensor({0, 1, 1, 255})));
  EXPECT_THROW(D::make_task(D::parse_task("vessels"), D::Layout::kLits), kdseg::Error);
  // Malformed maps and labels the layout does not have name the problem.
  const auto message = [](const std::string& task) {
    try {
      D::make_task(D::parse_task(task), D::Layout::kLits);
    } catch (const kdseg::Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message("map:0:0,1:x").find("'x' is not a class"), std::string::npos) << message("map:0:0,1:x");
  EXPECT_NE(message("map:0:0,1x:1").find("'1x' is not a label value"), std::string::npos) << message("map:0:0,1x:1");
  EXPECT_NE(message("map:0:0,9:1").find("label 9 does not occur in lits"), std::string::npos) << message("map:0:0,9:1");
  const Tensor hu = torch::tensor({-1000.0, -60.0, 40.0, 140.0, 900.0});
  EXPECT_TRUE(tumour.window(hu).equal(torch::tensor({-1.0f, -1.0f, 0.0f, 1.0f, 1.0f})));
  const D::Task kits = D::make_task(D::parse_task("tumor"), D::Layout::kKits19);
  EXPECT_FLOAT_EQ(kits.window(torch::tensor({50.0})).item<float>(), 0.0f);  // [-200, 300]
}

D::Sample pattern_sample(int64_t h, int64_t w) {
  torch::manual_seed(0);
  const Tensor label = torch::randint(0, 3, {h, w}, torch::kLong);
  return {label.to(torch::kFloat).unsqueeze(0), label, torch::one_hot(label, 3).permute({2, 0, 1}).to(torch::kFloat)};
}

TEST(Augment, SameTransformForImageLabelAndExtraMaps) {
  const D::Sample in = pattern_sample(40, 50);
  D::AugmentOptions o;
  o.scale_min = o.scale_max = 1.0;  // sampling at pixel centres: the values themselves
  o.crop = 32;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const D::Sample out = D::augment(in, o, seed, 255);
    ASSERT_EQ(out.image.sizes(), (std::vector<int64_t>{1, 32, 32}));
    EXPECT_TRUE(out.image.squeeze(0).round().to(torch::kLong).equal(out.label));
    EXPECT_TRUE(out.extra.argmax(0).equal(out.label));
    // Same seed, same result.
    EXPECT_TRUE(D::augment(in, o, seed, 255).image.equal(out.image));
  }
}

TEST(Augment, ScaledLabelsFollowTheImage) {
  // A blocky label map and one-hot maps made from it stay aligned under scale, flip and crop.
  const Tensor blocks =
      (torch::arange(40).div(8, "floor").view({40, 1}) + torch::arange(50).div(6, "floor").view({1, 50})) % 3;
  const D::Sample in{blocks.to(torch::kFloat).unsqueeze(0), blocks,
                     torch::one_hot(blocks, 3).permute({2, 0, 1}).to(torch::kFloat)};
  D::AugmentOptions o;
  o.crop = 48;
  for (uint64_t seed = 0; seed < 10; ++seed) {
    const D::Sample out = D::augment(in, o, seed, 255);
    const Tensor kept = out.label != 255;
    // Where a bilinear one-hot map is 1, all four neighbours had that class: the nearest-neighbour
    // label must be it too.
    const auto [top, cls] = out.extra.max(0);
    const Tensor sure = top.gt(1 - 1e-4).logical_and(kept);
    EXPECT_TRUE(cls.masked_select(sure).equal(out.label.masked_select(sure))) << "seed " << seed;
    EXPECT_GT(sure.sum().item<int64_t>(), 100);
  }
}

TEST(Augment, ScaledSoftMapsStayNormalisedAndPaddingIsMarked) {
  const D::Sample in = pattern_sample(30, 30);
  D::AugmentOptions o;
  o.scale_min = 0.5;
  o.scale_max = 0.6;  // smaller than the crop: padding
  o.crop = 24;
  const D::Sample out = D::augment(in, o, 3, 255);
  const Tensor padded = out.label == 255;
  EXPECT_GT(padded.sum().item<int64_t>(), 0);
  EXPECT_TRUE(out.image.squeeze(0).masked_select(padded).eq(-1).all().item<bool>());
  EXPECT_TRUE(out.extra.sum(0).masked_select(padded).eq(0).all().item<bool>());
  const Tensor sums = out.extra.sum(0).masked_select(padded.logical_not());
  EXPECT_LT((sums - 1).abs().max().item<double>(), 1e-5);
  // Evaluation: centre crop, padded around the centre when the slice is smaller.
  const D::Sample centred = D::center_crop(in, 20, 255);
  EXPECT_TRUE(centred.label.equal(in.label.narrow(0, 5, 20).narrow(1, 5, 20)));
  EXPECT_EQ(D::center_crop(in, 34, 255).label[0][0].item<int64_t>(), 255);
}

TEST(Sampler, GlobalBatchIsTheSameForAnyNumberOfRanks) {
  std::vector<int64_t> rows(23);
  std::iota(rows.begin(), rows.end(), 100);
  const D::DistributedSampler one(rows, 0, 1, 6, 42);
  for (int world : {2, 3}) {
    std::vector<D::DistributedSampler> ranks;
    for (int r = 0; r < world; ++r) ranks.emplace_back(rows, r, world, 6, 42);
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      const auto reference = one.batches(epoch);
      std::vector<std::vector<std::vector<D::DistributedSampler::Item>>> per_rank;
      for (auto& s : ranks) per_rank.push_back(s.batches(epoch));
      ASSERT_EQ(reference.size(), 3u);  // 23 / 6, last partial batch dropped
      for (size_t step = 0; step < reference.size(); ++step) {
        for (size_t j = 0; j < 6; ++j) {
          const auto& item = per_rank[j % static_cast<size_t>(world)][step][j / static_cast<size_t>(world)];
          EXPECT_EQ(item.row, reference[step][j].row);
          EXPECT_EQ(item.seed, reference[step][j].seed);
        }
      }
    }
  }
  EXPECT_NE(one.batches(0)[0][0].row * 1000 + one.batches(0)[0][1].row,
            one.batches(1)[0][0].row * 1000 + one.batches(1)[0][1].row);
  EXPECT_EQ(D::DistributedSampler(rows, 0, 1, 6, 42, /*drop_last=*/false).steps_per_epoch(), 4);
  EXPECT_THROW(D::DistributedSampler(rows, 0, 4, 6, 42), kdseg::Error);  // 6 is not a multiple of 4
}

TEST(Sampler, EvaluationRowsOnceAcrossRanks) {
  std::vector<int64_t> rows(10);
  std::iota(rows.begin(), rows.end(), 0);
  std::vector<int64_t> all;
  for (int r = 0; r < 3; ++r) {
    const auto part = D::evaluation_rows(rows, r, 3);
    all.insert(all.end(), part.begin(), part.end());
  }
  EXPECT_EQ(all, rows);
}

TEST(Sampler, EvaluationCaseRowsKeepEachCaseOnOneRank) {
  // Cases of 4, 1, 6, 2 and 3 rows (store rows 0-15), the fold's rows in store order.
  const std::vector<int32_t> slice_case = {0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 3, 3, 4, 4, 4};
  std::vector<int64_t> rows(slice_case.size());
  std::iota(rows.begin(), rows.end(), 0);
  for (int ranks = 1; ranks <= 7; ++ranks) {
    std::vector<int64_t> all;
    std::vector<int> owner(5, -1);
    for (int r = 0; r < ranks; ++r) {
      for (int64_t row : D::evaluation_case_rows(rows, slice_case, r, ranks)) {
        all.push_back(row);
        int& o = owner[static_cast<size_t>(slice_case[static_cast<size_t>(row)])];
        EXPECT_TRUE(o == -1 || o == r) << "case split between ranks " << o << " and " << r << " of " << ranks;
        o = r;
      }
    }
    EXPECT_EQ(all, rows) << ranks << " ranks";
  }
  // Two ranks: the even share (8 rows) moves to the end of case 2.
  EXPECT_EQ(D::evaluation_case_rows(rows, slice_case, 0, 2).size(), 11u);
}

class LoaderOnStore : public ::testing::TestWithParam<std::pair<int, int64_t>> {};

TEST_P(LoaderOnStore, DecodesChunksExactlyAndKeepsPlanOrder) {
  const auto [compression, size] = GetParam();
  kdseg::test::TempDir dir;
  kdseg::test::write_small_dataset(dir.file("raw"), 4, 32, 8);
  D::PrepareOptions p;
  p.input = dir.file("raw");
  p.output = dir.file("p.h5");
  p.slices = D::SliceSelection::kAll;
  p.size = size;  // 0: int16 images; 40: float32 (bilinear)
  p.compression = compression;
  D::prepare_store(p);
  const D::PreparedStore store(p.output);
  const D::Task task = D::make_task(D::parse_task("tumor"), D::Layout::kLits);
  std::vector<int64_t> rows(static_cast<size_t>(store.slices()));
  std::iota(rows.begin(), rows.end(), 0);
  std::vector<std::vector<D::DistributedSampler::Item>> plan;
  for (size_t i = 0; i < rows.size(); i += 5) {
    std::vector<D::DistributedSampler::Item> batch;
    for (size_t j = i; j < std::min(rows.size(), i + 5); ++j) batch.push_back({rows[j], 0});
    plan.push_back(batch);
  }
  D::LoaderOptions o;
  o.train = false;
  o.augment.crop = 0;  // whole slices
  o.workers = 3;
  o.prefetch = 2;
  D::BatchLoader loader(p.output, task, o, plan);
  size_t b = 0;
  while (auto batch = loader.next()) {
    ASSERT_LT(b, plan.size());
    for (size_t i = 0; i < plan[b].size(); ++i) {
      const int64_t row = plan[b][i].row;
      EXPECT_EQ(batch->rows[i], row);
      EXPECT_TRUE(batch->images[static_cast<int64_t>(i)][0].equal(task.window(store.image(row))))
          << "row " << row << " max difference "
          << (batch->images[static_cast<int64_t>(i)][0] - task.window(store.image(row))).abs().max().item<float>();
      EXPECT_TRUE(batch->labels[static_cast<int64_t>(i)].equal(task.classes_of(store.label(row)))) << "row " << row;
    }
    ++b;
  }
  EXPECT_EQ(b, plan.size());
}
INSTANTIATE_TEST_SUITE_P(Stores, LoaderOnStore,
                         ::testing::Values(std::make_pair(4, int64_t{0}), std::make_pair(0, int64_t{0}),
                                           std::make_pair(6, int64_t{40})));

TEST(Loader, WorkerErrorsReachTheConsumer) {
  kdseg::test::TempDir dir;
  kdseg::test::write_small_dataset(dir.file("raw"), 2, 20, 6);
  D::PrepareOptions p;
  p.input = dir.file("raw");
  p.output = dir.file("p.h5");
  p.slices = D::SliceSelection::kAll;
  p.size = 0;
  D::prepare_store(p);
  D::BatchLoader loader(p.output, D::make_task(D::parse_task("tumor"), D::Layout::kLits), D::LoaderOptions(),
                        {{{999999, 0}}});
  try {
    loader.next();
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/slices/image: row 999999 outside"), std::string::npos) << e.what();
  }
}

}  // namespace
