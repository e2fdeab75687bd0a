#include "eval/case_figures.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/autocast.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/frozen_model.h"
#include "data/loader.h"
#include "data/prepared_store.h"
#include "data/soft_label_cache.h"
#include "eval/figures.h"
#include "eval/report_files.h"

namespace kdseg::eval::detail {
namespace {
namespace fs = std::filesystem;
using torch::Tensor;

constexpr double kPanelMillimetresToPixels = 240;  // the longer side of a panel, in pixels

struct Pick {
  std::string region_name;
  size_t region = 0;
  std::string pick;  // worst | median | best | asked
  std::string case_id;
};

// Per region: the worst, median and best case by the first model's Dice (each case once per
// region), then the asked ones.
std::vector<Pick> pick_cases(const FigureInputs& in, const CaseValues& first_model) {
  std::vector<Pick> picks;
  for (size_t r = 0; r < in.regions.size(); ++r) {
    const std::string& name = in.regions[r].name;
    std::vector<std::pair<double, std::string>> ranked;
    for (size_t c = 0; c < first_model.slices.size(); ++c) {
      const double dice = first_model.dice[r][c];
      if (first_model.evaluated(c) && std::isfinite(dice)) ranked.emplace_back(dice, in.store->case_ids()[c]);
    }
    std::sort(ranked.begin(), ranked.end());
    std::vector<std::string> shown;
    const auto add = [&](const char* pick, size_t at) {
      if (at >= ranked.size() || std::count(shown.begin(), shown.end(), ranked[at].second) > 0) return;
      shown.push_back(ranked[at].second);
      picks.push_back({name, r, pick, ranked[at].second});
    };
    add("worst", 0);
    if (!ranked.empty()) add("median", (ranked.size() - 1) / 2);
    if (!ranked.empty()) add("best", ranked.size() - 1);
    for (const std::string& id : in.show_cases) picks.push_back({name, r, "asked", id});
  }
  return picks;
}

// The slice of `case_id` (among the evaluated rows) where the reference region is largest, as
// the loader gives it: image [1,H,W], label [H,W], raters' mean [C,H,W] or undefined.
struct Slice {
  int64_t row = -1;
  Tensor image, label, rater_mean;
};

Slice largest_slice(const FigureInputs& in, const std::string& case_id, const DiceRegion& region) {
  const auto& ids = in.store->case_ids();
  const auto found = std::find(ids.begin(), ids.end(), case_id);
  KDSEG_CHECK(found != ids.end(), in.store_path, ": --show-case ", case_id, " is not a case of the store");
  const int32_t case_row = static_cast<int32_t>(found - ids.begin());
  std::vector<int64_t> rows;
  for (int64_t row : in.rows) {
    if (in.store->slice_case()[static_cast<size_t>(row)] == case_row) rows.push_back(row);
  }
  KDSEG_CHECK(!rows.empty(), in.store_path, ": --show-case ", case_id, " has no slice in the evaluated fold");
  data::LoaderOptions lo;
  lo.workers = 1;
  lo.train = false;
  lo.augment.crop = 0;
  if (in.store->raters() > 0) lo.raters = data::RaterLabels::kMean;
  data::BatchLoader loader(in.store_path, in.task, lo, data::evaluation_plan(rows, 8));
  Slice best;
  int64_t best_area = -1;
  const Tensor classes = torch::tensor(region.classes, torch::kLong);
  while (auto batch = loader.next()) {
    for (int64_t i = 0; i < batch->images.size(0); ++i) {
      const int64_t area = torch::isin(batch->labels[i], classes).sum().item<int64_t>();
      if (area <= best_area) continue;
      best_area = area;
      best.row = batch->rows[static_cast<size_t>(i)];
      best.image = batch->images[i];
      best.label = batch->labels[i];
      best.rater_mean = batch->rater_soft.defined() ? batch->rater_soft[i] : Tensor();
    }
  }
  return best;
}

// A file name for the case id (QUBIQ ids hold slashes).
std::string file_stem(const std::string& text) {
  std::string out;
  for (char c : text) out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '_';
  return out;
}

// The panels of one model: its contour over the reference's, its region probability, its entropy.
struct Drawing {
  std::array<double, 2> spacing{};
  double pixels_per_mm = 1;
  Tensor grey;  // [X,Y,3] the CT

  Tensor mask(const Tensor& m) const {
    return panel(m.to(torch::kByte).unsqueeze(-1).expand({-1, -1, 3}).contiguous(), spacing, pixels_per_mm)
        .select(2, 0)
        .to(torch::kBool);
  }
  Tensor with_contours(Tensor rgb_panel, const Tensor& reference, const Tensor* predicted, const Colour& colour) const {
    if (predicted) paint(rgb_panel, contour(mask(*predicted)), colour);
    paint(rgb_panel, contour(mask(reference)), kReferenceColour);
    return rgb_panel;
  }
};

}  // namespace

std::vector<CaseFigure> write_case_figures(const FigureInputs& in, const std::vector<ModelResult>& results,
                                           const std::string& folder) {
  torch::NoGradGuard no_grad;
  std::vector<CaseFigure> figures;
  if (results.empty()) return figures;
  fs::create_directories(fs::path(folder) / kFiguresFolder);
  const auto& models = *in.models;
  for (const Pick& pick : pick_cases(in, results.at(0).cases)) {
    const DiceRegion& region = in.regions[pick.region];
    const Slice slice = largest_slice(in, pick.case_id, region);
    const size_t case_row = static_cast<size_t>(in.store->slice_case()[static_cast<size_t>(slice.row)]);
    // In-plane spacing of the store's grid: the CT's, scaled by the resize.
    const auto mm = data::voxel_spacing(in.store->case_affines()[case_row]);
    const auto& shape = in.store->case_shapes()[case_row];
    Drawing d;
    d.spacing = {mm[0] * static_cast<double>(shape[0]) / static_cast<double>(slice.label.size(0)),
                 mm[1] * static_cast<double>(shape[1]) / static_cast<double>(slice.label.size(1))};
    d.pixels_per_mm =
        kPanelMillimetresToPixels / std::max(slice.label.size(0) * d.spacing[0], slice.label.size(1) * d.spacing[1]);
    d.grey = grey(slice.image[0]);
    const Tensor classes = torch::tensor(region.classes, torch::kLong);
    const Tensor reference = torch::isin(slice.label, classes);
    // Column 0: the reference, and below it the soft label of the region a student learnt from.
    std::vector<std::vector<Tensor>> grid(3);
    grid[0].push_back(d.with_contours(panel(d.grey, d.spacing, d.pixels_per_mm), reference, nullptr, {}));
    Tensor soft;
    if (in.cache && in.cache->cache_row(slice.row) >= 0) {
      soft = in.cache->probabilities(slice.row, 0);
    } else if (slice.rater_mean.defined()) {
      soft = slice.rater_mean;
    }
    grid[1].push_back(soft.defined() ? d.with_contours(panel(colour_map(soft.index_select(0, classes).sum(0)),
                                                             d.spacing, d.pixels_per_mm),
                                                       reference, nullptr, {})
                                     : Tensor());
    grid[2].push_back(Tensor());
    CaseFigure figure{
        region.name,
        pick.pick,
        pick.case_id,
        in.store->slice_index()[static_cast<size_t>(slice.row)],
        std::string(kFiguresFolder) + "/" + file_stem(region.name) + "-" + pick.pick + "-" +
            bounded_file_stem(file_stem(pick.case_id), pick.case_id) + ".png",
        {"reference"},
        {"CT: reference contour (white) and the model's", "foreground probability", "entropy (normalised)"},
        {}};
    for (size_t m = 0; m < models.size(); ++m) {
      Tensor logits;
      {
        CudaAutocast autocast(in.device.is_cuda());
        logits = models[m].model->logits(slice.image.unsqueeze(0).to(in.device)).to(torch::kFloat).cpu()[0];
      }
      const Tensor p = torch::softmax(logits, 0);
      const Tensor predicted = torch::isin(p.argmax(0), classes);
      const Tensor entropy = -(p * p.clamp_min(1e-12).log()).sum(0) / std::log(static_cast<double>(p.size(0)));
      const Colour colour = model_colour(m);
      grid[0].push_back(d.with_contours(panel(d.grey, d.spacing, d.pixels_per_mm), reference, &predicted, colour));
      grid[1].push_back(d.with_contours(
          panel(colour_map(p.index_select(0, classes).sum(0)), d.spacing, d.pixels_per_mm), reference, nullptr, {}));
      grid[2].push_back(panel(colour_map(entropy), d.spacing, d.pixels_per_mm));
      figure.columns.push_back(models[m].name);
      const CaseValues& cases = results.at(m).cases;
      if (cases.evaluated(case_row)) figure.dice.emplace_back(models[m].name, cases.dice[pick.region][case_row]);
    }
    write_file_atomic((fs::path(folder) / figure.file).string(), encode_png(tile(grid)));
    figures.push_back(std::move(figure));
  }
  return figures;
}

}  // namespace kdseg::eval::detail
