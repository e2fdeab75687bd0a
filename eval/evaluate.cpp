#include "eval/evaluate.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "core/build_config.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/progress.h"
#include "core/surface_distance.h"
#include "core/frozen_model.h"
#include "data/loader.h"
#include "data/nifti.h"
#include "data/prepared_store.h"
#include "eval/report.h"

namespace kdseg::eval {
namespace {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;
using nlohmann::json;
using torch::Tensor;

// The Dice regions of a task: each foreground class by name, and kidney+tumour for KiTS.
std::vector<DiceRegion> regions_for(const data::Task& task, data::Layout layout) {
  const bool kits = layout != data::Layout::kLits;
  if (task.classes == 2) return {{"tumor", {1}}};
  if (task.classes == 3 && (task.name == "organ-tumor" || task.name == "organ-tumour")) {
    std::vector<DiceRegion> r = {{kits ? "kidney" : "liver", {1}}, {"tumor", {2}}};
    if (kits) r.push_back({"kidney+tumor", {1, 2}});
    return r;
  }
  std::vector<DiceRegion> r;
  for (int64_t k = 1; k < task.classes; ++k) r.push_back({"class " + std::to_string(k), {k}});
  return r;
}

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

json interval(const std::vector<double>& values, const EvaluateOptions& o) {
  const report::Interval ci = report::bootstrap_ci(values, o.bootstrap, 0.95, o.seed);
  return json::array({number(ci.low), number(ci.high)});
}

std::string safe_file_name(const std::string& name) {
  std::string out;
  for (char ch : name) out += std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.' ? ch : '_';
  return out;
}

// Surface distances need a case's whole volume in one place. Each rank keeps its slices' class
// maps per case and measures a case as soon as it holds every slice of it. A case split between
// ranks (evaluation_rows gives each rank a contiguous block, so at most its first and last) is
// summed across ranks after the pass and measured by one of them.
class SurfaceCollector {
  using Slices = std::map<int64_t, std::pair<Tensor, Tensor>>;  // row -> (classes, labels), [H,W] uint8

 public:
  SurfaceCollector(const data::PreparedStore& store, const std::vector<int64_t>& rows,
                   const std::vector<DiceRegion>& regions, int64_t ignore_index, double tolerance,
                   const dist::Communicator& comm)
      : store_(store), regions_(regions), ignore_index_(ignore_index), tolerance_(tolerance),
        results_(torch::zeros({static_cast<int64_t>(store.case_ids().size()), static_cast<int64_t>(regions.size()), 3},
                              torch::kDouble)) {
    std::map<int32_t, std::set<int>> ranks_of_case;
    for (int r = 0; r < comm.size(); ++r) {
      for (int64_t row : data::evaluation_rows(rows, r, comm.size())) {
        const int32_t c = case_of(row);
        rows_of_case_[c].push_back(row);
        ranks_of_case[c].insert(r);
      }
    }
    for (const auto& [c, ranks] : ranks_of_case) {
      if (ranks.size() > 1) shared_.push_back(c);
    }
  }

  // One evaluated slice: its predicted classes and labels, [H,W] uint8.
  void add(int64_t row, Tensor predicted, Tensor label) {
    const int32_t c = case_of(row);
    Slices& held = held_[c];
    held[row] = {std::move(predicted), std::move(label)};
    if (held.size() != rows_of_case_.at(c).size()) return;
    measure(c, held);
    held_.erase(c);
  }

  // Collective: measures the shared cases, then returns [cases, regions, {hd95, assd, nsd}] on
  // every rank (zero for cases outside the fold).
  Tensor finish(dist::Communicator& comm) {
    const int64_t h = store_.height(), w = store_.width();
    for (size_t i = 0; i < shared_.size(); ++i) {
      const int32_t c = shared_[i];
      const std::vector<int64_t>& rows = rows_of_case_.at(c);
      Tensor volume = torch::zeros({static_cast<int64_t>(rows.size()), 2, h, w}, torch::kByte);
      const auto held = held_.find(c);
      for (size_t j = 0; held != held_.end() && j < rows.size(); ++j) {
        const auto slice = held->second.find(rows[j]);
        if (slice == held->second.end()) continue;
        volume[static_cast<int64_t>(j)][0].copy_(slice->second.first);
        volume[static_cast<int64_t>(j)][1].copy_(slice->second.second);
      }
      dist::all_reduce_any_device(comm, volume, dist::ReduceOp::kSum);  // exactly one rank holds each slice
      if (static_cast<int>(i) % comm.size() != comm.rank()) continue;
      Slices gathered;
      for (size_t j = 0; j < rows.size(); ++j) {
        const Tensor slice = volume[static_cast<int64_t>(j)];
        gathered[rows[j]] = {slice[0], slice[1]};
      }
      measure(c, gathered);
    }
    held_.clear();
    dist::all_reduce_any_device(comm, results_, dist::ReduceOp::kSum);  // each case measured by one rank
    return results_;
  }

 private:
  int32_t case_of(int64_t row) const { return store_.slice_case()[static_cast<size_t>(row)]; }

  // Stacks the case's slices at their positions along the S axis (slices a store left out are
  // empty in both) and measures each region on the store's grid: the in-plane spacing is the
  // canonical spacing scaled by the resize. Voxels with the ignore label take the prediction's
  // value in the reference, so that, as for Dice, they count neither way.
  void measure(int32_t c, const Slices& slices) {
    const std::vector<int64_t>& rows = rows_of_case_.at(c);
    int32_t first = INT32_MAX, last = INT32_MIN;
    for (int64_t r : rows) {
      first = std::min(first, store_.slice_index()[static_cast<size_t>(r)]);
      last = std::max(last, store_.slice_index()[static_cast<size_t>(r)]);
    }
    const int64_t h = store_.height(), w = store_.width();
    Tensor predicted = torch::zeros({last - first + 1, h, w}, torch::kByte), label = torch::zeros_like(predicted);
    for (const auto& [r, slice] : slices) {
      const int64_t z = store_.slice_index()[static_cast<size_t>(r)] - first;
      predicted[z].copy_(slice.first);
      label[z].copy_(slice.second);
    }
    const auto shape = store_.case_shapes()[static_cast<size_t>(c)];
    const std::array<double, 3> mm = data::voxel_spacing(store_.case_affines()[static_cast<size_t>(c)]);
    const std::array<double, 3> spacing = {mm[2], mm[0] * static_cast<double>(shape[0]) / static_cast<double>(h),
                                           mm[1] * static_cast<double>(shape[1]) / static_cast<double>(w)};
    const std::array<int64_t, 3> size = {predicted.size(0), h, w};
    const Tensor ignored = label == ignore_index_;
    for (size_t k = 0; k < regions_.size(); ++k) {
      const Tensor a = in_region(predicted, regions_[k]);
      const Tensor b = torch::where(ignored, a, in_region(label, regions_[k])).contiguous();
      const SurfaceMetrics m = surface_metrics(a.data_ptr<uint8_t>(), b.data_ptr<uint8_t>(), size, spacing, tolerance_);
      results_[c][static_cast<int64_t>(k)].copy_(torch::tensor({m.hd95, m.assd, m.nsd}, torch::kDouble));
    }
  }

  // 1 where `classes` holds one of the region's classes (the ignore label is in none).
  static Tensor in_region(const Tensor& classes, const DiceRegion& region) {
    Tensor mask = torch::zeros_like(classes, torch::kBool);
    for (int64_t k : region.classes) mask.logical_or_(classes == k);
    return mask.to(torch::kByte).contiguous();
  }

  const data::PreparedStore& store_;
  const std::vector<DiceRegion>& regions_;
  int64_t ignore_index_;
  double tolerance_;
  Tensor results_;
  std::map<int32_t, std::vector<int64_t>> rows_of_case_;  // the fold's rows of each case, in order
  std::vector<int32_t> shared_;                          // cases whose rows more than one rank holds
  std::map<int32_t, Slices> held_;                       // this rank's slices of cases not yet measured
};

class Evaluator {
 public:
  Evaluator(const EvaluateOptions& o, dist::Communicator& comm)
      : o_(o), comm_(comm), store_(o.data), layout_(data::parse_layout(store_.attribute("layout"))),
        task_(data::make_task(o.task, layout_)), regions_(regions_for(task_, layout_)),
        device_(o.device == "cuda" ? dist::rank_cuda_device(comm) : c10::Device(c10::kCPU)) {
    KDSEG_CHECK(!o_.models.empty(), "evaluate: give at least one --model");
    KDSEG_CHECK(o_.bins >= 1 && o_.bootstrap >= 1 && o_.batch_size >= 1, "evaluate: --bins, --bootstrap and --batch-size must be >= 1");
    KDSEG_CHECK(o_.workers >= 0, "evaluate: --workers must be >= 0, got ", o_.workers);
    KDSEG_CHECK(o_.surface_tolerance > 0 && std::isfinite(o_.surface_tolerance),
                "evaluate: --surface-tolerance must be a positive number of mm, got ", o_.surface_tolerance);
    std::set<std::string> names;
    for (const auto& m : o_.models) {
      KDSEG_CHECK(names.insert(m.name).second, "evaluate: two models are named '", m.name, "'; give distinct --name values");
      KDSEG_CHECK(m.model->classes() == task_.classes, m.file, ": the model predicts ", m.model->classes(),
                  " classes but task '", task_.name, "' has ", task_.classes, " (evaluate it with its own --task)");
    }
    const int folds = store_.folds();
    KDSEG_CHECK(o_.fold >= 0 && o_.fold < folds, o_.data, ": --fold ", o_.fold, " does not exist; the store has ", folds,
                " folds (0-", folds - 1, ")");
    rows_ = store_.rows_in_folds({o_.fold});
    KDSEG_CHECK(!rows_.empty(), o_.data, ": fold ", o_.fold, " has no slices");
    for (const auto& m : o_.models) check_held_out(m);
    store_options_ = json::parse(store_.attribute("options"), nullptr, /*allow_exceptions=*/false);
    if (comm_.rank() == 0 && store_options_.is_object() && store_options_.value("slices", "all") != "all") {
      log::warn("{} keeps only the slices with {} (prepare --slices {}): Dice and calibration cover those slices, not "
                "whole volumes, and surface distances see the kept slices stacked with the others empty; evaluate "
                "on a store prepared with --slices all for volume metrics",
                o_.data, store_options_.value("slices", ""), store_options_.value("slices", ""));
    }
  }

  // A kdseg checkpoint names the store it trained on and the fold it held out: no case of the
  // evaluated fold may be one it trained on. Stores of the same cases assign the same folds,
  // so a store with every slice of the same cases evaluates a model trained on tumour slices.
  void check_held_out(const EvaluatedModel& m) const {
    const json config = json::parse(m.model->training_config().empty() ? "{}" : m.model->training_config(), nullptr, false);
    if (!config.is_object() || !config.contains("data") || !config.contains("fold")) return;
    const std::string trained_on = config.at("data").get<std::string>();
    const int held_out = config.at("fold").get<int>();
    std::error_code ec;
    if (!fs::is_regular_file(trained_on, ec)) {
      if (comm_.rank() == 0) {
        log::warn("{}: its training store {} is gone, so evaluate cannot check that fold {} held none of its training "
                  "cases", m.file, trained_on, o_.fold);
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
    KDSEG_THROW(m.file, ": trained on ", seen.size(), " case(s) of fold ", o_.fold, " (", ids, "): it held out fold ",
                held_out, " of ", trained_on, "; evaluate each model on the fold it held out");
  }

  json run() {
    json models = json::array();
    for (const auto& m : o_.models) models.push_back(evaluate_model(m));
    for (size_t m = 1; m < models.size(); ++m) models[m]["paired"] = paired_with_first(models[m], models[0]);
    adjust_for_multiple_comparisons(models);
    json report = {{"format", "kdseg report 1"},
                   {"tool_version", KDSEG_TOOL_VERSION},
                   {"created", utc_now_iso8601()},
                   {"data", fs::absolute(o_.data).string()},
                   {"store_hash", store_.attribute("content_hash")},
                   {"store_options", store_options_},
                   {"fold", o_.fold},
                   {"task", {{"name", task_.name}, {"classes", task_.classes}, {"class_names", class_names()}}},
                   {"regions", region_names()},
                   {"options", {{"device", o_.device}, {"batch_size", o_.batch_size}, {"bins", o_.bins},
                                {"bootstrap_resamples", o_.bootstrap}, {"bootstrap_seed", o_.seed},
                                {"ranks", comm_.size()}, {"save_predictions", o_.save_predictions},
                                {"surface_metrics", o_.surface},
                                {"surface_tolerance_mm", o_.surface ? json(o_.surface_tolerance) : json()},
                                {"layout", data::layout_name(layout_)}, {"slices", static_cast<int64_t>(rows_.size())}}},
                   {"empty_slice_dice", 1.0},
                   {"models", models}};
    if (comm_.rank() == 0) report::write_report(o_.output, report);
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
  json region_names() const {
    json names = json::array();
    for (const auto& r : regions_) names.push_back(r.name);
    return names;
  }

  json evaluate_model(const EvaluatedModel& m) {
    torch::NoGradGuard no_grad;
    const std::vector<int64_t> mine = data::evaluation_rows(rows_, comm_.rank(), comm_.size());
    const auto plan = data::evaluation_plan(mine, o_.batch_size);
    const int64_t cases = static_cast<int64_t>(store_.case_ids().size());
    SegmentationMetrics metrics(cases, task_.classes, regions_, o_.bins, task_.ignore_index, 1.0);
    std::map<int64_t, Tensor> predictions;  // store row -> [1 + 1, H, W]: class, foreground probability
    std::optional<SurfaceCollector> surface;
    if (o_.surface) surface.emplace(store_, rows_, regions_, task_.ignore_index, o_.surface_tolerance, comm_);
    Progress progress("evaluate " + m.name, static_cast<int64_t>(plan.size()), comm_.rank() == 0);
    if (!plan.empty()) {
      data::LoaderOptions lo;
      lo.workers = o_.workers;
      lo.train = false;
      lo.augment.crop = 0;
      data::BatchLoader loader(o_.data, task_, lo, plan);
      while (auto batch = loader.next()) {
        const Tensor probs = torch::softmax(m.model->logits(batch->images.to(device_)).to(torch::kFloat), 1).cpu();
        KDSEG_CHECK(probs.sizes() == torch::IntArrayRef({batch->images.size(0), task_.classes, batch->images.size(2),
                                                         batch->images.size(3)}),
                    m.file, ": logits of shape ", probs.sizes(), " for images ", batch->images.sizes());
        std::vector<int64_t> case_of;
        for (int64_t r : batch->rows) case_of.push_back(store_.slice_case()[static_cast<size_t>(r)]);
        metrics.add(probs, batch->labels, case_of);
        if (surface) {
          const Tensor predicted = probs.argmax(1).to(torch::kByte), labels = batch->labels.to(torch::kByte);
          for (size_t i = 0; i < batch->rows.size(); ++i) {
            surface->add(batch->rows[i], predicted[static_cast<int64_t>(i)], labels[static_cast<int64_t>(i)]);
          }
        }
        if (o_.save_predictions) {
          for (size_t i = 0; i < batch->rows.size(); ++i) {
            const Tensor p = probs[static_cast<int64_t>(i)];
            predictions[batch->rows[i]] = torch::stack({p.argmax(0).to(torch::kFloat), 1.0f - p[0]});
          }
        }
        progress.advance(1);
      }
    }
    progress.finish();
    Tensor state = metrics.state();
    dist::all_reduce_any_device(comm_, state, dist::ReduceOp::kSum);  // each case counted once across ranks
    metrics.set_state(state);
    const Tensor distances = surface ? surface->finish(comm_) : Tensor();
    if (o_.save_predictions) save_predictions(m, predictions);
    return model_json(m, metrics, distances);
  }

  // Per region, the model's per-case Dice minus the first model's (report::paired_difference).
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
      const report::PairedDifference d = report::paired_difference(a, b, o_.bootstrap, 0.95, o_.seed);
      regions[region.name] = {{"cases", d.cases}, {"mean", number(d.mean)},
                              {"ci95", {number(d.ci95.low), number(d.ci95.high)}}, {"p_value", number(d.p_value)}};
    }
    return {{"reference", first.at("name")}, {"dice", regions}};
  }

  // Every paired p-value of the report (models after the first x regions) gets Holm's adjustment.
  void adjust_for_multiple_comparisons(json& models) const {
    std::vector<json*> tests;
    std::vector<double> p;
    for (size_t m = 1; m < models.size(); ++m) {
      for (const auto& region : regions_) {
        json& d = models[m]["paired"]["dice"][region.name];
        tests.push_back(&d);
        p.push_back(d.at("p_value").is_null() ? std::nan("") : d.at("p_value").get<double>());
      }
    }
    const std::vector<double> adjusted = report::holm_adjusted(p);
    for (size_t i = 0; i < tests.size(); ++i) (*tests[i])["p_holm"] = number(adjusted[i]);
  }

  // `distances`: [cases, regions, {hd95, assd, nsd}], undefined without surface metrics.
  json model_json(const EvaluatedModel& m, const SegmentationMetrics& metrics, const Tensor& distances) const {
    static constexpr const char* kSurface[] = {"hd95", "assd", "nsd"};
    std::vector<std::vector<std::vector<double>>> surface(3, std::vector<std::vector<double>>(regions_.size()));
    const Tensor table = distances.defined() ? distances.contiguous() : Tensor();
    const double* distance = table.defined() ? table.data_ptr<double>() : nullptr;  // [case][region][metric]
    const auto slices = metrics.slices_per_case();
    const auto ece = metrics.ece_per_case(), slice_ece = metrics.slice_ece_per_case(),
               cw = metrics.classwise_ece_per_case(), nll = metrics.nll_per_case(), brier = metrics.brier_per_case();
    json cases = json::array();
    std::vector<std::vector<double>> dice(regions_.size()), slice_dice(regions_.size());
    for (size_t r = 0; r < regions_.size(); ++r) {
      dice[r] = metrics.dice_per_case(r);
      slice_dice[r] = metrics.slice_dice_per_case(r);
    }
    int64_t total_slices = 0;
    for (size_t c = 0; c < slices.size(); ++c) {
      if (slices[c] == 0) continue;  // not in this fold (or every voxel ignored)
      total_slices += slices[c];
      json d = json::object(), sd = json::object();
      for (size_t r = 0; r < regions_.size(); ++r) {
        d[regions_[r].name] = number(dice[r][c]);
        sd[regions_[r].name] = number(slice_dice[r][c]);
      }
      json one = {{"id", store_.case_ids()[c]}, {"slices", slices[c]}, {"dice", d}, {"slice_dice", sd},
                  {"ece", number(ece[c])}, {"slice_ece", number(slice_ece[c])},
                  {"classwise_ece", number(cw[c])}, {"nll", number(nll[c])},
                  {"brier", number(brier[c])}};
      for (size_t k = 0; distance != nullptr && k < 3; ++k) {
        json per_region = json::object();
        for (size_t r = 0; r < regions_.size(); ++r) {
          const double v = distance[(c * regions_.size() + r) * 3 + k];
          per_region[regions_[r].name] = number(v);
          surface[k][r].push_back(v);
        }
        one[kSurface[k]] = per_region;
      }
      cases.push_back(std::move(one));
    }
    json dice_summary = json::object(), slice_summary = json::object();
    for (size_t r = 0; r < regions_.size(); ++r) {
      dice_summary[regions_[r].name] = {{"mean", number(report::mean_ignoring_nan(dice[r]))},
                                        {"ci95", interval(dice[r], o_)},
                                        {"global", number(metrics.global_dice(r))},
                                        {"worst5", number(report::worst_fraction_mean(dice[r], 0.05))}};
      slice_summary[regions_[r].name] = number(report::mean_ignoring_nan(slice_dice[r]));
    }
    json surface_summary = json::object();
    for (size_t r = 0; distance != nullptr && r < regions_.size(); ++r) {
      json& region = surface_summary[regions_[r].name];
      for (size_t k = 0; k < 3; ++k) {
        region[kSurface[k]] = {{"mean", number(report::mean_ignoring_nan(surface[k][r]))},
                               {"ci95", interval(surface[k][r], o_)}};
      }
    }
    const auto rel = metrics.reliability();
    json confidence = json::array(), accuracy = json::array();
    for (size_t b = 0; b < rel.count.size(); ++b) {
      confidence.push_back(number(rel.confidence[b]));
      accuracy.push_back(number(rel.accuracy[b]));
    }
    std::string hash;
    try {
      hash = hash_file(m.file);
    } catch (const Error&) {
      hash = "";  // a model given in memory (tests)
    }
    json out = {{"name", m.name},
            {"file", m.file.empty() ? std::string() : fs::absolute(m.file).string()},
            {"file_hash", hash},
            {"description", m.model->describe()},
            {"slices", total_slices},
            {"summary",
             {{"dice", dice_summary},
              {"slice_dice", slice_summary},
              {"ece", {{"mean", number(report::mean_ignoring_nan(ece))}, {"ci95", interval(ece, o_)}}},
              {"slice_ece", number(report::mean_ignoring_nan(slice_ece))},
              {"classwise_ece", number(report::mean_ignoring_nan(cw))},
              {"nll", number(report::mean_ignoring_nan(nll))},
              {"brier", number(report::mean_ignoring_nan(brier))}}},
            {"reliability", {{"bins", o_.bins}, {"confidence", confidence}, {"accuracy", accuracy}, {"count", rel.count}}},
            {"cases", cases}};
    if (distance != nullptr) out["summary"]["surface"] = std::move(surface_summary);
    return out;
  }

  // Each case's predictions, gathered on rank 0 (ranks may share a case), resized back to the
  // canonical in-plane size, placed at their slice, reoriented to the source file's voxel order
  // and written with its affine. Slices not evaluated hold 0.
  void save_predictions(const EvaluatedModel& m, const std::map<int64_t, Tensor>& mine) {
    const fs::path folder = fs::path(o_.output) / "predictions" / safe_file_name(m.name);
    if (comm_.rank() == 0) fs::create_directories(folder);
    const std::vector<uint8_t> value_of = label_value_of_class(task_);
    std::map<int32_t, std::vector<int64_t>> rows_of_case;
    for (int64_t r : rows_) rows_of_case[store_.slice_case()[static_cast<size_t>(r)]].push_back(r);
    for (const auto& [c, rows] : rows_of_case) {
      Tensor gathered = torch::zeros({static_cast<int64_t>(rows.size()), 2, store_.height(), store_.width()});
      for (size_t i = 0; i < rows.size(); ++i) {
        const auto it = mine.find(rows[i]);
        if (it != mine.end()) gathered[static_cast<int64_t>(i)].copy_(it->second);
      }
      dist::all_reduce_any_device(comm_, gathered, dist::ReduceOp::kSum);  // exactly one rank holds each row
      if (comm_.rank() != 0) continue;
      const auto shape = store_.case_shapes()[static_cast<size_t>(c)];
      const std::vector<int64_t> size = {shape[0], shape[1]};
      const Tensor labels = F::interpolate(gathered.narrow(1, 0, 1), F::InterpolateFuncOptions().size(size).mode(torch::kNearest));
      const Tensor probs = F::interpolate(gathered.narrow(1, 1, 1), F::InterpolateFuncOptions().size(size).mode(torch::kBilinear).align_corners(false));
      Tensor mask = torch::zeros({shape[0], shape[1], shape[2]}, torch::kByte);
      Tensor foreground = torch::zeros({shape[0], shape[1], shape[2]});
      const Tensor values = torch::tensor(std::vector<int64_t>(value_of.begin(), value_of.end()));
      for (size_t i = 0; i < rows.size(); ++i) {
        const int64_t k = store_.slice_index()[static_cast<size_t>(rows[i])];
        mask.select(2, k).copy_(values.index({labels[static_cast<int64_t>(i)][0].round().to(torch::kLong)}).to(torch::kByte));
        foreground.select(2, k).copy_(probs[static_cast<int64_t>(i)][0]);
      }
      write_case(folder, static_cast<size_t>(c), mask, foreground);
    }
    comm_.barrier();
  }

  void write_case(const fs::path& folder, size_t c, const Tensor& mask, const Tensor& foreground) const {
    const std::string id = store_.case_ids()[c];
    const std::string& source = store_.case_image_files()[c];
    Tensor out_mask = mask, out_probs = foreground;
    data::Affine affine = store_.case_affines()[c];
    try {
      const data::Geometry g = data::read_nifti_geometry(source);
      const Tensor m = data::from_canonical(mask, g.affine);
      KDSEG_CHECK(m.size(0) == g.shape[0] && m.size(1) == g.shape[1] && m.size(2) == g.shape[2], source,
                  ": its shape no longer matches the prepared store's case ", id);
      out_mask = m;
      out_probs = data::from_canonical(foreground, g.affine);
      affine = g.affine;
    } catch (const Error& e) {
      log::warn("{}; writing {}'s predictions in the canonical (RAS) geometry instead", e.message(), id);
    }
    data::write_nifti((folder / (safe_file_name(id) + ".nii.gz")).string(), out_mask, affine, "uint8");
    data::write_nifti((folder / (safe_file_name(id) + "_probs.nii.gz")).string(), out_probs, affine, "float32");
  }

  const EvaluateOptions& o_;
  dist::Communicator& comm_;
  data::PreparedStore store_;
  data::Layout layout_;
  data::Task task_;
  std::vector<DiceRegion> regions_;
  c10::Device device_;
  std::vector<int64_t> rows_;
  json store_options_;
};

}  // namespace

json evaluate(const EvaluateOptions& options, dist::Communicator& comm) {
  Evaluator evaluator(options, comm);
  return evaluator.run();
}

}  // namespace kdseg::eval
