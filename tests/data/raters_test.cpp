// The multi-rater label kinds on arrays small enough to work out by hand, and the rater files of
// a synthetic KiTS23 and QUBIQ case through prepare and the batch loader.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <set>
#include <vector>

#include "core/error.h"
#include "data/batch_loader.h"
#include "data/prepared_store.h"
#include "data/raters.h"
#include "data/synth.h"
#include "tests/data/temp_dir.h"

namespace {
namespace D = kdseg::data;
using torch::Tensor;

// Three raters of a 1x4 slice, label values 0-2:  rater 1: 0 1 1 2;  rater 2: 0 1 2 2;  rater 3: 1 0 2 0.
Tensor three_raters() { return torch::tensor({0, 1, 1, 2, 0, 1, 2, 2, 1, 0, 2, 0}, torch::kByte).view({3, 1, 4}); }

TEST(Raters, MajorityLabelTakesTheMostVotesAndTiesGoLow) {
  // Votes per voxel: {0,0,1}: 0; {1,1,0}: 1; {1,2,2}: 2; {2,2,0}: 2.
  EXPECT_TRUE(D::majority_label(three_raters(), 3).equal(torch::tensor({{0, 1, 2, 2}}, torch::kByte)));
  // Two raters that disagree: a tie goes to the lower value (binary: the foreground needs both).
  const Tensor two = torch::tensor({0, 1, 1, 1, 0, 0, 1, 2}, torch::kByte).view({2, 4});
  EXPECT_TRUE(D::majority_label(two, 3).equal(torch::tensor({0, 0, 1, 1}, torch::kByte)));
  // Four binary raters: 2 of 4 is not a majority, 3 are (floor(4/2)+1 votes).
  const Tensor four = torch::tensor({1, 1, 1, 1, 0, 1, 0, 0}, torch::kByte).view({4, 2});
  EXPECT_TRUE(D::majority_label(four, 2).equal(torch::tensor({0, 1}, torch::kByte)));
}

TEST(Raters, AgreementIsEachRatersDiceAgainstTheMajority) {
  // Majority 0 1 2 2. Rater 1: value 1 {1,2} vs {1}: 2/3; value 2 {3} vs {2,3}: 2/3 -> 2/3.
  // Rater 2: value 1 {1} vs {1}: 1; value 2 {2,3} vs {2,3}: 1 -> 1.
  // Rater 3: value 1 {0} vs {1}: 0; value 2 {2} vs {2,3}: 2/3 -> 1/3.
  const std::vector<double> agreement = D::rater_agreement(three_raters(), 3);
  ASSERT_EQ(agreement.size(), 3u);
  EXPECT_NEAR(agreement[0], 2.0 / 3, 1e-12);
  EXPECT_NEAR(agreement[1], 1.0, 1e-12);
  EXPECT_NEAR(agreement[2], 1.0 / 3, 1e-12);
  // A rater with no overlap at all keeps the full weight (as the paper's code); so do empty ones.
  const Tensor disjoint = torch::tensor({1, 1, 0, 1, 1, 0, 0, 0, 1}, torch::kByte).view({3, 3});
  EXPECT_EQ(D::rater_agreement(disjoint, 2)[2], 1.0);
  EXPECT_EQ(D::rater_agreement(torch::zeros({2, 5}, torch::kByte), 2), std::vector<double>({1.0, 1.0}));
}

TEST(Raters, ClassVotesMajorityAndMeans) {
  const int64_t ignore = 255;
  // Classes of three raters (organ-tumour of the values above): as stored.
  const Tensor classes = three_raters().to(torch::kLong);
  const Tensor votes = D::class_votes(classes, 3);
  EXPECT_TRUE(votes.equal(torch::tensor({2, 1, 0, 1, 1, 2, 1, 0, 0, 0, 2, 2}, torch::kFloat).view({3, 1, 4})));
  EXPECT_TRUE(D::majority_class(votes, ignore).equal(torch::tensor({{0, 1, 2, 2}}, torch::kLong)));
  // The uniform mean: votes / 3.
  const Tensor mean = D::weighted_mean(classes, {1, 1, 1}, 3, ignore);
  EXPECT_TRUE(torch::allclose(mean, votes / 3));
  // Weights 2/3, 1, 1/3 (their sum is 2): voxel 0 has class 0 from raters 1, 2 and class 1 from 3.
  const Tensor weighted = D::weighted_mean(classes, {2.0 / 3, 1.0, 1.0 / 3}, 3, ignore);
  EXPECT_NEAR(weighted[0][0][0].item<double>(), (2.0 / 3 + 1.0) / 2, 1e-6);
  EXPECT_NEAR(weighted[1][0][0].item<double>(), (1.0 / 3) / 2, 1e-6);
  EXPECT_NEAR(weighted[2][0][2].item<double>(), (1.0 + 1.0 / 3) / 2, 1e-6);
  EXPECT_TRUE(torch::allclose(weighted.sum(0), torch::ones({1, 4})));
  // A rater whose class is ignored votes for none; a voxel nobody labels is ignored and 0 in the means.
  const Tensor some_ignored = torch::tensor(std::vector<int64_t>{1, ignore, ignore, ignore}).view({2, 2});
  const Tensor v = D::class_votes(some_ignored, 2);
  EXPECT_TRUE(D::majority_class(v, ignore).equal(torch::tensor(std::vector<int64_t>{1, ignore})));
  EXPECT_TRUE(D::weighted_mean(some_ignored, {1, 1}, 2, ignore).equal(torch::tensor({{0.f, 0.f}, {1.f, 0.f}})));
}

TEST(Raters, RandomRaterDependsOnTheSampleSeedAlone) {
  std::set<int64_t> drawn;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const int64_t r = D::random_rater(seed, 3);
    ASSERT_GE(r, 0);
    ASSERT_LT(r, 3);
    EXPECT_EQ(D::random_rater(seed, 3), r);
    drawn.insert(r);
  }
  EXPECT_EQ(drawn.size(), 3u);  // every rater is drawn
}

TEST(Raters, SynthesisedRatersReachTheLoader) {
  kdseg::test::TempDir dir;
  D::SynthOptions synth;
  synth.layout = D::Layout::kQubiq;
  synth.cases = 2;
  synth.size = 24;
  synth.slices = 6;
  synth.raters = 3;
  D::write_synthetic_dataset(dir.file("raw"), synth);
  D::PrepareOptions p;
  p.input = dir.file("raw");
  p.output = dir.file("p.h5");
  p.slices = D::SliceSelection::kOrgan;
  p.size = 0;
  p.folds = 2;
  EXPECT_EQ(D::prepare_store(p).raters, 3);
  const D::PreparedStore store(p.output);
  ASSERT_EQ(store.raters(), 3);
  ASSERT_EQ(store.rater_agreement().size(), 2u);
  const D::Task task = D::make_task(D::parse_task("tumor"), D::Layout::kQubiq);
  // QUBIQ's stored label is the majority: the majority kind gives it back.
  D::LoaderOptions lo;
  lo.train = false;
  lo.augment.crop = 0;
  lo.raters = D::RaterLabels::kMean;
  D::BatchLoader loader(p.output, task, lo, {{{0, 0}, {1, 0}}});
  const D::Batch batch = *loader.next();
  EXPECT_TRUE(batch.labels.equal(torch::stack({task.classes_of(store.label(0)), task.classes_of(store.label(1))})));
  ASSERT_TRUE(batch.rater_soft.defined());
  EXPECT_TRUE(torch::allclose(batch.rater_soft.sum(1), torch::ones_like(batch.rater_soft.sum(1))));
  // The mean is a multiple of 1/3, and the majority has more than half of the votes.
  EXPECT_TRUE(torch::allclose(batch.rater_soft * 3, (batch.rater_soft * 3).round(), 0, 1e-5));
  EXPECT_TRUE(batch.rater_soft.gather(1, batch.labels.unsqueeze(1)).gt(0.5).all().item<bool>());
}

TEST(Raters, LabelKindsOfRatersNeedAStoreWithRaters) {
  kdseg::test::TempDir dir;
  const std::string store = kdseg::test::write_small_store(dir.path(), 2, 20, 6, D::SliceSelection::kAll);
  D::LoaderOptions lo;
  lo.raters = D::RaterLabels::kMajority;
  try {
    D::BatchLoader loader(store, D::make_task(D::parse_task("tumor"), D::Layout::kLits), lo, {{{0, 0}}});
    FAIL() << "a store without raters was accepted";
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("the store keeps no raters"), std::string::npos) << e.what();
  }
}

// Six QUBIQ cases of three raters, one with a stray fourth mask: the odd case is the bad one,
// whatever the order of the cases, and never the five that agree.
TEST(Raters, TheOddCaseOutIsTheBadOneNotTheCasesThatAgree) {
  kdseg::test::TempDir dir;
  D::SynthOptions synth;
  synth.layout = D::Layout::kQubiq;
  synth.cases = 6;
  synth.size = 20;
  synth.slices = 4;
  synth.raters = 3;
  D::write_synthetic_dataset(dir.file("raw"), synth);
  std::vector<std::filesystem::path> cases;
  for (const auto& c : D::find_cases(dir.file("raw"), D::Layout::kQubiq))
    cases.push_back(std::filesystem::path(c.image).parent_path());
  ASSERT_EQ(cases.size(), 6u);
  const std::filesystem::path odd = cases[2];
  std::filesystem::copy_file(odd / "task01_seg03.nii.gz", odd / "task01_seg04.nii.gz");
  D::PrepareOptions p;
  p.input = dir.file("raw");
  p.output = dir.file("p.h5");
  p.slices = D::SliceSelection::kAll;
  p.size = 0;
  p.folds = 2;
  try {
    D::prepare_store(p);
    FAIL() << "a case with a fourth rater was accepted";
  } catch (const kdseg::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("1 of 6 cases are bad"), std::string::npos) << m;
    EXPECT_NE(m.find(odd.string() + ": 4 raters, where 5 of 6 cases have 3"), std::string::npos) << m;
    EXPECT_NE(m.find("3 raters: 5 cases, 4 raters: 1 case"), std::string::npos) << m;
  }
  p.skip_bad_cases = true;
  const D::PrepareSummary summary = D::prepare_store(p);
  EXPECT_EQ(summary.cases, 5);
  EXPECT_EQ(summary.raters, 3);
  ASSERT_EQ(summary.skipped.size(), 1u);
  EXPECT_NE(summary.skipped[0].find(odd.string()), std::string::npos) << summary.skipped[0];
  // --raters 4 names the count: the five cases of three are then the bad ones.
  p.rater_count = 4;
  p.force = true;
  const D::PrepareSummary four = D::prepare_store(p);
  EXPECT_EQ(four.cases, 1);
  EXPECT_EQ(four.raters, 4);
  ASSERT_EQ(four.skipped.size(), 5u);
  EXPECT_NE(four.skipped[0].find("3 raters, where --raters asks for 4"), std::string::npos) << four.skipped[0];
  // Three cases of three raters, three of four: no count has most cases.
  for (size_t i = 3; i < 5; ++i)
    std::filesystem::copy_file(cases[i] / "task01_seg03.nii.gz", cases[i] / "task01_seg04.nii.gz");
  p.rater_count = 0;
  try {
    D::prepare_store(p);
    FAIL() << "three cases of three raters and three of four were accepted";
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no count has most cases (3 raters: 3 cases, 4 raters: 3 cases); name the "
                                         "count with --raters N"),
              std::string::npos)
        << e.what();
  }
}

// A rater's file that is not a mask (a probability map, an image of noise 0-255) is refused naming
// it, instead of painting every nonzero voxel.
TEST(Raters, MasksThatAreNotMasksAreRefused) {
  kdseg::test::TempDir dir;
  D::SynthOptions synth;
  synth.layout = D::Layout::kQubiq;
  synth.cases = 2;
  synth.size = 20;
  synth.slices = 4;
  synth.raters = 3;
  D::write_synthetic_dataset(dir.file("raw"), synth);
  const std::string image = D::find_cases(dir.file("raw"), D::Layout::kQubiq)[1].image;
  const std::string seg = (std::filesystem::path(image).parent_path() / "task01_seg02.nii.gz").string();
  const D::Volume like = D::read_nifti(image);
  D::PrepareOptions p;
  p.input = dir.file("raw");
  p.output = dir.file("p.h5");
  p.slices = D::SliceSelection::kAll;
  p.size = 0;
  p.folds = 2;
  p.force = true;
  const std::vector<std::pair<at::Tensor, D::NiftiType>> not_masks = {
      {torch::rand(like.voxels.sizes()) * 0.9, D::NiftiType::kFloat32},
      {torch::randint(0, 256, like.voxels.sizes()), D::NiftiType::kUint8}};
  for (const auto& [voxels, type] : not_masks) {
    D::write_nifti(seg, voxels, like.affine, type);
    try {
      D::prepare_store(p);
      ADD_FAILURE() << "a rater's " << D::nifti_type_name(type) << " map was taken as a mask";
    } catch (const kdseg::Error& e) {
      EXPECT_NE(std::string(e.what()).find(seg + ": values "), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("in a rater's mask, which holds 0 and 1: not a mask"), std::string::npos)
          << e.what();
    }
  }
  // A mask of 0 and 1 in any type is one.
  D::write_nifti(seg, (torch::rand(like.voxels.sizes()) > 0.5).to(torch::kFloat), like.affine, D::NiftiType::kFloat32);
  EXPECT_EQ(D::prepare_store(p).cases, 2);
}

}  // namespace
