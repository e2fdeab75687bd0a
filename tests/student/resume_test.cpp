// A resume continues the same run: every setting that shapes it, changed alone, is refused with
// a message naming it; the settings the record allows to change are accepted.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "core/adamw.h"
#include "core/frozen_model.h"
#include "core/models/checkpoint.h"
#include "core/run_record.h"
#include "student/trainer.h"
#include "teacher/model_loader.h"
#include "tests/student/trainer_fixture.h"

namespace {
namespace fs = std::filesystem;
using kdseg::student::TrainConfig;
using kdseg::test::TrainerTest;

class ResumeTest : public TrainerTest {
 protected:
  // A run stopped after 2 of its 6 steps, to resume.
  TrainConfig stopped_run() {
    TrainConfig c = config("run");
    c.stop_after = 2;
    EXPECT_EQ(kdseg::student::train(c, *comm).steps, 2);
    c.stop_after = 0;
    c.resume = true;
    return c;
  }
};

struct Paths {
  std::string checkpoint, cache;  // the stopped run's last.pt, a cache folder
  std::string other_store;        // a store of the same cases with other slices: another content hash
};

// One change per shaping field of the record, each a setting that training accepts on its own.
// The test fails when the record gains a shaping field that is missing here.
std::map<std::string, std::function<void(TrainConfig&, const Paths&)>> shaping_changes() {
  return {
      {"data_hash", [](TrainConfig& c, const Paths& t) { c.data = t.other_store; }},
      {"fold", [](TrainConfig& c, const Paths&) { c.fold = 1; }},
      {"exclude_folds", [](TrainConfig& c, const Paths&) { c.exclude_folds = {0}; }},
      {"arch", [](TrainConfig& c, const Paths&) { c.arch = kdseg::models::Encoder::kResNet34d; }},
      {"width", [](TrainConfig& c, const Paths&) { c.width = 0.25; }},
      {"dropout", [](TrainConfig& c, const Paths&) { c.dropout = 0.2; }},
      {"task", [](TrainConfig& c, const Paths&) { c.task = kdseg::parse_task("organ-tumor"); }},
      {"labels", [](TrainConfig& c, const Paths&) { c.labels = kdseg::LabelKind::kSmoothed; }},
      {"ls_epsilon", [](TrainConfig& c, const Paths&) { c.ls_epsilon = 0.25; }},
      {"ls_kernel", [](TrainConfig& c, const Paths&) { c.ls_kernel = 5; }},
      {"loss", [](TrainConfig& c, const Paths&) { c.loss = kdseg::LossKind::kDml; }},
      {"epochs", [](TrainConfig& c, const Paths&) { c.epochs = 3, c.max_steps = 0; }},
      {"max_steps", [](TrainConfig& c, const Paths&) { c.max_steps = 8; }},
      {"batch_size", [](TrainConfig& c, const Paths&) { c.batch_size = 2; }},
      {"accumulate", [](TrainConfig& c, const Paths&) { c.accumulate = 2; }},
      {"crop", [](TrainConfig& c, const Paths&) { c.crop = 64; }},
      {"lr", [](TrainConfig& c, const Paths&) { c.lr = 2e-3; }},
      {"weight_decay", [](TrainConfig& c, const Paths&) { c.weight_decay = 0.05; }},
      {"warmup", [](TrainConfig& c, const Paths&) { c.warmup = 0.2; }},
      {"clip_grad", [](TrainConfig& c, const Paths&) { c.clip_grad = 1.0; }},
      {"seed", [](TrainConfig& c, const Paths&) { c.seed = 7; }},
      {"teacher_mode",
       [](TrainConfig& c, const Paths& t) {
         c.teacher_mode = kdseg::TeacherMode::kOnline;
         c.online_teacher = kdseg::teacher::load_model(t.checkpoint);
       }},
      {"cache", [](TrainConfig& c, const Paths& t) { c.cache = t.cache; }},
      {"teacher", [](TrainConfig& c, const Paths& t) { c.teacher = t.checkpoint; }},
      {"temperature", [](TrainConfig& c, const Paths&) { c.temperature = 2.0; }},
      {"dml_reduction", [](TrainConfig& c, const Paths&) { c.dml_reduction = kdseg::DmlReduction::kLocal; }},
  };
}

TEST_F(ResumeTest, EveryShapingFieldChangedAloneIsRefused) {
  const TrainConfig run = stopped_run();
  kdseg::data::PrepareOptions p;
  p.input = dir.file("raw");
  p.output = dir.file("all.h5");
  p.size = 0;
  p.folds = 2;
  p.slices = kdseg::data::SliceSelection::kAll;
  kdseg::data::prepare_store(p);
  const auto changes = shaping_changes();
  size_t shaping = 0;
  for (const auto& field : kdseg::run_fields()) {
    if (field.on_resume != kdseg::OnResume::kSame) continue;
    ++shaping;
    const auto change = changes.find(field.key);
    if (change == changes.end()) {
      ADD_FAILURE() << "no change of '" << field.key << "' in this test: add one to shaping_changes()";
      continue;
    }
    TrainConfig c = run;
    change->second(c, Paths{dir.file("run/last.pt"), dir.file("cache"), dir.file("all.h5")});
    expect_train_error(c, std::string("was written with ") + field.key + " = ");
  }
  EXPECT_EQ(shaping, changes.size()) << "shaping_changes() names a field the record does not compare";
  // Nothing was changed by the refused resumes: the run still continues.
  EXPECT_EQ(kdseg::student::train(run, *comm).steps, 6);
}

TEST_F(ResumeTest, SeveralChangesAreNamedTogether) {
  TrainConfig c = stopped_run();
  c.lr = 5e-4;
  c.crop = 64;
  expect_train_error(c, "was written with crop = 32 (this run has 64), lr = 0.001 (this run has 0.0005)");
}

// What only decides where, how often and how fast the same steps run may change, and the
// resumed run records the new values.
TEST_F(ResumeTest, TheAllowedChangesResumeAndAreRecorded) {
  TrainConfig c = stopped_run();
  c.workers = 0;
  c.log_every = 2;
  c.validate_every = 2;
  c.checkpoint_every = 1;
  c.skip_nonfinite = true;
  c.channels_last = c.channels_last == kdseg::ChannelsLast::kOn ? kdseg::ChannelsLast::kOff : kdseg::ChannelsLast::kOn;
  c.stop_after = 1;
  EXPECT_EQ(kdseg::student::train(c, *comm).steps, 3);
  const auto saved = kdseg::models::Checkpoint(dir.file("run/last.pt"), c10::kCPU).run_config();
  EXPECT_EQ(saved.workers, 0);
  EXPECT_EQ(saved.checkpoint_every, 1);
  EXPECT_TRUE(saved.skip_nonfinite);
  // A moved run folder continues too, and so does a run on its store moved (the record knows it
  // by its content hash), which the record then names.
  fs::rename(dir.file("run"), dir.file("moved"));
  c.output = dir.file("moved");
  fs::rename(c.data, dir.file("moved.h5"));
  c.data = dir.file("moved.h5");
  c.stop_after = 0;
  EXPECT_EQ(kdseg::student::train(c, *comm).steps, 6);
  EXPECT_EQ(kdseg::models::Checkpoint(dir.file("moved/last.pt"), c10::kCPU).run_config().data, dir.file("moved.h5"));
}

// A checkpoint written before the record had its version (version 1: no "version", none of the
// keys added since) resumes when its settings match, and is refused when they do not.
TEST_F(ResumeTest, FirstVersionRecordsResumeWhenTheirSettingsMatch) {
  TrainConfig c = stopped_run();
  const std::string last = dir.file("run/last.pt");
  {
    const kdseg::models::Checkpoint checkpoint(last, c10::kCPU);
    auto model = kdseg::models::UNet(checkpoint.unet_options());
    checkpoint.load_weights(model);
    kdseg::MultiTensorAdamW optimizer(kdseg::unet_param_groups(*model, c.lr, c.weight_decay),
                                      torch::optim::AdamWOptions(c.lr));
    checkpoint.load_optimizer(optimizer);
    kdseg::models::CheckpointInfo info = checkpoint.info();
    nlohmann::json old = nlohmann::json::parse(info.config);
    for (const char* key :
         {"version", "log_every", "validate_every", "checkpoint_every", "stop_after", "skip_nonfinite", "data_hash"}) {
      ASSERT_EQ(old.erase(key), 1u) << key;
    }
    info.config = old.dump();
    kdseg::models::save_checkpoint(last, model, optimizer, info);
  }
  auto other = c;
  other.seed = 3;
  expect_train_error(other, "was written with seed = 0 (this run has 3)");
  EXPECT_EQ(kdseg::student::train(c, *comm).steps, 6);
}

}  // namespace
