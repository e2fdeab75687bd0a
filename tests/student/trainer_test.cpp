// The trainer on a real prepared store of synthetic data, in one process: exact resume,
// outputs, bad input and non-finite losses.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/models/unet.h"
#include "data/prepared_store.h"
#include "dist/communicator.h"
#include "student/trainer.h"
#include "teacher/teacher_loader.h"
#include "core/file_util.h"
#include "tests/data/temp_dir.h"

namespace {
namespace fs = std::filesystem;

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kdseg::test::write_small_dataset(dir.file("raw"), 4, 32, 10);
    kdseg::data::PrepareOptions p;
    p.input = dir.file("raw");
    p.output = dir.file("p.h5");
    p.size = 0;
    p.folds = 2;
    p.slices = kdseg::data::SliceSelection::kOrgan;
    kdseg::data::prepare_store(p);
    comm = kdseg::dist::make_communicator({kdseg::dist::Backend::kLocal});
  }
  kdseg::student::TrainConfig config(const std::string& output) const {
    kdseg::student::TrainConfig c;
    c.data = dir.file("p.h5");
    c.output = dir.file(output);
    c.width = 0.125;
    c.crop = 32;
    c.batch_size = 4;
    c.max_steps = 6;
    c.lr = 1e-3;
    c.workers = 2;
    c.log_every = 1;
    c.validate_every = 0;
    return c;
  }
  // The parameters and buffers of a checkpoint, loaded into a network of the test's shape.
  static std::vector<at::Tensor> parameters_of(const std::string& checkpoint) {
    torch::serialize::InputArchive archive, model_archive;
    archive.load_from(checkpoint);
    archive.read("model", model_archive);
    kdseg::models::UNet model(kdseg::models::UNetOptions().width(0.125));
    model->load(model_archive);
    std::vector<at::Tensor> out = model->parameters();
    for (const auto& b : model->buffers()) out.push_back(b);
    return out;
  }
  kdseg::test::TempDir dir;
  std::unique_ptr<kdseg::dist::Communicator> comm;
};

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
  try {
    kdseg::student::train(c, *comm);
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--fold 4 does not exist; the store has 2 folds"), std::string::npos) << e.what();
  }
  c = config("bad");
  c.epochs = 2;  // and max_steps
  EXPECT_THROW(kdseg::student::train(c, *comm), kdseg::Error);
  c = config("bad");
  c.resume = true;
  c.width = 0.25;
  auto first = config("bad");
  kdseg::student::train(first, *comm);
  try {
    kdseg::student::train(c, *comm);
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("was written with width = 0.125"), std::string::npos) << e.what();
  }
}

TEST_F(TrainerTest, NonFiniteLossStopsOrIsSkipped) {
  auto c = config("nan");
  c.lr = 1e30;  // the first updates blow the weights up
  try {
    kdseg::student::train(c, *comm);
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("the loss is not finite at step"), std::string::npos) << e.what();
  }
  c.output = dir.file("nan-skipped");
  c.skip_nonfinite = true;
  const auto summary = kdseg::student::train(c, *comm);
  EXPECT_EQ(summary.steps, 6);
  EXPECT_GT(summary.skipped_steps, 0);
}

}  // namespace
