#include "eval/evaluate.h"

#include <torch/torch.h>
#include <chrono>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
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
#include "core/run_record.h"
#include "data/loader.h"
#include "data/prepared_store.h"
#include "data/rater_agreement.h"
#include "data/soft_label_cache.h"
#include "eval/case_collector.h"
#include "eval/case_figures.h"
#include "eval/evaluate_inputs.h"
#include "eval/evaluation_results.h"
#include "eval/evaluation_statistics.h"
#include "eval/held_out.h"
#include "eval/report.h"
#include "eval/report_files.h"
#include "eval/report_schema.h"
#include "eval/training_curves.h"

namespace kdseg::eval {
namespace {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;
using nlohmann::json;
using torch::Tensor;

// The file's hash; empty for a model given in memory (tests), which has no file.
std::string file_hash_or_empty(const std::string& file) {
  try {
    return hash_file(file);
  } catch (const Error&) {
    return "";
  }
}

// Dice of a region empty in both prediction and label (report.json's empty_slice_dice).
constexpr double kEmptySliceDice = 1.0;

// distances [case][region][metric] float64 as CaseValues::surface [metric][region][case], and
// the surfel surface Dice (a last metric, where the regions ask for it) as v.surface_dice.
void set_surface_values(const Tensor& distances, detail::CaseValues& v) {
  const Tensor d = distances.contiguous();
  const auto cases = static_cast<size_t>(d.size(0)), regions = static_cast<size_t>(d.size(1));
  const auto metrics = static_cast<size_t>(d.size(2));
  KDSEG_CHECK(d.scalar_type() == torch::kDouble &&
                  (metrics == detail::kSurfaceMetricCount || metrics == detail::kSurfaceMetricCount + 1),
              "surface distances of shape ", d.sizes(), " and type ", d.scalar_type());
  const double* at = d.data_ptr<double>();
  v.surface.assign(detail::kSurfaceMetricCount, std::vector<std::vector<double>>(regions, std::vector<double>(cases)));
  if (metrics > detail::kSurfaceMetricCount) v.surface_dice.assign(regions, std::vector<double>(cases));
  for (size_t c = 0; c < cases; ++c) {
    for (size_t r = 0; r < regions; ++r) {
      for (size_t k = 0; k < detail::kSurfaceMetricCount; ++k) v.surface[k][r][c] = *at++;
      if (metrics > detail::kSurfaceMetricCount) v.surface_dice[r][c] = *at++;
    }
  }
}

// One model's numbers per case. `distances`: [cases, regions, kSurfaceMetricCount] float64,
// undefined without surface metrics; `soft`: null without raters.
detail::CaseValues case_values(const SegmentationMetrics& metrics, const SegmentationMetrics& band,
                               const Tensor& distances, const SoftReferenceMetrics* soft) {
  detail::CaseValues v;
  v.slices = metrics.slices_per_case();
  v.ece = metrics.ece_per_case();
  v.slice_ece = metrics.slice_ece_per_case();
  v.classwise_ece = metrics.classwise_ece_per_case();
  v.nll = metrics.nll_per_case();
  v.brier = metrics.brier_per_case();
  v.ace = metrics.ace_per_case();
  v.mce = metrics.mce_per_case();
  v.band_ece = band.ece_per_case();
  for (size_t r = 0; r < metrics.regions().size(); ++r) {
    v.dice.push_back(metrics.dice_per_case(r));
    v.slice_dice.push_back(metrics.slice_dice_per_case(r));
  }
  if (distances.defined()) set_surface_values(distances, v);
  if (soft) {
    detail::SoftReferenceCases cases;
    for (size_t r = 0; r < metrics.regions().size(); ++r)
      cases.threshold_dice.push_back(soft->threshold_dice_per_case(r));
    cases.l1 = soft->l1_per_case();
    cases.brier = soft->brier_per_case();
    cases.rater_ece = soft->rater_ece_per_case();
    v.soft = std::move(cases);
  }
  return v;
}

class Evaluator {
 public:
  Evaluator(const EvaluateOptions& o, dist::Communicator& comm)
      : o_(o),
        comm_(comm),
        store_(o.data),
        layout_(parse_enum<data::Layout>(o.data + ": layout", store_.attribute("layout"))),
        task_(data::make_task(o.task, layout_)),
        regions_(o.regions == data::RegionSet::kKits23 ? data::kits23_regions(task_, layout_)
                                                       : data::dice_regions(task_, layout_)),
        device_(o.device) {
    detail::check_options(o_, task_);
    const int folds = store_.folds();
    KDSEG_CHECK(o_.fold >= 0 && o_.fold < folds, o_.data, ": --fold ", o_.fold, " does not exist; the store has ",
                folds, " folds (0-", folds - 1, ")");
    rows_ = store_.rows_in_folds({o_.fold});
    KDSEG_CHECK(!rows_.empty(), o_.data, ": fold ", o_.fold, " has no slices");
    detail::check_show_cases(o_, store_, rows_);
    for (const auto& m : o_.models)
      check_held_out(*m.model, m.file, store_, rows_, o_.fold, comm_.rank() == 0,
                     "use each model only on the fold it held out");
    if (!o_.cache.empty()) {  // for the figures; checked before any work
      auto cache = std::make_shared<data::SoftLabelCache>(o_.cache);
      cache->check_provenance(o_.data);
      cache_ = cache;
    }
    store_options_ = json::parse(store_.attribute("options"), nullptr, /*allow_exceptions=*/false);
    detail::warn_of_slice_selection(o_.data, store_options_, comm_.rank() == 0);
    if (comm_.rank() == 0) staged_ = detail::stage_report_folder(o_.output, o_.force);
  }

  json run() {
    detail::EvaluationResults results;
    for (const EvaluatedModel& evaluated : o_.models) results.models.push_back(evaluate_model(evaluated));
    for (size_t m = 1; m < results.models.size(); ++m) {
      results.models[m].paired =
          detail::paired_with_first(results.models[m], results.models[0], regions_.size(), bootstrap());
    }
    detail::adjust_for_multiple_comparisons(results.models);
    if (o_.curves) add_training_curves(results.models);
    describe_run(results);
    if (comm_.rank() == 0 && o_.figures) results.figures = write_figures(results.models);
    json report = detail::report_json(results);
    if (comm_.rank() == 0) {
      report::write_report(staged_->path(), report);
      staged_->commit();
    }
    comm_.barrier();
    return report;
  }

 private:
  std::vector<std::string> class_names() const {
    std::vector<std::string> names{"background"};
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
  void add_training_curves(std::vector<detail::ModelResult>& models) const {
    for (size_t m = 0; m < o_.models.size(); ++m) {
      const EvaluatedModel& evaluated = o_.models[m];
      if (evaluated.file.empty() || evaluated.model->training_config().empty()) continue;
      models[m].curves = read_training_curves((fs::path(evaluated.file).parent_path() / kRunMetricsFile).string());
    }
  }

  // Rank 0, into the staged report folder.
  std::vector<detail::CaseFigure> write_figures(const std::vector<detail::ModelResult>& models) const {
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

  // The raters' pairwise Dice per region over the evaluated fold's cases (data/rater_agreement.h).
  nlohmann::json rater_agreement_json() const {
    const auto& per_case = store_.rater_pairwise_dice();
    if (per_case.empty()) return nullptr;
    nlohmann::json regions = nlohmann::json::object();
    int64_t cases = 0;
    for (size_t g = 0; g < store_.rater_regions().size(); ++g) {
      std::vector<double> values;
      for (size_t c = 0; c < per_case.size(); ++c) {
        if (store_.case_fold()[c] == o_.fold) values.push_back(per_case[c].at(g));
      }
      cases = static_cast<int64_t>(values.size());
      const data::AgreementSummary s = data::summarize_agreement(values);
      if (s.cases == 0) continue;
      regions[store_.rater_regions()[g]] = {{"median", s.median}, {"p10", s.p10}, {"p90", s.p90},
                                            {"min", s.min},       {"max", s.max}, {"cases", s.cases}};
    }
    return {{"measure", "mean pairwise Dice between raters, per case"}, {"cases", cases}, {"pairwise_dice", regions}};
  }

  // What the report says of the store, the task and the options; the time it was made.
  void describe_run(detail::EvaluationResults& results) const {
    results.tool_version = KDSEG_TOOL_VERSION;
    results.created = utc_now_iso8601();
    results.data = fs::absolute(o_.data).string();
    results.store_hash = store_.attribute(data::store::kContentHashAttribute);
    results.store_options = store_options_;
    results.fold = o_.fold;
    results.task = task_.name;
    results.classes = task_.classes;
    results.class_names = class_names();
    for (const auto& r : regions_) results.regions.push_back(r.name);
    results.case_ids = store_.case_ids();
    results.raters = store_.raters();
    results.rater_agreement = rater_agreement_json();
    results.settings = {enum_name(o_.device.type()),
                        o_.batch_size,
                        o_.bins,
                        o_.bootstrap,
                        o_.seed,
                        comm_.size(),
                        o_.save_predictions,
                        o_.surface,
                        o_.surface_tolerance,
                        enum_name(layout_),
                        static_cast<int64_t>(rows_.size()),
                        std::string(enum_name(o_.regions)),
                        {},
                        o_.band_mm};
    results.empty_slice_dice = kEmptySliceDice;
    for (const auto& r : regions_) {
      if (r.surfel_tolerance_mm > 0)
        results.settings.surface_dice_tolerance.emplace_back(r.name, r.surfel_tolerance_mm);
    }
  }

  detail::BootstrapSettings bootstrap() const { return {o_.bootstrap, o_.seed}; }

  detail::ModelResult evaluate_model(const EvaluatedModel& evaluated) {
    torch::NoGradGuard no_grad;
    const int64_t cases = static_cast<int64_t>(store_.case_ids().size());
    SegmentationMetrics metrics(cases, task_.classes, regions_, o_.bins, task_.ignore_index, 1.0);
    // The same, on the pixels near the reference's boundary only (band_labels).
    SegmentationMetrics band(cases, task_.classes, regions_, o_.bins, task_.ignore_index, 1.0);
    std::optional<SoftReferenceMetrics> soft;  // against the raters' mean, where the store keeps raters
    if (store_.raters() > 0) soft.emplace(cases, task_.classes, regions_, o_.bins);
    // Surface distances and predictions need whole cases: each rank evaluates whole cases.
    detail::CaseOutputs outputs;
    outputs.surface = o_.surface;
    outputs.tolerance = o_.surface_tolerance;
    outputs.classes = task_.classes;
    outputs.ignore_index = task_.ignore_index;
    if (o_.save_predictions) {
      outputs.predictions = true;
      if (comm_.rank() == 0)
        outputs.folder = (fs::path(staged_->path()) / kPredictionsFolder / safe_file_name(evaluated.name)).string();
      outputs.value_of_class = task_.label_value_of_class();
      outputs.threads = at::get_num_threads();
    }
    std::optional<detail::CaseCollector> collector;
    if (o_.surface || o_.save_predictions) collector.emplace(store_, rows_, regions_, outputs, comm_);
    const std::vector<int64_t> mine =
        collector ? collector->rows()
                  : data::evaluation_case_rows(rows_, store_.slice_case(), comm_.rank(), comm_.size());
    const auto plan = data::evaluation_plan(mine, o_.batch_size);
    Progress progress("evaluate " + evaluated.name, static_cast<int64_t>(plan.size()), comm_.rank() == 0);
    double forward_seconds = 0;  // this rank's, in the model and its softmax
    int64_t forward_slices = 0, batches = 0;
    if (!plan.empty()) {
      data::LoaderOptions loader_options;
      loader_options.workers = o_.workers;
      loader_options.train = false;
      loader_options.augment.crop = 0;
      // With raters: the majority as the label (the paper's test protocol) and their mean.
      if (soft) loader_options.raters = data::RaterLabels::kMean;
      data::BatchLoader loader(o_.data, task_, loader_options, plan);
      while (auto batch = loader.next()) {
        const auto forward_start = std::chrono::steady_clock::now();
        const Tensor logits = evaluated.model->logits(batch->images.to(device_));
        const Tensor probs = torch::softmax(logits.to(torch::kFloat), 1).cpu();  // waits for the device
        if (++batches > 1 || plan.size() == 1) {  // the first batch sets up the kernels: not timed
          forward_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - forward_start).count();
          forward_slices += batch->images.size(0);
        }
        KDSEG_CHECK(probs.sizes() == torch::IntArrayRef({batch->images.size(0), task_.classes, batch->images.size(2),
                                                         batch->images.size(3)}),
                    evaluated.file, ": logits of shape ", probs.sizes(), " for images ", batch->images.sizes());
        std::vector<int64_t> case_of;
        for (int64_t r : batch->rows) case_of.push_back(store_.slice_case()[static_cast<size_t>(r)]);
        metrics.add(probs, batch->labels, case_of);
        band.add(probs, band_labels(batch->labels, soft ? batch->rater_soft : Tensor(), case_of), case_of);
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
    Tensor cost = torch::tensor({forward_seconds, static_cast<double>(forward_slices)}, torch::kDouble);
    dist::all_reduce_any_device(comm_, cost, dist::ReduceOp::kSum);
    Tensor state = metrics.state();
    dist::all_reduce_any_device(comm_, state, dist::ReduceOp::kSum);  // each case counted once across ranks
    metrics.set_state(state);
    Tensor band_state = band.state();
    dist::all_reduce_any_device(comm_, band_state, dist::ReduceOp::kSum);
    band.set_state(band_state);
    if (soft) {
      Tensor soft_state = soft->state();
      dist::all_reduce_any_device(comm_, soft_state, dist::ReduceOp::kSum);
      soft->set_state(soft_state);
    }
    const Tensor distances = collector ? collector->finish(comm_) : Tensor();
    comm_.barrier();
    detail::ModelResult result =
        model_result(evaluated, metrics, band, o_.surface ? distances : Tensor(), soft ? &*soft : nullptr);
    result.parameters = evaluated.model->parameters();
    const double slices = cost[1].item<double>();
    if (slices > 0) result.ms_per_slice = 1000.0 * cost[0].item<double>() / slices;
    return result;
  }

  // The labels with every pixel farther than --band-mm from the reference's boundary ignored: the
  // boundary of the raters' union where the store keeps raters (`rater_mean` [B,C,H,W], the
  // classes' shares), else of the label's foreground.
  Tensor band_labels(const Tensor& labels, const Tensor& rater_mean, const std::vector<int64_t>& case_of) const {
    Tensor out = labels.clone();
    for (int64_t b = 0; b < labels.size(0); ++b) {
      const Tensor foreground = rater_mean.defined() ? rater_mean[b][0] < 1 - 1e-6
                                                     : labels[b].ne(0).logical_and(labels[b].ne(task_.ignore_index));
      const auto mm = store_.stored_spacing(static_cast<size_t>(case_of[static_cast<size_t>(b)]));
      out[b].masked_fill_(boundary_band(foreground, mm[1], mm[2], o_.band_mm).logical_not(), task_.ignore_index);
    }
    return out;
  }

  detail::ModelResult model_result(const EvaluatedModel& evaluated, const SegmentationMetrics& metrics,
                                   const SegmentationMetrics& band, const Tensor& distances,
                                   const SoftReferenceMetrics* soft) const {
    detail::ModelResult m;
    m.name = evaluated.name;
    m.file = evaluated.file.empty() ? std::string() : fs::absolute(evaluated.file).string();
    m.file_hash = file_hash_or_empty(evaluated.file);
    m.description = evaluated.model->describe();
    m.cases = case_values(metrics, band, distances, soft);
    for (int64_t slices : m.cases.slices) m.slices += slices;
    std::vector<double> global_dice;
    for (size_t r = 0; r < regions_.size(); ++r) global_dice.push_back(metrics.global_dice(r));
    m.summary = detail::summarise(m.cases, global_dice, bootstrap());
    const SegmentationMetrics::Reliability reliability = metrics.reliability();
    m.reliability = {o_.bins, reliability.confidence, reliability.accuracy, reliability.count};
    return m;
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
