// The trainer on a real prepared store of synthetic data, in one process: exact resume,
// outputs, bad input and non-finite losses.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/file_util.h"
#include "eval/evaluate.h"
#include "student/train_config.h"
#include "student/trainer.h"
#include "teacher/model_loader.h"
#include "tests/student/trainer_fixture.h"

namespace {
namespace fs = std::filesystem;
using kdseg::test::TrainerTest;

TEST_F(TrainerTest, ResumeIsBitForBitExact) {
  const auto straight = kdseg::student::train(config("straight"), *comm);
  EXPECT_EQ(straight.steps, 6);
  auto first = config("resumed");
  first.stop_after = 3;  // stops mid-run (mid-epoch too: 3 steps per epoch here would be the edge)
  EXPECT_EQ(kdseg::student::train(first, *comm).steps, 3);
  {
    // What a run killed after logging steps it never checkpointed leaves behind.
    std::ofstream out(dir.file("resumed/metrics.jsonl"), std::ios::app);
    out << "{\"step\":4,\"loss\":1}\n{\"validation\":{\"step\":4}}\n";
  }
  auto second = config("resumed");
  second.resume = true;
  EXPECT_EQ(kdseg::student::train(second, *comm).steps, 6);
  const auto a = parameters_of(dir.file("straight/last.pt")), b = parameters_of(dir.file("resumed/last.pt"));
  ASSERT_EQ(a.size(), b.size());
  ASSERT_GT(a.size(), 10u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(a[i].equal(b[i])) << "tensor " << i;
  // metrics.jsonl has one line per step, in order: the lines after the checkpoint are gone.
  std::ifstream lines(dir.file("resumed/metrics.jsonl"));
  std::string line;
  std::vector<int64_t> steps;
  while (std::getline(lines, line)) steps.push_back(nlohmann::json::parse(line).value("step", int64_t{-1}));
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(fs::exists(dir.file("resumed/config.json")));
}

TEST_F(TrainerTest, ValidationWritesBestAndPerCaseMetrics) {
  auto c = config("validated");
  c.max_steps = 0;
  c.epochs = 2;
  c.validate_every = 1;
  const auto summary = kdseg::student::train(c, *comm);
  EXPECT_GE(summary.best_dice, 0.0);
  EXPECT_TRUE(fs::exists(dir.file("validated/best.pt")));
  std::ifstream in(dir.file("validated/metrics.jsonl"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\"validation\""), std::string::npos);
  EXPECT_NE(text.find("\"mean_ece\""), std::string::npos);
}

TEST_F(TrainerTest, CheckpointsServeAsTeachers) {
  kdseg::student::train(config("teacher"), *comm);
  const auto teacher = kdseg::teacher::load_model(dir.file("teacher/last.pt"));
  EXPECT_EQ(teacher->classes(), 2);
  EXPECT_NE(teacher->describe().find("unet-resnet18d"), std::string::npos);
  const at::Tensor x = torch::randn({2, 1, 32, 32});
  const at::Tensor a = teacher->logits(x);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{2, 2, 32, 32}));
  EXPECT_TRUE(a.equal(teacher->logits(x))) << "eval mode: no dropout, running statistics";
  EXPECT_THROW(kdseg::teacher::load_model(dir.file("teacher/nothing.pt")), kdseg::Error);
  kdseg::write_file_atomic(dir.file("junk.pt"), "junk");
  EXPECT_THROW(kdseg::teacher::load_model(dir.file("junk.pt")), kdseg::Error);
}

TEST_F(TrainerTest, EvaluationRefusesTheCasesAModelTrainedOn) {
  kdseg::student::train(config("fold0"), *comm);  // holds out fold 0, trains on fold 1
  kdseg::eval::EvaluateOptions o;
  o.data = dir.file("p.h5");
  o.output = dir.file("report");
  o.bootstrap = 10;
  o.models.push_back({"student", dir.file("fold0/last.pt"), kdseg::teacher::load_model(dir.file("fold0/last.pt"))});
  o.fold = 1;
  try {
    kdseg::eval::evaluate(o, *comm);
    ADD_FAILURE() << "evaluated a model on cases it trained on";
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("case(s) of fold 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("it held out fold 0"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir.file("report")));
  o.fold = 0;
  const auto report = kdseg::eval::evaluate(o, *comm);
  EXPECT_EQ(report.at("store_options").at("slices"), "organ");
}

TEST_F(TrainerTest, BadInputIsAClearError) {
  auto c = config("bad");
  c.fold = 4;
  expect_train_error(c, "--fold 4 does not exist; the store has 2 folds");
  c = config("bad");
  c.epochs = 2;  // and max_steps
  EXPECT_THROW(kdseg::student::train(c, *comm), kdseg::Error);
  c = config("bad");
  c.resume = true;
  c.width = 0.25;
  auto first = config("bad");
  kdseg::student::train(first, *comm);
  expect_train_error(c, "was written with width = 0.125");
  // A run is never replaced by accident; --force starts over.
  expect_train_error(config("bad"), "bad already holds a run");
  auto again = config("bad");
  again.force = true;
  again.max_steps = 2;
  EXPECT_EQ(kdseg::student::train(again, *comm).steps, 2);
  // Options out of range name the option.
  for (const auto& [field, text] :
       std::vector<std::pair<std::function<void(kdseg::student::TrainConfig&)>, std::string>>{
           {[](auto& t) { t.dropout = 1.5; }, "--dropout must be in [0, 1), got 1.5"},
           {[](auto& t) { t.crop = 0; }, "--crop-size must be >= 1, got 0"},
           {[](auto& t) { t.batch_size = 0; }, "--batch-size must be >= 1, got 0"},
           {[](auto& t) { t.workers = -1; }, "--workers must be >= 0"},
           {[](auto& t) { t.checkpoint_every = -3; }, "--checkpoint-every and --stop-after must be >= 0"},
           {[](auto& t) { t.ls_kernel = 2; }, "--ls-kernel must be odd"}}) {
    auto bad = config("bad-option");
    field(bad);
    expect_train_error(bad, text);
  }
}

// --crop-size 4096 on a small store once went on to allocate tens of GiB: a crop whose
// activations cannot fit in memory is refused, naming the option and the estimate, while the
// default crop (which pads the tests' 32-pixel slices) is accepted.
TEST_F(TrainerTest, CropsThatCannotFitInMemoryAreRefused) {
  namespace S = kdseg::student;
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  auto huge = config("huge");
  huge.crop = 4096;
  huge.width = 1;
  huge.batch_size = 8;
  // 8 crops of 4096^2 pixels, 257 floats a pixel: 128.5 GiB.
  EXPECT_NEAR(S::activation_bytes(huge, 1) / kGiB, 8.0 * 4096 * 4096 * 4 * 257 / kGiB, 1e-9);
  EXPECT_NEAR(S::activation_bytes(huge, 2), S::activation_bytes(huge, 1) / 2, 1.0) << "per rank";
  try {
    S::check_fits_in_memory(huge, 1, 64 * kGiB);
    FAIL() << "accepted";
  } catch (const kdseg::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("--crop-size 4096 needs at least 128.5 GiB"), std::string::npos) << message;
    EXPECT_NE(message.find("this machine's 64.0 GiB; use --crop-size 2880 or less"), std::string::npos) << message;
  }
  auto standard = config("standard");
  standard.width = 1;
  standard.batch_size = 8;
  standard.crop = 384;  // the default
  EXPECT_NO_THROW(S::check_fits_in_memory(standard, 1, 4 * kGiB));
  EXPECT_NO_THROW(S::check_config(config("tests"), 1)) << "the tests' own runs, on this machine";
  huge.batch_size = 64;  // 1 TiB, more than any machine this runs on
  expect_train_error(huge, "--crop-size 4096 needs at least");
  EXPECT_FALSE(fs::exists(dir.file("huge/config.json"))) << "refused before any work";
}

TEST_F(TrainerTest, ResumeRefusesAnotherStoreAtTheSamePath) {
  auto c = config("restored");
  c.stop_after = 2;
  kdseg::student::train(c, *comm);
  kdseg::data::PrepareOptions p;  // the same cases, every slice: other contents at the same path
  p.input = dir.file("raw");
  p.output = dir.file("p.h5");
  p.size = 0;
  p.folds = 2;
  p.slices = kdseg::data::SliceSelection::kAll;
  p.force = true;
  kdseg::data::prepare_store(p);
  c.resume = true;
  // The record's data_hash names the store (run record version 3).
  expect_train_error(c, "was written with data_hash = ");
}

TEST_F(TrainerTest, DeviceAndPrecisionAreChecked) {
  auto c = config("device");
  c.precision = kdseg::Precision::kBf16;  // autocast is for CUDA
  expect_train_error(c, "--precision bf16 (autocast) is for --device cuda");
  c = config("device");
  c.device = c10::DeviceType::XLA;
  EXPECT_THROW(kdseg::student::train(c, *comm), kdseg::Error);
  if (torch::cuda::is_available()) return;  // the rest is about machines without one
  c = config("device");
  c.device = c10::kCUDA;
  expect_train_error(c, "--device cuda: this process sees no CUDA device");
  EXPECT_FALSE(fs::exists(dir.file("device/config.json"))) << "nothing written before the device is known";
}

TEST_F(TrainerTest, NonFiniteLossStopsOrIsSkipped) {
  auto c = config("nan");
  c.lr = 1e30;  // the first updates blow the weights up
  expect_train_error(c, "the loss is not finite at step");
  c.output = dir.file("nan-skipped");
  c.skip_nonfinite = true;
  const auto summary = kdseg::student::train(c, *comm);
  EXPECT_EQ(summary.steps, 6);
  EXPECT_GT(summary.skipped_steps, 0);
}

}  // namespace
