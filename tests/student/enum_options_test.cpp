// Every enumerated option of every library has one table (core/enum_names.h): each name parses
// to its value and back, other spellings parse to a value whose name differs from them, and an
// unknown name lists every name in the one wording. The records keep their strings.
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "core/device.h"
#include "core/enum_names.h"
#include "core/error.h"
#include "core/log.h"
#include "core/models/architecture.h"
#include "data/layout.h"
#include "data/prepared_store.h"
#include "data/raters.h"
#include "data/soft_label_cache.h"
#include "data/task.h"
#include "dist/communicator.h"
#include "student/train_config.h"

namespace {
using kdseg::EnumName;
using kdseg::EnumTag;

template <typename E>
class EveryEnum : public ::testing::Test {};

using AllEnums = ::testing::Types<c10::DeviceType, kdseg::Precision, kdseg::log::Level, kdseg::models::Encoder,
                                  kdseg::dist::Backend, kdseg::data::Layout, kdseg::data::SliceSelection,
                                  kdseg::data::RaterSearch, kdseg::data::CacheFormat, kdseg::data::TaskKind,
                                  kdseg::student::LabelKind, kdseg::student::LossKind, kdseg::student::TeacherMode,
                                  kdseg::student::DmlReduction, kdseg::student::ChannelsLast>;
TYPED_TEST_SUITE(EveryEnum, AllEnums);

TYPED_TEST(EveryEnum, NamesRoundTripAndUnknownNamesListThemAll) {
  using E = TypeParam;
  std::set<std::string> spellings;
  std::string names;  // every name, as the error lists them
  for (const EnumName<E>& entry : enum_names(EnumTag<E>{})) {
    EXPECT_TRUE(spellings.insert(entry.name).second) << "'" << entry.name << "' is in the table twice";
    EXPECT_EQ(kdseg::parse_enum<E>("--option", entry.name), entry.value) << entry.name;
    if (entry.help == kdseg::kAlias) {
      EXPECT_STRNE(kdseg::enum_name(entry.value), entry.name) << "another spelling is never written";
      continue;
    }
    EXPECT_STREQ(kdseg::enum_name(entry.value), entry.name) << "a value has one name";
    names += (names.empty() ? "" : ", ") + std::string(entry.name);
  }
  EXPECT_FALSE(names.empty());
  try {
    kdseg::parse_enum<E>("--option", "no-such-name");
    FAIL() << "an unknown name was accepted";
  } catch (const kdseg::Error& e) {
    EXPECT_EQ(e.message(), "--option: 'no-such-name' is not one of " + names);
  }
}

TEST(EnumOptions, TheWordingNamesTheOptionAndEveryChoice) {
  try {
    kdseg::parse_enum<kdseg::student::LabelKind>("--labels", "avg");
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_EQ(e.message(), "--labels: 'avg' is not one of hard, ls, majority, random, mean, weighted");
  }
  for (const char* on : {"true", "1", "on", "yes"}) {
    EXPECT_EQ(kdseg::parse_enum<kdseg::student::ChannelsLast>("--channels-last", on), kdseg::student::ChannelsLast::kOn)
        << on;
  }
  for (const char* off : {"false", "0", "off", "no"}) {
    EXPECT_EQ(kdseg::parse_enum<kdseg::student::ChannelsLast>("--channels-last", off),
              kdseg::student::ChannelsLast::kOff)
        << off;
  }
  EXPECT_EQ(kdseg::parse_enum<kdseg::data::Layout>("--layout", "kits21"), kdseg::data::Layout::kKits23);
  EXPECT_EQ(kdseg::parse_enum<kdseg::log::Level>("--log-level", "warning"), kdseg::log::Level::kWarn);
}

TEST(EnumOptions, TasksParseAndKeepTheirNames) {
  namespace D = kdseg::data;
  for (const char* name : {"tumor", "organ-tumor", "map:0:0,1:1,2:ignore"}) {
    EXPECT_EQ(D::task_name(D::parse_task(name)), name);
  }
  EXPECT_EQ(D::parse_task("tumour"), (D::TaskSpec{D::TaskKind::kTumour, ""}));
  EXPECT_EQ(D::parse_task("organ-tumour"), (D::TaskSpec{D::TaskKind::kOrganTumour, ""}));
  EXPECT_EQ(D::parse_task("map:2:1"), (D::TaskSpec{D::TaskKind::kMap, "2:1"}));
  const auto error_of = [](const std::string& text) {
    try {
      D::parse_task(text);
    } catch (const kdseg::Error& e) {
      return e.message();
    }
    return std::string("accepted");
  };
  EXPECT_EQ(error_of("vessels"), "--task: 'vessels' is not one of tumor, organ-tumor, map");
  EXPECT_NE(error_of("map").find("give its value:class pairs"), std::string::npos) << error_of("map");
}

// config.json and every checkpoint keep the strings they had when arch and task were strings.
TEST(EnumOptions, TheRunRecordWritesTheSameStrings) {
  kdseg::student::TrainConfig c;
  EXPECT_EQ(kdseg::run_config_json(c).at("arch"), "unet-resnet18d");
  EXPECT_EQ(kdseg::run_config_json(c).at("task"), "tumor");
  c.arch = kdseg::models::Encoder::kResNet50d;
  c.task = kdseg::data::parse_task("map:0:0,1:1,2:1,3:ignore");
  const nlohmann::json j = kdseg::run_config_json(c);
  EXPECT_EQ(j.at("arch"), "unet-resnet50d");
  EXPECT_EQ(j.at("task"), "map:0:0,1:1,2:1,3:ignore");
  EXPECT_EQ(j.at("labels"), "hard");
  EXPECT_EQ(j.at("loss"), "ce+dml");
  EXPECT_EQ(j.at("teacher_mode"), "none");
  EXPECT_EQ(j.at("device"), "cpu");
  EXPECT_EQ(j.at("channels_last"), "auto");
}

}  // namespace
