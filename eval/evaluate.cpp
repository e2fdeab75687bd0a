#include "eval/evaluate.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <iterator>
#include <map>
#include <optional>
#include <set>

#include "core/build_config.h"
#include "core/device.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/frozen_model.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/progress.h"
#include "data/loader.h"
#include "data/prepared_store.h"
#include "data/soft_label_cache.h"
#include "eval/case_collector.h"
#include "eval/case_figures.h"
#include "eval/report.h"
#include "eval/statistics.h"
#include "eval/training_curves.h"

namespace kdseg::eval {
namespace {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;
using nlohmann::json;
using torch::Tensor;

// The stored label value written for each class in predicted masks: the smallest value mapped to it.
std::vector<uint8_t> label_value_of_class(const data::Task& task) {
  std::vector<uint8_t> out(static_cast<size_t>(task.classes), 0);
  for (int v = 255; v >= 0; --v) {
    const int64_t k = task.class_of[static_cast<size_t>(v)];
    if (k >= 0 && k < task.classes) out[static_cast<size_t>(k)] = static_cast<uint8_t>(v);
  }
  return out;
}

json number(double v) { return std::isfinite(v) ? json(v) : json(); }

json interval(const std::vector<double>& values, const EvaluateOptions& options) {
  const Interval ci = bootstrap_ci(values, options.bootstrap, 0.95, options.seed);
  return json::array({number(ci.low), number(ci.high)});
}

std::string safe_file_name(const std::string& name) {
  std::string out;
  for (char ch : name) {
    out += std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.' ? ch : '_';
  }
  return out;
}

// The file's hash; empty for a model given in memory (tests), which has no file.
std::string file_hash_or_empty(const std::string& file) {
  try {
    return hash_file(file);
  } catch (const Error&) {
    return "";
  }
}

// The surface distances of report.json, in the order of the collector's last axis.
constexpr const char* kSurfaceMetrics[] = {"hd95", "assd", "nsd"};

// One model's numbers per case, indexed by the store's case; a case outside the fold has no slices.
struct PerCase {
  std::vector<int64_t> slices;
  std::vector<std::vector<double>> dice, slice_dice;  // [region][case]
  std::vector<double> ece, slice_ece, classwise_ece, nll, brier;
  Tensor distances;  // [case][region][kSurfaceMetrics] float64, contiguous; undefined without surface metrics
  // Against the raters' mean (SoftReferenceMetrics), for stores with raters; empty otherwise.
  std::vector<std::vector<double>> threshold_dice;  // [region][case]
  std::vector<double> soft_l1, soft_brier;

  bool has_surface() const { return distances.defined(); }
  double distance(size_t c, size_t region, size_t metric) const {
    return distances.data_ptr<double>()[(c * dice.size() + region) * std::size(kSurfaceMetrics) + metric];
  }
};

PerCase per_case_values(const SegmentationMetrics& metrics, const Tensor& distances, const SoftReferenceMetrics* soft) {
  PerCase values{metrics.slices_per_case(),
                 {},
                 {},
                 metrics.ece_per_case(),
                 metrics.slice_ece_per_case(),
                 metrics.classwise_ece_per_case(),
                 metrics.nll_per_case(),
                 metrics.brier_per_case(),
                 distances.defined() ? distances.contiguous() : Tensor(),
                 {},
                 {},
                 {}};
  for (size_t r = 0; r < metrics.regions().size(); ++r) {
    values.dice.push_back(metrics.dice_per_case(r));
    values.slice_dice.push_back(metrics.slice_dice_per_case(r));
    if (soft) values.threshold_dice.push_back(soft->threshold_dice_per_case(r));
  }
  if (soft) {
    values.soft_l1 = soft->l1_per_case();
    values.soft_brier = soft->brier_per_case();
  }
  return values;
}

// reliability of report.json: the calibration bins over every voxel of the fold.
json reliability_entry(const SegmentationMetrics& metrics, int bins) {
  const SegmentationMetrics::Reliability reliability = metrics.reliability();
  json confidence = json::array(), accuracy = json::array();
  for (size_t b = 0; b < reliability.count.size(); ++b) {
    confidence.push_back(number(reliability.confidence[b]));
    accuracy.push_back(number(reliability.accuracy[b]));
  }
  return {{"bins", bins}, {"confidence", confidence}, {"accuracy", accuracy}, {"count", reliability.count}};
}

class Evaluator {
 public:
  Evaluator(const EvaluateOptions& o, dist::Communicator& comm)
      : o_(o),
        comm_(comm),
        store_(o.data),
        layout_(parse_enum<data::Layout>(o.data + ": layout", store_.attribute("layout"))),
        task_(data::make_task(o.task, layout_)),
        regions_(data::dice_regions(task_, layout_)),
        device_(o.device) {
    KDSEG_CHECK(!o_.models.empty(), "evaluate: give at least one --model");
    KDSEG_CHECK(o_.bins >= 1 && o_.bootstrap >= 1 && o_.batch_size >= 1,
                "evaluate: --bins, --bootstrap and --batch-size must be >= 1");
    KDSEG_CHECK(o_.workers >= 0, "evaluate: --workers must be >= 0, got ", o_.workers);
    KDSEG_CHECK(o_.surface_tolerance > 0 && std::isfinite(o_.surface_tolerance),
                "evaluate: --surface-tolerance must be a positive number of mm, got ", o_.surface_tolerance);
    std::set<std::string> names;
    for (const auto& m : o_.models) {
      KDSEG_CHECK(names.insert(m.name).second, "evaluate: two models are named '", m.name,
                  "'; give distinct --name values");
      KDSEG_CHECK(m.model->classes() == task_.classes, m.file, ": the model predicts ", m.model->classes(),
                  " classes but task '", task_.name, "' has ", task_.classes, " (evaluate it with its own --task)");
    }
    const int folds = store_.folds();
    KDSEG_CHECK(o_.fold >= 0 && o_.fold < folds, o_.data, ": --fold ", o_.fold, " does not exist; the store has ",
                folds, " folds (0-", folds - 1, ")");
    rows_ = store_.rows_in_folds({o_.fold});
    KDSEG_CHECK(!rows_.empty(), o_.data, ": fold ", o_.fold, " has no slices");
    for (const std::string& id : o_.show_cases) {
      const bool in_fold = std::any_of(rows_.begin(), rows_.end(), [&](int64_t row) {
        return store_.case_ids()[static_cast<size_t>(store_.slice_case()[static_cast<size_t>(row)])] == id;
      });
      KDSEG_CHECK(in_fold, o_.data, ": --show-case ", id, " is not a case of fold ", o_.fold);
    }
    for (const auto& m : o_.models) check_held_out(m);
    if (!o_.cache.empty()) {  // for the figures; checked before any work
      auto cache = std::make_shared<data::SoftLabelCache>(o_.cache);
      cache->check_provenance(o_.data);
      cache_ = cache;
    }
    store_options_ = json::parse(store_.attribute("options"), nullptr, /*allow_exceptions=*/false);
    if (comm_.rank() == 0 && store_options_.is_object() &&
        parse_enum<data::SliceSelection>(o_.data + ": slices", store_options_.value("slices", "all")) !=
            data::SliceSelection::kAll) {
      log::warn(
          "{} keeps only the slices with {} (prepare --slices {}): Dice and calibration cover those slices, not "
          "whole volumes, and surface distances see the kept slices stacked with the others empty; evaluate "
          "on a store prepared with --slices all for volume metrics",
          o_.data, store_options_.value("slices", ""), store_options_.value("slices", ""));
    }
    stage_output();
  }

  // A kdseg checkpoint names the store it trained on and the fold it held out: no case of the
  // evaluated fold may be one it trained on. Stores of the same cases assign the same folds,
  // so a store with every slice of the same cases evaluates a model trained on tumour slices.
  void check_held_out(const EvaluatedModel& evaluated) const {
    const std::string training_config = evaluated.model->training_config();
    const json config = json::parse(training_config.empty() ? "{}" : training_config, nullptr, false);
    if (!config.is_object() || !config.contains("data") || !config.contains("fold")) return;
    const std::string trained_on = config.at("data").get<std::string>();
    const int held_out = config.at("fold").get<int>();
    std::error_code ec;
    if (!fs::is_regular_file(trained_on, ec)) {
      if (comm_.rank() == 0) {
        log::warn(
            "{}: its training store {} is gone, so evaluate cannot check that fold {} held none of its training "
            "cases",
            evaluated.file, trained_on, o_.fold);
      }
      return;
    }
    const data::PreparedStore theirs(trained_on);
    std::set<std::string> trained;
    for (size_t c = 0; c < theirs.case_ids().size(); ++c) {
      if (theirs.case_fold()[c] != held_out) trained.insert(theirs.case_ids()[c]);
    }
    std::set<std::string> seen;
    for (int64_t row : rows_) {
      const std::string& id = store_.case_ids()[static_cast<size_t>(store_.slice_case()[static_cast<size_t>(row)])];
      if (trained.count(id) != 0) seen.insert(id);
    }
    if (seen.empty()) return;
    std::string ids;
    for (const auto& id : seen) ids += (ids.empty() ? "" : ", ") + id;
    KDSEG_THROW(evaluated.file, ": trained on ", seen.size(), " case(s) of fold ", o_.fold, " (", ids,
                "): it held out fold ", held_out, " of ", trained_on, "; evaluate each model on the fold it held out");
  }

  // Rank 0 writes everything into a staged folder that replaces the output folder at the end;
  // made once the inputs are checked, so that an unwritable output is found before any work.
  void stage_output() {
    if (comm_.rank() != 0) return;
    std::error_code ec;
    const bool absent = !fs::exists(o_.output, ec) || (fs::is_directory(o_.output, ec) && fs::is_empty(o_.output, ec));
    const bool report = fs::is_regular_file(fs::path(o_.output) / "report.json", ec);
    // The folder is replaced whole: only a report folder may be, so that a mistyped --output
    // (a run's folder) is never wiped.
    KDSEG_CHECK(absent || report, o_.output, " holds files that are not a kdseg report; choose another --output");
    KDSEG_CHECK(absent || o_.force, o_.output,
                " holds a report; pass --force to replace it, or choose another --output");
    staged_ = std::make_unique<StagedFolder>(o_.output);
  }

  json run() {
    json models = json::array();
    for (const EvaluatedModel& evaluated : o_.models) models.push_back(evaluate_model(evaluated));
    for (size_t m = 1; m < models.size(); ++m) models[m]["paired"] = paired_with_first(models[m], models[0]);
    adjust_for_multiple_comparisons(models);
    if (o_.curves) add_training_curves(models);
    json report = {{"format", report::kFormat},
                   {"tool_version", KDSEG_TOOL_VERSION},
                   {"created", utc_now_iso8601()},
                   {"data", fs::absolute(o_.data).string()},
                   {"store_hash", store_.attribute("content_hash")},
                   {"store_options", store_options_},
                   {"fold", o_.fold},
                   {"task", {{"name", task_.name}, {"classes", task_.classes}, {"class_names", class_names()}}},
                   {"regions", region_names()},
                   {"reference", reference_json()},
                   {"options",
                    {{"device", enum_name(o_.device.type())},
                     {"batch_size", o_.batch_size},
                     {"bins", o_.bins},
                     {"bootstrap_resamples", o_.bootstrap},
                     {"bootstrap_seed", o_.seed},
                     {"ranks", comm_.size()},
                     {"save_predictions", o_.save_predictions},
                     {"surface_metrics", o_.surface},
                     {"surface_tolerance_mm", o_.surface ? json(o_.surface_tolerance) : json()},
                     {"layout", enum_name(layout_)},
                     {"slices", static_cast<int64_t>(rows_.size())}}},
                   {"empty_slice_dice", 1.0},
                   {"models", models}};
    if (comm_.rank() == 0) {
      if (o_.figures) report["figures"] = write_figures(models);
      report::write_report(staged_->path(), report);
      staged_->commit();
    }
    comm_.barrier();
    return report;
  }

 private:
  json class_names() const {
    json names = json::array({"background"});
    for (int64_t k = 1; k < task_.classes; ++k) {
      std::string name = "class " + std::to_string(k);
      for (const auto& r : regions_) {
        if (r.classes.size() == 1 && r.classes[0] == k) name = r.name;
      }
      names.push_back(name);
    }
    return names;
  }
  // The curves of every model that is a kdseg checkpoint with a metrics.jsonl beside it.
  void add_training_curves(json& models) const {
    for (size_t m = 0; m < o_.models.size(); ++m) {
      const EvaluatedModel& evaluated = o_.models[m];
      if (evaluated.file.empty() || evaluated.model->training_config().empty()) continue;
      const json curves = read_training_curves((fs::path(evaluated.file).parent_path() / "metrics.jsonl").string());
      if (!curves.is_null()) models[m]["curves"] = curves;
    }
  }

  // Rank 0, into the staged report folder.
  json write_figures(const json& models) const {
    detail::FigureInputs in;
    in.store_path = o_.data;
    in.store = &store_;
    in.task = task_;
    in.regions = regions_;
    in.rows = rows_;
    in.models = &o_.models;
    in.device = device_;
    in.show_cases = o_.show_cases;
    in.cache = cache_;
    return detail::write_case_figures(in, models, staged_->path());
  }

  // What the metrics compare against: the store's label, or the majority and mean of its raters.
  json reference_json() const {
    if (store_.raters() == 0) return {{"label", "store"}, {"raters", 0}};
    return {{"label", "majority"}, {"raters", store_.raters()}, {"soft", "rater mean"}};
  }
  json region_names() const {
    json names = json::array();
    for (const auto& r : regions_) names.push_back(r.name);
    return names;
  }

  json evaluate_model(const EvaluatedModel& evaluated) {
    torch::NoGradGuard no_grad;
    const int64_t cases = static_cast<int64_t>(store_.case_ids().size());
    SegmentationMetrics metrics(cases, task_.classes, regions_, o_.bins, task_.ignore_index, 1.0);
    std::optional<SoftReferenceMetrics> soft;  // against the raters' mean, where the store keeps raters
    if (store_.raters() > 0) soft.emplace(cases, task_.classes, regions_);
    // Surface distances and predictions need whole cases: each rank evaluates whole cases.
    detail::CaseOutputs outputs;
    outputs.surface = o_.surface;
    outputs.tolerance = o_.surface_tolerance;
    outputs.classes = task_.classes;
    outputs.ignore_index = task_.ignore_index;
    if (o_.save_predictions) {
      outputs.predictions = true;
      if (comm_.rank() == 0)
        outputs.folder = (fs::path(staged_->path()) / "predictions" / safe_file_name(evaluated.name)).string();
      outputs.value_of_class = label_value_of_class(task_);
      outputs.threads = at::get_num_threads();
    }
    std::optional<detail::CaseCollector> collector;
    if (o_.surface || o_.save_predictions) collector.emplace(store_, rows_, regions_, outputs, comm_);
    const std::vector<int64_t> mine =
        collector ? collector->rows()
                  : data::evaluation_case_rows(rows_, store_.slice_case(), comm_.rank(), comm_.size());
    const auto plan = data::evaluation_plan(mine, o_.batch_size);
    Progress progress("evaluate " + evaluated.name, static_cast<int64_t>(plan.size()), comm_.rank() == 0);
    if (!plan.empty()) {
      data::LoaderOptions loader_options;
      loader_options.workers = o_.workers;
      loader_options.train = false;
      loader_options.augment.crop = 0;
      // With raters: the majority as the label (the paper's test protocol) and their mean.
      if (soft) loader_options.raters = data::RaterLabels::kMean;
      data::BatchLoader loader(o_.data, task_, loader_options, plan);
      while (auto batch = loader.next()) {
        const Tensor logits = evaluated.model->logits(batch->images.to(device_));
        const Tensor probs = torch::softmax(logits.to(torch::kFloat), 1).cpu();
        KDSEG_CHECK(probs.sizes() == torch::IntArrayRef({batch->images.size(0), task_.classes, batch->images.size(2),
                                                         batch->images.size(3)}),
                    evaluated.file, ": logits of shape ", probs.sizes(), " for images ", batch->images.sizes());
        std::vector<int64_t> case_of;
        for (int64_t r : batch->rows) case_of.push_back(store_.slice_case()[static_cast<size_t>(r)]);
        metrics.add(probs, batch->labels, case_of);
        if (soft) soft->add(probs, batch->rater_soft, batch->labels != task_.ignore_index, case_of);
        if (collector) {
          const Tensor predicted = predicted_classes(probs);
          for (size_t i = 0; i < batch->rows.size(); ++i) {
            const auto b = static_cast<int64_t>(i);
            collector->add(batch->rows[i], predicted[b], batch->labels[b],
                           o_.save_predictions ? 1.0f - probs[b][0] : Tensor());
          }
        }
        progress.advance(1);
      }
    }
    progress.finish();
    Tensor state = metrics.state();
    dist::all_reduce_any_device(comm_, state, dist::ReduceOp::kSum);  // each case counted once across ranks
    metrics.set_state(state);
    if (soft) {
      Tensor soft_state = soft->state();
      dist::all_reduce_any_device(comm_, soft_state, dist::ReduceOp::kSum);
      soft->set_state(soft_state);
    }
    const Tensor distances = collector ? collector->finish(comm_) : Tensor();
    comm_.barrier();
    return model_json(evaluated, per_case_values(metrics, o_.surface ? distances : Tensor(), soft ? &*soft : nullptr),
                      metrics);
  }

  // Per region, the model's per-case Dice minus the first model's (paired_difference).
  json paired_with_first(const json& model, const json& first) const {
    std::map<std::string, const json*> first_cases;
    for (const json& c : first.at("cases")) first_cases[c.at("id").get<std::string>()] = &c;
    const auto dice = [](const json& c, const std::string& region) {
      const json& v = c.at("dice").at(region);
      return v.is_null() ? std::nan("") : v.get<double>();
    };
    json regions = json::object();
    for (const auto& region : regions_) {
      std::vector<double> a, b;
      for (const json& c : model.at("cases")) {
        const auto it = first_cases.find(c.at("id").get<std::string>());
        if (it == first_cases.end()) continue;
        a.push_back(dice(c, region.name));
        b.push_back(dice(*it->second, region.name));
      }
      const PairedDifference difference = paired_difference(a, b, o_.bootstrap, 0.95, o_.seed);
      regions[region.name] = {{"cases", difference.cases},
                              {"mean", number(difference.mean)},
                              {"ci95", {number(difference.ci95.low), number(difference.ci95.high)}},
                              {"p_value", number(difference.p_value)}};
    }
    return {{"reference", first.at("name")}, {"dice", regions}};
  }

  // Every paired p-value of the report (models after the first x regions) gets Holm's adjustment.
  void adjust_for_multiple_comparisons(json& models) const {
    std::vector<json*> tests;
    std::vector<double> p_values;
    for (size_t m = 1; m < models.size(); ++m) {
      for (const auto& region : regions_) {
        json& test = models[m]["paired"]["dice"][region.name];
        tests.push_back(&test);
        p_values.push_back(test.at("p_value").is_null() ? std::nan("") : test.at("p_value").get<double>());
      }
    }
    const std::vector<double> adjusted = holm_adjusted(p_values);
    for (size_t i = 0; i < tests.size(); ++i) (*tests[i])["p_holm"] = number(adjusted[i]);
  }

  // models[] entry of report.json. `distances`: [cases, regions, kSurfaceMetrics], undefined
  // without surface metrics.
  json model_json(const EvaluatedModel& evaluated, const PerCase& values, const SegmentationMetrics& metrics) const {
    json cases = json::array();
    std::vector<size_t> in_fold;
    int64_t total_slices = 0;
    for (size_t c = 0; c < values.slices.size(); ++c) {
      if (values.slices[c] == 0) continue;  // not in this fold (or every voxel ignored)
      in_fold.push_back(c);
      total_slices += values.slices[c];
      cases.push_back(case_entry(values, c));
    }
    return {{"name", evaluated.name},
            {"file", evaluated.file.empty() ? std::string() : fs::absolute(evaluated.file).string()},
            {"file_hash", file_hash_or_empty(evaluated.file)},
            {"description", evaluated.model->describe()},
            {"slices", total_slices},
            {"summary", summary_entry(values, metrics, in_fold)},
            {"reliability", reliability_entry(metrics, o_.bins)},
            {"cases", cases}};
  }

  // cases[] entry of report.json for the store's case c.
  json case_entry(const PerCase& values, size_t c) const {
    json dice = json::object(), slice_dice = json::object();
    for (size_t r = 0; r < regions_.size(); ++r) {
      dice[regions_[r].name] = number(values.dice[r][c]);
      slice_dice[regions_[r].name] = number(values.slice_dice[r][c]);
    }
    json entry = {{"id", store_.case_ids()[c]},
                  {"slices", values.slices[c]},
                  {"dice", dice},
                  {"slice_dice", slice_dice},
                  {"ece", number(values.ece[c])},
                  {"slice_ece", number(values.slice_ece[c])},
                  {"classwise_ece", number(values.classwise_ece[c])},
                  {"nll", number(values.nll[c])},
                  {"brier", number(values.brier[c])}};
    if (!values.soft_l1.empty()) {
      json threshold_dice = json::object();
      for (size_t r = 0; r < regions_.size(); ++r)
        threshold_dice[regions_[r].name] = number(values.threshold_dice[r][c]);
      entry["soft_reference"] = {{"threshold_dice", threshold_dice},
                                 {"l1", number(values.soft_l1[c])},
                                 {"brier", number(values.soft_brier[c])}};
    }
    for (size_t k = 0; values.has_surface() && k < std::size(kSurfaceMetrics); ++k) {
      json per_region = json::object();
      for (size_t r = 0; r < regions_.size(); ++r) per_region[regions_[r].name] = number(values.distance(c, r, k));
      entry[kSurfaceMetrics[k]] = per_region;
    }
    return entry;
  }

  // summary of report.json: means over cases with bootstrap intervals. Dice and calibration
  // leave out the cases outside the fold as NaN; surface distances take the cases `in_fold`.
  json summary_entry(const PerCase& values, const SegmentationMetrics& metrics,
                     const std::vector<size_t>& in_fold) const {
    json dice = json::object(), slice_dice = json::object();
    for (size_t r = 0; r < regions_.size(); ++r) {
      dice[regions_[r].name] = {{"mean", number(mean_ignoring_nan(values.dice[r]))},
                                {"ci95", interval(values.dice[r], o_)},
                                {"global", number(metrics.global_dice(r))},
                                {"worst5", number(worst_fraction_mean(values.dice[r], 0.05))}};
      slice_dice[regions_[r].name] = number(mean_ignoring_nan(values.slice_dice[r]));
    }
    json summary = {{"dice", dice},
                    {"slice_dice", slice_dice},
                    {"ece", {{"mean", number(mean_ignoring_nan(values.ece))}, {"ci95", interval(values.ece, o_)}}},
                    {"slice_ece", number(mean_ignoring_nan(values.slice_ece))},
                    {"classwise_ece", number(mean_ignoring_nan(values.classwise_ece))},
                    {"nll", number(mean_ignoring_nan(values.nll))},
                    {"brier", number(mean_ignoring_nan(values.brier))}};
    if (values.has_surface()) summary["surface"] = surface_summary(values, in_fold);
    if (!values.soft_l1.empty()) {
      const auto mean_and_interval = [&](const std::vector<double>& v) {
        return json{{"mean", number(mean_ignoring_nan(v))}, {"ci95", interval(v, o_)}};
      };
      json threshold_dice = json::object();
      for (size_t r = 0; r < regions_.size(); ++r) {
        threshold_dice[regions_[r].name] = mean_and_interval(values.threshold_dice[r]);
      }
      summary["soft_reference"] = {{"threshold_dice", threshold_dice},
                                   {"l1", mean_and_interval(values.soft_l1)},
                                   {"brier", mean_and_interval(values.soft_brier)}};
    }
    return summary;
  }

  // summary.surface of report.json. Only the cases `in_fold` count: the others hold zeros, not NaN.
  json surface_summary(const PerCase& values, const std::vector<size_t>& in_fold) const {
    json summary = json::object();
    for (size_t r = 0; r < regions_.size(); ++r) {
      json& region = summary[regions_[r].name];
      for (size_t k = 0; k < std::size(kSurfaceMetrics); ++k) {
        std::vector<double> distances;
        for (size_t c : in_fold) distances.push_back(values.distance(c, r, k));
        region[kSurfaceMetrics[k]] = {{"mean", number(mean_ignoring_nan(distances))},
                                      {"ci95", interval(distances, o_)}};
      }
    }
    return summary;
  }

  const EvaluateOptions& o_;
  dist::Communicator& comm_;
  data::PreparedStore store_;
  data::Layout layout_;
  data::Task task_;
  std::vector<DiceRegion> regions_;
  c10::Device device_;
  std::shared_ptr<const data::SoftLabelCache> cache_;
  std::unique_ptr<StagedFolder> staged_;  // rank 0's
  std::vector<int64_t> rows_;
  json store_options_;
};

}  // namespace

json evaluate(const EvaluateOptions& options, dist::Communicator& comm) {
  Evaluator evaluator(options, comm);
  return evaluator.run();
}

}  // namespace kdseg::eval
