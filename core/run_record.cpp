#include "core/run_record.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <limits>
#include <type_traits>

#include "core/enum_names.h"
#include "core/error.h"

namespace kdseg {

bool is_rater_kind(LabelKind kind) { return kind != LabelKind::kHard && kind != LabelKind::kSmoothed; }
bool is_soft_rater_kind(LabelKind kind) { return kind == LabelKind::kMean || kind == LabelKind::kWeighted; }

namespace {
using nlohmann::json;

// How a value of each member type is written and read back. A value of the wrong JSON type
// is an error naming the record and the key.
[[noreturn]] void wrong_type(const json& value, const char* key, const std::string& source, const char* expected) {
  KDSEG_THROW(source, ": '", key, "' is ", value.dump(), ", expected ", expected);
}

// Enumerations by their name in the type's table (core/enum_names.h); the layout is "auto"
// before it is resolved and then true or false.
template <typename Enum>
struct Codec {
  static_assert(std::is_enum_v<Enum>, "a field of a type without a codec");
  static json write(Enum v) { return enum_name(v); }
  static Enum read(const json& j, const char* key, const std::string& source) {
    if (!j.is_string()) wrong_type(j, key, source, "a name");
    return parse_enum<Enum>(source + ": '" + key + "'", j.get<std::string>());
  }
};

template <>
struct Codec<std::string> {
  static json write(const std::string& v) { return v; }
  static std::string read(const json& j, const char* key, const std::string& source) {
    if (!j.is_string()) wrong_type(j, key, source, "a string");
    return j.get<std::string>();
  }
};

template <>
struct Codec<double> {
  static json write(double v) { return v; }
  static double read(const json& j, const char* key, const std::string& source) {
    if (!j.is_number()) wrong_type(j, key, source, "a number");
    return j.get<double>();
  }
};

template <>
struct Codec<bool> {
  static json write(bool v) { return v; }
  static bool read(const json& j, const char* key, const std::string& source) {
    if (!j.is_boolean()) wrong_type(j, key, source, "true or false");
    return j.get<bool>();
  }
};

template <typename Int>
struct IntegerCodec {
  static json write(Int v) { return v; }
  static Int read(const json& j, const char* key, const std::string& source) {
    if (!j.is_number_integer()) wrong_type(j, key, source, "an integer");
    if (std::is_unsigned_v<Int> && !j.is_number_unsigned()) wrong_type(j, key, source, "an integer >= 0");
    return j.get<Int>();
  }
};
template <>
struct Codec<int> : IntegerCodec<int> {};
template <>
struct Codec<int64_t> : IntegerCodec<int64_t> {};
template <>
struct Codec<uint64_t> : IntegerCodec<uint64_t> {};

template <>
struct Codec<std::vector<int>> {
  static json write(const std::vector<int>& v) { return v; }
  static std::vector<int> read(const json& j, const char* key, const std::string& source) {
    if (!j.is_array()) wrong_type(j, key, source, "a list of integers");
    std::vector<int> out;
    for (const json& item : j) out.push_back(Codec<int>::read(item, key, source));
    return out;
  }
};

template <>
struct Codec<ChannelsLast> {
  static json write(ChannelsLast v) { return v == ChannelsLast::kAuto ? json("auto") : json(v == ChannelsLast::kOn); }
  static ChannelsLast read(const json& j, const char* key, const std::string& source) {
    if (j.is_boolean()) return j.get<bool>() ? ChannelsLast::kOn : ChannelsLast::kOff;
    if (j == "auto") return ChannelsLast::kAuto;
    wrong_type(j, key, source, "\"auto\", true or false");
  }
};

// "tumor", "organ-tumor" or "map:<pairs>"; a record of another spelling ("tumour") reads as the
// same task.
template <>
struct Codec<TaskSpec> {
  static json write(const TaskSpec& v) { return task_name(v); }
  static TaskSpec read(const json& j, const char* key, const std::string& source) {
    if (!j.is_string()) wrong_type(j, key, source, "a task name");
    try {
      return parse_task(j.get<std::string>());
    } catch (const Error& e) {
      KDSEG_THROW(source, ": '", key, "': ", e.message());
    }
  }
};

struct Field {
  RunField info;
  std::function<json(const RunConfig&)> write;
  std::function<void(const json&, RunConfig&, const std::string&)> read;
};

template <typename T>
Field field(const char* key, T RunConfig::*member, OnResume on_resume, const char* why) {
  static const RunConfig probe;
  const auto offset =
      static_cast<size_t>(reinterpret_cast<const char*>(&(probe.*member)) - reinterpret_cast<const char*>(&probe));
  return {{key, on_resume, why, offset, sizeof(T)},
          [member](const RunConfig& c) { return Codec<T>::write(c.*member); },
          [member, key](const json& j, RunConfig& c, const std::string& source) {
            c.*member = Codec<T>::read(j, key, source);
          }};
}

// A field that shapes the run: a resume with another value is refused.
template <typename T>
Field same(const char* key, T RunConfig::*member) {
  return field(key, member, OnResume::kSame, "");
}

// A field that may change on resume, and why.
template <typename T>
Field may_change(const char* key, T RunConfig::*member, const char* why) {
  return field(key, member, OnResume::kMayChange, why);
}

// The record's schema. Anything that changes what is learned (the data, the network, the
// labels, the objective, the optimiser and its learning-rate schedule, which --epochs and
// --max-steps set, the seed) must stay the same; what only decides where, how often and how
// fast the same steps run may change.
const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      may_change("data", &RunConfig::data,
                 "where the store is: data_hash says which store it is, so a store moved or copied, or a run "
                 "resumed from another working folder, trains on the same data"),
      same("data_hash", &RunConfig::data_hash),
      may_change("output", &RunConfig::output, "the folder itself: a moved folder holds the same run"),
      same("fold", &RunConfig::fold),
      same("exclude_folds", &RunConfig::exclude_folds),
      same("arch", &RunConfig::arch),
      same("width", &RunConfig::width),
      same("dropout", &RunConfig::dropout),
      same("task", &RunConfig::task),
      same("labels", &RunConfig::labels),
      same("ls_epsilon", &RunConfig::ls_epsilon),
      same("ls_kernel", &RunConfig::ls_kernel),
      same("loss", &RunConfig::loss),
      same("epochs", &RunConfig::epochs),
      same("max_steps", &RunConfig::max_steps),
      same("batch_size", &RunConfig::batch_size),
      same("accumulate", &RunConfig::accumulate),
      same("crop", &RunConfig::crop),
      same("lr", &RunConfig::lr),
      same("weight_decay", &RunConfig::weight_decay),
      same("warmup", &RunConfig::warmup),
      same("clip_grad", &RunConfig::clip_grad),
      same("seed", &RunConfig::seed),
      may_change("workers", &RunConfig::workers,
                 "loader threads: each sample's augmentation is seeded by the sample, so any number makes the "
                 "same batches"),
      may_change("log_every", &RunConfig::log_every, "how often steps are logged"),
      may_change("validate_every", &RunConfig::validate_every, "how often the held-out fold is measured"),
      may_change("checkpoint_every", &RunConfig::checkpoint_every, "how often last.pt is written"),
      may_change("stop_after", &RunConfig::stop_after, "where this invocation stops; the run continues later"),
      may_change("skip_nonfinite", &RunConfig::skip_nonfinite,
                 "only decides what happens to a step whose loss is not finite (skipped or an error)"),
      may_change("deterministic", &RunConfig::deterministic,
                 "whether kernels repeat bit for bit; the same arithmetic, rounded alike or not"),
      may_change("device", &RunConfig::device,
                 "checkpoints load on any device, so a GPU run may continue on a CPU and back"),
      may_change("precision", &RunConfig::precision, "follows the device (auto: bf16 autocast on CUDA only)"),
      may_change("channels_last", &RunConfig::channels_last,
                 "a memory layout, chosen per device; the weights take it on load"),
      same("teacher_mode", &RunConfig::teacher_mode),
      same("cache", &RunConfig::cache),
      same("teacher", &RunConfig::teacher),
      same("temperature", &RunConfig::temperature),
      same("dml_reduction", &RunConfig::dml_reduction),
  };
  return table;
}

constexpr const char* kVersionKey = "version";

}  // namespace

const std::vector<RunField>& run_fields() {
  static const std::vector<RunField> infos = [] {
    std::vector<RunField> out;
    for (const Field& f : fields()) out.push_back(f.info);
    return out;
  }();
  return infos;
}

json run_config_json(const RunConfig& config) {
  json record = {{kVersionKey, kRunRecordVersion}};
  for (const Field& f : fields()) record[f.info.key] = f.write(config);
  return record;
}

RunConfig run_config_from_json(const json& record, const std::string& source) {
  KDSEG_CHECK(record.is_object(), source, ": is not a kdseg run record (a JSON object)");
  const int version = record.contains(kVersionKey) ? Codec<int>::read(record.at(kVersionKey), kVersionKey, source) : 1;
  KDSEG_CHECK(version >= 1 && version <= kRunRecordVersion, source, ": run record version ", version,
              " is not one this kdseg reads (1-", kRunRecordVersion, "); use a later kdseg");
  RunConfig config;
  for (const Field& f : fields()) {
    if (record.contains(f.info.key)) f.read(record.at(f.info.key), config, source);
  }
  return config;
}

RunConfig parse_run_config(const std::string& text, const std::string& source) {
  const json record = json::parse(text, nullptr, /*allow_exceptions=*/false);
  KDSEG_CHECK(!record.is_discarded(), source, ": the run record is not valid JSON");
  return run_config_from_json(record, source);
}

std::vector<RunDifference> run_differences(const RunConfig& was, const RunConfig& now) {
  std::vector<RunDifference> out;
  for (const Field& f : fields()) {
    const json a = f.write(was), b = f.write(now);
    if (a != b) out.push_back({f.info.key, a.dump(), b.dump(), f.info.on_resume});
  }
  return out;
}

// ---- metrics.jsonl -----------------------------------------------------------------------------

namespace {
constexpr const char* kValidationKey = "validation";

template <typename T>
void read_into(const json& line, const char* key, T& out, const std::string& source) {
  if (line.contains(key)) out = Codec<T>::read(line.at(key), key, source);
}

// A number that is not finite was written as null: it reads back as NaN.
void read_number(const json& line, const char* key, double& out, const std::string& source) {
  if (line.contains(key) && line.at(key).is_null()) out = std::numeric_limits<double>::quiet_NaN();
  else read_into(line, key, out, source);
}

StepLine read_step_line(const json& j, const std::string& where) {
  StepLine s;
  read_into(j, "step", s.step, where);
  read_into(j, "epoch", s.epoch, where);
  for (auto [key, value] : {std::pair{"loss", &s.loss},
                            {"ce", &s.ce},
                            {"kl", &s.kl},
                            {"dml_hard", &s.dml_hard},
                            {"dml_soft", &s.dml_soft},
                            {"lr", &s.lr},
                            {"images_per_s", &s.images_per_s},
                            {"step_s", &s.step_s},
                            {"data_wait_s", &s.data_wait_s},
                            {"teacher_s", &s.teacher_s}}) {
    read_number(j, key, *value, where);
  }
  if (j.contains("grad_norm")) read_number(j, "grad_norm", s.grad_norm.emplace(), where);
  return s;
}

ValidationLine read_validation_line(const json& j, const std::string& where) {
  KDSEG_CHECK(j.is_object(), where, ": '", kValidationKey, "' is ", j.dump(), ", expected an object");
  ValidationLine v;
  read_into(j, "step", v.step, where);
  read_into(j, "epoch", v.epoch, where);
  read_number(j, "mean_dice", v.mean_dice, where);
  read_number(j, "mean_ece", v.mean_ece, where);
  if (j.contains("cases")) {
    KDSEG_CHECK(j.at("cases").is_object(), where, ": 'cases' is not an object");
    for (const auto& [id, c] : j.at("cases").items()) {
      ValidationLine::Case one{id};
      read_number(c, "dice", one.dice, where);
      read_number(c, "ece", one.ece, where);
      v.cases.push_back(one);
    }
  }
  return v;
}
}  // namespace

json metrics_line_json(const StepLine& s) {
  json line = {{"step", s.step},
               {"epoch", s.epoch},
               {"loss", s.loss},
               {"ce", s.ce},
               {"kl", s.kl},
               {"dml_hard", s.dml_hard},
               {"dml_soft", s.dml_soft},
               {"lr", s.lr},
               {"images_per_s", s.images_per_s},
               {"step_s", s.step_s},
               {"data_wait_s", s.data_wait_s},
               {"teacher_s", s.teacher_s}};
  if (s.grad_norm) line["grad_norm"] = *s.grad_norm;
  return line;
}

json metrics_line_json(const ValidationLine& v) {
  json cases = json::object();
  for (const auto& c : v.cases) cases[c.id] = {{"dice", c.dice}, {"ece", c.ece}};
  return {
      {kValidationKey,
       {{"step", v.step}, {"epoch", v.epoch}, {"mean_dice", v.mean_dice}, {"mean_ece", v.mean_ece}, {"cases", cases}}}};
}

std::optional<int64_t> MetricsLine::at_step() const {
  if (step) return step->step;
  if (validation) return validation->step;
  return std::nullopt;
}

MetricsLine parse_metrics_line(const std::string& text, const std::string& source, int64_t line_number) {
  MetricsLine out;
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return out;  // a torn or empty line
  const std::string where = source + ":" + std::to_string(line_number);
  if (j.contains(kValidationKey)) {
    out.validation = read_validation_line(j.at(kValidationKey), where);
    KDSEG_CHECK(j.at(kValidationKey).contains("step"), where, ": a validation record without its 'step'");
  } else if (j.contains("step")) {
    out.step = read_step_line(j, where);
  }
  return out;
}

}  // namespace kdseg
