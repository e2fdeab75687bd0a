// `kdseg distill` in one process: soft labels from a real cache made by the teacher pass, the
// online teacher, exact resume, local and global DML agreeing on one rank, and bad caches.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/models/unet.h"
#include "data/prepared_store.h"
#include "dist/communicator.h"
#include "student/trainer.h"
#include "teacher/model_loader.h"
#include "teacher/precompute.h"
#include "tests/data/temp_dir.h"

namespace {
namespace fs = std::filesystem;
using kdseg::student::TrainConfig;

std::vector<nlohmann::json> step_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(std::move(j));
  }
  return out;
}

class DistillTest : public ::testing::Test {
 protected:
  // One store, one teacher and its cache for the whole suite (they take seconds to make).
  static void SetUpTestSuite() {
    dir = new kdseg::test::TempDir();
    comm = kdseg::dist::make_communicator({kdseg::dist::Backend::kLocal}).release();
    kdseg::test::write_small_dataset(dir->file("raw"), 4, 32, 10);
    kdseg::data::PrepareOptions p;
    p.input = dir->file("raw");
    p.output = dir->file("p.h5");
    p.size = 0;
    p.folds = 2;
    p.slices = kdseg::data::SliceSelection::kOrgan;
    kdseg::data::prepare_store(p);
    TrainConfig t = base("teacher");
    t.max_steps = 4;
    kdseg::student::train(t, *comm);
    kdseg::teacher::PrecomputeOptions o;
    o.teachers = {dir->file("teacher/last.pt")};
    o.data = dir->file("p.h5");
    o.output = dir->file("cache");
    kdseg::teacher::precompute(o, *comm);
  }
  static void TearDownTestSuite() {
    delete comm;
    delete dir;
  }

  static TrainConfig base(const std::string& output) {
    TrainConfig c;
    c.data = dir->file("p.h5");
    c.output = dir->file(output);
    c.width = 0.125;
    c.crop = 32;
    c.batch_size = 4;
    c.max_steps = 4;
    c.lr = 1e-3;
    c.workers = 2;
    c.log_every = 1;
    c.validate_every = 0;
    return c;
  }
  static TrainConfig distill(const std::string& output) {
    TrainConfig c = base(output);
    c.teacher_mode = kdseg::student::TeacherMode::kCache;
    c.cache = dir->file("cache");
    c.teacher = dir->file("teacher/last.pt");
    return c;
  }
  static std::string error_of(const TrainConfig& c) {
    try {
      kdseg::student::train(c, *comm);
    } catch (const kdseg::Error& e) {
      return e.what();
    }
    return "(no error)";
  }

  static kdseg::test::TempDir* dir;
  static kdseg::dist::Communicator* comm;
};
kdseg::test::TempDir* DistillTest::dir = nullptr;
kdseg::dist::Communicator* DistillTest::comm = nullptr;

TEST_F(DistillTest, CachedSoftLabelsEnterEveryTerm) {
  kdseg::student::train(distill("kd"), *comm);
  const auto steps = step_lines(dir->file("kd/metrics.jsonl"));
  ASSERT_EQ(steps.size(), 4u);
  for (const auto& s : steps) {
    EXPECT_GT(s.at("kl").get<double>(), 0.0);
    EXPECT_GT(s.at("dml_soft").get<double>(), 0.0);
    EXPECT_GT(s.at("dml_hard").get<double>(), 0.0);
    EXPECT_GT(s.at("ce").get<double>(), 0.0);
  }
}

TEST_F(DistillTest, OnlineTeacherSeesTheSameSoftLabelsAsTheCache) {
  // At step 1 the student and the batch are the same; the cache stores half-precision logits
  // of the un-augmented slice, the online teacher sees the augmented one, so the soft terms
  // differ only by resampling and rounding.
  TrainConfig online = distill("online");
  online.teacher_mode = kdseg::student::TeacherMode::kOnline;
  online.cache.clear();
  online.online_teacher = kdseg::teacher::load_model(online.teacher);
  online.max_steps = 1;
  kdseg::student::train(online, *comm);
  TrainConfig cached = distill("cached1");
  cached.max_steps = 1;
  kdseg::student::train(cached, *comm);
  const auto a = step_lines(dir->file("online/metrics.jsonl")).at(0),
             b = step_lines(dir->file("cached1/metrics.jsonl")).at(0);
  EXPECT_DOUBLE_EQ(a.at("ce").get<double>(), b.at("ce").get<double>());
  EXPECT_NEAR(a.at("dml_soft").get<double>(), b.at("dml_soft").get<double>(), 0.05 * b.at("dml_soft").get<double>());
  EXPECT_GT(a.at("teacher_s").get<double>(), 0.0);
}

TEST_F(DistillTest, LocalAndGlobalDmlAgreeOnOneRank) {
  TrainConfig local = distill("local");
  local.dml_reduction = kdseg::student::DmlReduction::kLocal;
  kdseg::student::train(local, *comm);
  kdseg::student::train(distill("global"), *comm);
  const auto a = step_lines(dir->file("local/metrics.jsonl")), b = step_lines(dir->file("global/metrics.jsonl"));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_DOUBLE_EQ(a[i].at("loss").get<double>(), b[i].at("loss").get<double>());
}

TEST_F(DistillTest, ResumeIsExact) {
  kdseg::student::train(distill("straight"), *comm);
  TrainConfig first = distill("resumed");
  first.stop_after = 2;
  kdseg::student::train(first, *comm);
  TrainConfig second = distill("resumed");
  second.resume = true;
  kdseg::student::train(second, *comm);
  const auto a = step_lines(dir->file("straight/metrics.jsonl")), b = step_lines(dir->file("resumed/metrics.jsonl"));
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(a[i].at("loss").get<double>(), b[i].at("loss").get<double>()) << "step " << i + 1;
  // A resumed run must keep its soft-label source.
  TrainConfig other = distill("resumed");
  other.resume = true;
  other.temperature = 2.0;
  EXPECT_NE(error_of(other).find("was written with temperature = 1.0"), std::string::npos) << error_of(other);
}

TEST_F(DistillTest, CacheOfAnotherStoreIsRefusedBeforeTraining) {
  kdseg::test::write_small_dataset(dir->file("raw2"), 4, 32, 10, kdseg::data::Layout::kLits, /*seed=*/7);
  kdseg::data::PrepareOptions p;
  p.input = dir->file("raw2");
  p.output = dir->file("other.h5");
  p.size = 0;
  p.folds = 2;
  p.slices = kdseg::data::SliceSelection::kOrgan;
  kdseg::data::prepare_store(p);
  TrainConfig c = distill("wrong-store");
  c.data = dir->file("other.h5");
  const std::string e = error_of(c);
  EXPECT_NE(e.find("does not match the files given"), std::string::npos) << e;
  EXPECT_NE(e.find("prepared store: the cache was made from"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir->file("wrong-store/last.pt")));
  // And another teacher file.
  c = distill("wrong-teacher");
  fs::copy_file(c.teacher, dir->file("other-teacher.pt"));
  std::ofstream(dir->file("other-teacher.pt"), std::ios::app) << "x";
  c.teacher = dir->file("other-teacher.pt");
  EXPECT_NE(error_of(c).find("teacher: the cache was made by"), std::string::npos) << error_of(c);
}

TEST_F(DistillTest, MissingSlicesAreNamed) {
  // A cache of fold 1 only: training on fold 1 (validating on 0) needs fold 1's slices, but
  // validating on fold 1 needs fold 0's for training.
  kdseg::teacher::PrecomputeOptions o;
  o.teachers = {dir->file("teacher/last.pt")};
  o.data = dir->file("p.h5");
  o.output = dir->file("cache-fold1");
  o.folds = {1};
  kdseg::teacher::precompute(o, *comm);
  TrainConfig c = distill("missing");
  c.cache = o.output;
  c.fold = 0;
  EXPECT_NO_THROW(kdseg::student::train(c, *comm));
  c.fold = 1;
  c.output = dir->file("missing2");
  const std::string e = error_of(c);
  EXPECT_NE(e.find("no soft labels for"), std::string::npos) << e;
  EXPECT_NE(
      e.find("no soft labels for 18 of the 18 training slices (validation fold 1): store rows 9 (volume-1 slice 1)"),
      std::string::npos)
      << e;
}

TEST_F(DistillTest, CacheWithAnotherClassCountIsRefused) {
  kdseg::teacher::PrecomputeOptions o;
  TrainConfig t = base("teacher3");
  t.task = kdseg::data::parse_task("organ-tumor");
  t.max_steps = 1;
  kdseg::student::train(t, *comm);
  o.teachers = {dir->file("teacher3/last.pt")};
  o.data = dir->file("p.h5");
  o.output = dir->file("cache3");
  o.task = kdseg::data::parse_task("organ-tumor");
  kdseg::teacher::precompute(o, *comm);
  TrainConfig c = distill("three");
  c.cache = o.output;
  c.teacher = o.teachers[0];
  const std::string e = error_of(c);
  EXPECT_NE(e.find("the cache holds 3 classes but task 'tumor' has 2"), std::string::npos) << e;
  // The pass itself refuses a teacher whose classes differ from its --task.
  o.task = kdseg::data::parse_task("tumor");
  o.output = dir->file("cache3b");
  try {
    kdseg::teacher::precompute(o, *comm);
    FAIL();
  } catch (const kdseg::Error& err) {
    EXPECT_NE(std::string(err.what()).find("the teacher predicts 3 classes but task 'tumor' has 2"), std::string::npos);
  }
}

}  // namespace
