// The run record (core/run_record.h): one schema for config.json, checkpoints and metrics.jsonl,
// whose table covers every member of RunConfig and says which of them a resume may change.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <type_traits>
#include <utility>

#include "core/error.h"
#include "core/run_record.h"

namespace {
using nlohmann::json;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kdseg::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// RunConfig's member count, as aggregate initialisation sees it: brace-initialise it from ever
// more values that convert to anything, until one more no longer compiles.
struct AnyValue {
  template <typename T>
  operator T() const;  // declared only: used in unevaluated contexts
};
template <typename T, typename... Values>
constexpr auto can_brace_initialise(int) -> decltype(T{std::declval<Values>()...}, true) {
  return true;
}
template <typename T, typename... Values>
constexpr bool can_brace_initialise(...) {
  return false;
}
template <typename T, typename... Values>
constexpr size_t member_count() {
  if constexpr (can_brace_initialise<T, Values..., AnyValue>(0)) {
    return member_count<T, Values..., AnyValue>();
  } else {
    return sizeof...(Values);
  }
}

// A member of RunConfig that the table leaves out would be missing from config.json and from
// the resume check: every member has its field.
TEST(RunRecord, TheTableCoversEveryMemberOfRunConfig) {
  static_assert(std::is_aggregate_v<kdseg::RunConfig>, "the member count below needs an aggregate");
  EXPECT_EQ(member_count<kdseg::RunConfig>(), kdseg::run_fields().size())
      << "RunConfig has a member without a field in the table of core/run_record.cpp: add it there, saying "
         "whether a resume may change it";
  std::set<size_t> offsets;
  for (const auto& f : kdseg::run_fields()) {
    EXPECT_TRUE(offsets.insert(f.offset).second) << f.key << " points at a member another field has";
    EXPECT_LE(f.offset + f.size, sizeof(kdseg::RunConfig)) << f.key;
  }
}

// What may change on resume is a short, reviewed list, each with its reason; everything else
// shapes the run.
TEST(RunRecord, OnlyTheAllowListMayChangeOnResume) {
  std::set<std::string> may_change, keys;
  for (const auto& f : kdseg::run_fields()) {
    EXPECT_TRUE(keys.insert(f.key).second) << f.key << " twice";
    if (f.on_resume == kdseg::OnResume::kMayChange) {
      may_change.insert(f.key);
      EXPECT_GT(std::string(f.why).size(), 10u) << f.key << " may change but says not why";
    } else {
      EXPECT_STREQ(f.why, "") << f.key;
    }
  }
  const std::set<std::string> expected = {"data",           "output",           "workers",    "log_every",
                                          "validate_every", "checkpoint_every", "stop_after", "skip_nonfinite",
                                          "deterministic",  "device",           "precision",  "channels_last"};
  EXPECT_EQ(may_change, expected);
  // Everything that moves the learning-rate schedule or what is learned is compared.
  for (const char* key :
       {"data_hash", "epochs", "max_steps", "warmup", "lr", "loss", "crop", "labels", "seed", "batch_size"}) {
    EXPECT_TRUE(keys.count(key) && !may_change.count(key)) << key;
  }
}

kdseg::RunConfig unusual_config() {
  kdseg::RunConfig c;
  c.data = "/data/p.h5";
  c.data_hash = "87b2acf5eb51b7ef";
  c.output = "out";
  c.fold = 3;
  c.exclude_folds = {1, 4};
  c.arch = kdseg::models::Encoder::kResNet50d;
  c.task = kdseg::parse_task("map:0:0,1:1,2:ignore");
  c.width = 0.25;
  c.labels = kdseg::LabelKind::kWeighted;
  c.loss = kdseg::LossKind::kDml;
  c.max_steps = 1234;
  c.seed = 18446744073709551615ull;
  c.lr = 6e-5;
  c.stop_after = 7;
  c.skip_nonfinite = true;
  c.device = c10::kCUDA;
  c.precision = kdseg::Precision::kBf16;
  c.channels_last = kdseg::ChannelsLast::kOff;
  c.teacher_mode = kdseg::TeacherMode::kOnline;
  c.dml_reduction = kdseg::DmlReduction::kLocal;
  c.temperature = 2.5;
  return c;
}

TEST(RunRecord, RoundTripsEveryFieldWithItsVersion) {
  const kdseg::RunConfig c = unusual_config();
  const json record = kdseg::run_config_json(c);
  EXPECT_EQ(record.at("version"), kdseg::kRunRecordVersion);
  EXPECT_EQ(record.size(), kdseg::run_fields().size() + 1);
  EXPECT_EQ(record.at("labels"), "weighted");
  EXPECT_EQ(record.at("channels_last"), false);
  EXPECT_EQ(record.at("device"), "cuda");
  EXPECT_EQ(record.at("arch"), "unet-resnet50d");
  EXPECT_EQ(record.at("task"), "map:0:0,1:1,2:ignore");
  const kdseg::RunConfig back = kdseg::parse_run_config(record.dump(), "config.json");
  EXPECT_EQ(kdseg::run_config_json(back), record);
  EXPECT_TRUE(kdseg::run_differences(c, back).empty());
  // And the defaults, `train`'s teacher mode "none" among them.
  const json defaults = kdseg::run_config_json(kdseg::RunConfig());
  EXPECT_EQ(defaults.at("teacher_mode"), "none");
  EXPECT_EQ(kdseg::run_config_json(kdseg::parse_run_config(defaults.dump(), "config.json")), defaults);
}

TEST(RunRecord, DifferencesNameEachFieldAndItsRule) {
  const kdseg::RunConfig was = unusual_config();
  kdseg::RunConfig now = was;
  now.lr = 1e-4;
  now.workers = 8;
  now.crop = 256;
  const auto d = kdseg::run_differences(was, now);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0].key, "crop");
  EXPECT_EQ(d[0].was, "384");
  EXPECT_EQ(d[0].now, "256");
  EXPECT_EQ(d[0].on_resume, kdseg::OnResume::kSame);
  EXPECT_EQ(d[1].key, "lr");
  EXPECT_EQ(d[2].key, "workers");
  EXPECT_EQ(d[2].on_resume, kdseg::OnResume::kMayChange);
}

// A record of the first version lacks "version" and the keys added since: they take defaults.
TEST(RunRecord, ReadsFirstVersionRecordsAndRefusesLaterOnes) {
  const auto c = kdseg::parse_run_config(
      R"({"arch": "unet-resnet34d", "width": 0.5, "task": "tumour", "channels_last": "auto"})", "old.pt");
  EXPECT_EQ(c.arch, kdseg::models::Encoder::kResNet34d);
  EXPECT_EQ(c.width, 0.5);
  EXPECT_EQ(c.log_every, kdseg::RunConfig().log_every);
  EXPECT_EQ(c.channels_last, kdseg::ChannelsLast::kAuto);
  EXPECT_EQ(c.task, kdseg::TaskSpec{}) << "another spelling of the same task";
  EXPECT_NE(
      error_of([] { kdseg::parse_run_config(R"({"version": 99})", "new.pt"); }).find("new.pt: run record version 99"),
      std::string::npos);
}

TEST(RunRecord, BadValuesNameTheFileAndTheKey) {
  EXPECT_NE(error_of([] {
              kdseg::parse_run_config(R"({"lr": "fast"})", "a/config.json");
            }).find("a/config.json: 'lr' is \"fast\", expected a number"),
            std::string::npos);
  EXPECT_NE(error_of([] { kdseg::parse_run_config(R"({"labels": "avg"})", "b.pt"); }).find("b.pt: 'labels'"),
            std::string::npos);
  EXPECT_NE(error_of([] { kdseg::parse_run_config(R"({"seed": -1})", "c.pt"); }).find("expected an integer >= 0"),
            std::string::npos);
  EXPECT_NE(error_of([] { kdseg::parse_run_config("{not json", "d.json"); }).find("d.json: the run record is not"),
            std::string::npos);
}

TEST(RunRecord, MetricsLinesRoundTripAndNameTheirLine) {
  kdseg::StepLine s;
  s.step = 12;
  s.epoch = 2;
  s.loss = 0.5;
  s.lr = 1e-3;
  s.grad_norm = 3.0;
  const auto step = kdseg::parse_metrics_line(kdseg::metrics_line_json(s).dump(), "m.jsonl", 1);
  ASSERT_TRUE(step.step.has_value());
  EXPECT_FALSE(step.validation.has_value());
  EXPECT_EQ(kdseg::metrics_line_json(*step.step), kdseg::metrics_line_json(s));
  EXPECT_EQ(step.at_step(), 12);

  kdseg::ValidationLine v{14, 3, 0.75, 0.02, {{"case_00001", 0.7, 0.01}, {"case_00002", 0.8, 0.03}}};
  const auto val = kdseg::parse_metrics_line(kdseg::metrics_line_json(v).dump(), "m.jsonl", 2);
  ASSERT_TRUE(val.validation.has_value());
  EXPECT_EQ(kdseg::metrics_line_json(*val.validation), kdseg::metrics_line_json(v));
  EXPECT_EQ(val.at_step(), 14);

  // A loss that was not finite was written as null and reads back as NaN.
  const auto nan = kdseg::parse_metrics_line(R"({"step": 3, "loss": null})", "m.jsonl", 3);
  EXPECT_TRUE(std::isnan(nan.step->loss));
  // A torn line is no record; a line of the wrong types is an error naming the file and line.
  EXPECT_FALSE(kdseg::parse_metrics_line(R"({"step": 4, "lo)", "m.jsonl", 4).at_step().has_value());
  EXPECT_NE(error_of([] {
              kdseg::parse_metrics_line(R"({"step": "x"})", "run/metrics.jsonl", 7);
            }).find("run/metrics.jsonl:7: 'step' is \"x\", expected an integer"),
            std::string::npos);
}

}  // namespace
