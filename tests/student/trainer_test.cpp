// The trainer on a real prepared store of synthetic data, in one process: exact resume,
// outputs, bad input and non-finite losses.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/file_util.h"
#include "student/trainer.h"
#include "teacher/teacher_loader.h"
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
  auto second = config("resumed");
  second.resume = true;
  EXPECT_EQ(kdseg::student::train(second, *comm).steps, 6);
  const auto a = parameters_of(dir.file("straight/last.pt")), b = parameters_of(dir.file("resumed/last.pt"));
  ASSERT_EQ(a.size(), b.size());
  ASSERT_GT(a.size(), 10u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(a[i].equal(b[i])) << "tensor " << i;
  // metrics.jsonl has one line per step in both, the resumed one in two parts.
  std::ifstream lines(dir.file("resumed/metrics.jsonl"));
  EXPECT_EQ(std::count(std::istreambuf_iterator<char>(lines), std::istreambuf_iterator<char>(), '\n'), 6);
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
  const auto teacher = kdseg::teacher::load_teacher(dir.file("teacher/last.pt"));
  EXPECT_EQ(teacher->classes(), 2);
  EXPECT_NE(teacher->describe().find("unet-resnet18d"), std::string::npos);
  const at::Tensor x = torch::randn({2, 1, 32, 32});
  const at::Tensor a = teacher->logits(x);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{2, 2, 32, 32}));
  EXPECT_TRUE(a.equal(teacher->logits(x))) << "eval mode: no dropout, running statistics";
  EXPECT_THROW(kdseg::teacher::load_teacher(dir.file("teacher/nothing.pt")), kdseg::Error);
  kdseg::write_file_atomic(dir.file("junk.pt"), "junk");
  EXPECT_THROW(kdseg::teacher::load_teacher(dir.file("junk.pt")), kdseg::Error);
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
}

TEST_F(TrainerTest, DeviceAndPrecisionAreChecked) {
  auto c = config("device");
  c.precision = "bf16";  // autocast is for CUDA
  expect_train_error(c, "--precision bf16 (autocast) is for --device cuda");
  c = config("device");
  c.device = "tpu";
  EXPECT_THROW(kdseg::student::train(c, *comm), kdseg::Error);
  if (torch::cuda::is_available()) return;  // the rest is about machines without one
  c = config("device");
  c.device = "cuda";
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
