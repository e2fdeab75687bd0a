// `kdseg evaluate` on a real store: the report's structure and numbers for models with known
// outputs, surface distances of each case, predictions written in the source volumes'
// geometry, and bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/frozen_model.h"
#include "core/models/unet.h"
#include "core/surface_distance.h"
#include "data/nifti.h"
#include "data/prepared_store.h"
#include "dist/communicator.h"
#include "eval/evaluate.h"
#include "teacher/model_loader.h"
#include "tests/data/temp_dir.h"
#include "tests/eval/fixed_models.h"

namespace {
namespace fs = std::filesystem;
using nlohmann::json;

using kdseg::test::BoxModel;
using kdseg::test::ConstantModel;

class EvaluateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kdseg::test::write_small_dataset(dir.file("raw"), 4, 24, 8);
    kdseg::data::PrepareOptions p;
    p.input = dir.file("raw");
    p.output = dir.file("p.h5");
    p.size = 32;  // resized: predictions must be resized back
    p.folds = 2;
    p.slices = kdseg::data::SliceSelection::kOrgan;
    kdseg::data::prepare_store(p);
    comm = kdseg::dist::make_communicator({kdseg::dist::Backend::kLocal});
  }
  kdseg::eval::EvaluateOptions options(const std::string& output) const {
    kdseg::eval::EvaluateOptions o;
    o.data = dir.file("p.h5");
    o.output = dir.file(output);
    o.fold = 1;
    o.bootstrap = 200;
    return o;
  }
  kdseg::test::TempDir dir;
  std::unique_ptr<kdseg::dist::Communicator> comm;
};

TEST_F(EvaluateTest, ReportOfModelsWithKnownOutputs) {
  auto o = options("report");
  o.models = {{"background", "", std::make_shared<ConstantModel>(2, 0, 0.9)},
              {"tumour", "", std::make_shared<ConstantModel>(2, 1, 0.6)}};
  const json report = kdseg::eval::evaluate(o, *comm);
  for (const char* file : {"report.json", "per_case.csv", "report.html"})
    EXPECT_TRUE(fs::exists(dir.file("report/") + file));
  EXPECT_EQ(report.at("regions"), json::array({"tumor"}));
  const kdseg::data::PreparedStore store(dir.file("p.h5"));
  int64_t fold_slices = 0;
  for (int32_t c : store.slice_case()) fold_slices += store.case_fold()[static_cast<size_t>(c)] == 1;
  const json& background = report.at("models")[0];
  const json& tumour = report.at("models")[1];
  EXPECT_EQ(background.at("slices").get<int64_t>(), fold_slices);
  for (const auto& c : background.at("cases")) {
    // Never predicting tumour: Dice 0 on every case with tumour, and calibration measured against
    // a 0.9 forecast of background.
    EXPECT_EQ(c.at("dice").at("tumor").get<double>(), 0.0) << c.dump();
  }
  for (const auto& c : tumour.at("cases")) {
    EXPECT_GT(c.at("dice").at("tumor").get<double>(), 0.0);
    EXPECT_LT(c.at("dice").at("tumor").get<double>(), 1.0);
  }
  // With one confidence everywhere the reliability diagram has one filled bin: the forecast
  // 0.9 against the fraction of background voxels.
  const json& rel = background.at("reliability");
  int filled = 0;
  for (size_t b = 0; b < 10; ++b) {
    if (rel.at("count")[b].get<int64_t>() == 0) continue;
    ++filled;
    EXPECT_NEAR(rel.at("confidence")[b].get<double>(), 0.9, 1e-6);
    EXPECT_GT(rel.at("accuracy")[b].get<double>(), 0.5);
  }
  EXPECT_EQ(filled, 1);
  EXPECT_GT(background.at("summary").at("ece").at("mean").get<double>(), 0.0);
  // ECE per slice, averaged over each case's slices, is reported too.
  EXPECT_GE(background.at("summary").at("slice_ece").get<double>(), 0.0);
  const json& ci = tumour.at("summary").at("dice").at("tumor").at("ci95");
  const double mean = tumour.at("summary").at("dice").at("tumor").at("mean").get<double>();
  EXPECT_LE(ci[0].get<double>(), mean);
  EXPECT_GE(ci[1].get<double>(), mean);
  // Closed forms from the store's labels: per case, G tumour voxels of N, so a fraction
  // f = 1 - G/N of background. Always tumour: Dice 2G / (G + N). Always background at 0.9:
  // ECE |0.9 - f|, NLL -(f log 0.9 + (1 - f) log 0.1), Brier 0.02 f + 1.62 (1 - f).
  std::map<std::string, std::pair<double, double>> counts;  // case id -> (G, N)
  for (int64_t row : store.rows_in_folds({1})) {
    const std::string& id = store.case_ids()[static_cast<size_t>(store.slice_case()[static_cast<size_t>(row)])];
    const at::Tensor label = store.label(row);
    counts[id].first += static_cast<double>((label == 2).sum().item<int64_t>());  // LiTS: 2 is tumour
    counts[id].second += static_cast<double>(label.numel());
  }
  ASSERT_EQ(counts.size(), tumour.at("cases").size());
  for (size_t k = 0; k < counts.size(); ++k) {
    const json& t = tumour.at("cases")[k];
    const json& b = background.at("cases")[k];
    ASSERT_EQ(t.at("id"), b.at("id"));
    const auto [g, n] = counts.at(t.at("id").get<std::string>());
    const double f = 1 - g / n;
    EXPECT_NEAR(t.at("dice").at("tumor").get<double>(), 2 * g / (g + n), 1e-9) << t.dump();
    EXPECT_NEAR(b.at("ece").get<double>(), std::abs(0.9 - f), 1e-6) << b.dump();
    EXPECT_NEAR(b.at("nll").get<double>(), -(f * std::log(0.9) + (1 - f) * std::log(0.1)), 1e-5) << b.dump();
    EXPECT_NEAR(b.at("brier").get<double>(), 0.02 * f + 1.62 * (1 - f), 1e-5) << b.dump();
  }
  // Paired against the first model: its Dice is 0 on every case, so the difference is the
  // tumour model's Dice; with every difference positive, the exact test gives 2 / 2^n.
  const json& paired = tumour.at("paired").at("dice").at("tumor");
  const auto n = static_cast<int64_t>(tumour.at("cases").size());
  EXPECT_EQ(tumour.at("paired").at("reference"), "background");
  EXPECT_EQ(paired.at("cases").get<int64_t>(), n);
  EXPECT_NEAR(paired.at("mean").get<double>(), tumour.at("summary").at("dice").at("tumor").at("mean").get<double>(),
              1e-12);
  EXPECT_NEAR(paired.at("p_value").get<double>(), 2.0 / static_cast<double>(int64_t{1} << n), 1e-12);
  EXPECT_EQ(paired.at("p_holm").get<double>(), paired.at("p_value").get<double>());  // the only comparison
  EXPECT_FALSE(background.contains("paired"));
  // The CSV has a line per model and case.
  std::ifstream csv(dir.file("report/per_case.csv"));
  const auto lines = std::count(std::istreambuf_iterator<char>(csv), std::istreambuf_iterator<char>(), '\n');
  EXPECT_EQ(lines, 1 + 2 * static_cast<int64_t>(background.at("cases").size()));
}

// The same box in every slice, around the fold's tumours, against each case's tumour labels
// stacked at their slice positions, on the store's grid: the store resized 24x24 slices to
// 32x32, so the in-plane spacing shrinks by 24/32.
TEST_F(EvaluateTest, SurfaceDistancesOfEachCase) {
  const kdseg::data::PreparedStore store(dir.file("p.h5"));
  const int64_t h = store.height(), w = store.width();
  at::Tensor any_tumour = torch::zeros({h, w}, torch::kBool);
  for (int64_t row : store.rows_in_folds({1})) any_tumour.logical_or_(store.label(row) == 2);  // LiTS: 2 is tumour
  const at::Tensor rows = any_tumour.any(1).nonzero(), columns = any_tumour.any(0).nonzero();
  ASSERT_GT(rows.numel(), 0);
  const int64_t top = std::max<int64_t>(rows.min().item<int64_t>() - 1, 0),
                bottom = std::min(rows.max().item<int64_t>() + 2, h);
  const int64_t left = std::max<int64_t>(columns.min().item<int64_t>() - 1, 0),
                right = std::min(columns.max().item<int64_t>() + 2, w);
  auto o = options("surface");
  o.surface_tolerance = 1.5;
  o.models = {{"box", "", std::make_shared<BoxModel>(top, bottom, left, right)}};
  const json report = kdseg::eval::evaluate(o, *comm);
  EXPECT_EQ(report.at("options").at("surface_tolerance_mm").get<double>(), 1.5);
  std::map<std::string, const json*> reported;
  for (const json& c : report.at("models")[0].at("cases")) reported[c.at("id").get<std::string>()] = &c;
  int checked = 0, overlapping = 0;
  for (size_t c = 0; c < store.case_ids().size(); ++c) {
    if (store.case_fold()[c] != 1) continue;
    std::map<int64_t, int64_t> row_at;  // slice index -> row
    for (int64_t r = 0; r < store.slices(); ++r) {
      if (store.slice_case()[static_cast<size_t>(r)] == static_cast<int32_t>(c))
        row_at[store.slice_index()[static_cast<size_t>(r)]] = r;
    }
    const int64_t first = row_at.begin()->first, depth = row_at.rbegin()->first - first + 1;
    at::Tensor box = torch::zeros({depth, h, w}, torch::kByte), tumour = torch::zeros_like(box);
    for (const auto& [k, r] : row_at) {
      box[k - first].narrow(0, top, bottom - top).narrow(1, left, right - left).fill_(1);
      tumour[k - first].copy_(store.label(r) == 2);  // LiTS: 2 is tumour
    }
    const auto mm = kdseg::data::voxel_spacing(store.case_affines()[c]);
    const auto shape = store.case_shapes()[c];
    ASSERT_EQ(shape[0], 24);
    const std::array<double, 3> spacing = {mm[2], mm[0] * 24.0 / static_cast<double>(h),
                                           mm[1] * 24.0 / static_cast<double>(w)};
    const kdseg::SurfaceMetrics want =
        kdseg::surface_metrics(box.data_ptr<uint8_t>(), tumour.data_ptr<uint8_t>(), {depth, h, w}, spacing, 1.5);
    const json& got = *reported.at(store.case_ids()[c]);
    EXPECT_NEAR(got.at("hd95").at("tumor").get<double>(), want.hd95, 1e-9) << got.dump();
    EXPECT_NEAR(got.at("assd").at("tumor").get<double>(), want.assd, 1e-9) << got.dump();
    EXPECT_NEAR(got.at("nsd").at("tumor").get<double>(), want.nsd, 1e-12) << got.dump();
    overlapping += want.nsd > 0 && want.nsd < 1;
    ++checked;
  }
  EXPECT_GT(checked, 0);
  EXPECT_GT(overlapping, 0);  // the box meets the tumours: not only the empty-mask conventions
  const json& summary = report.at("models")[0].at("summary").at("surface").at("tumor");
  for (const char* metric : {"hd95", "assd", "nsd"}) {
    const double mean = summary.at(metric).at("mean").get<double>();
    EXPECT_LE(summary.at(metric).at("ci95")[0].get<double>(), mean) << metric;
    EXPECT_GE(summary.at(metric).at("ci95")[1].get<double>(), mean) << metric;
  }
  // The HTML has the table, the CSV the columns; --no-surface leaves them out.
  std::ifstream html(dir.file("surface/report.html")), csv(dir.file("surface/per_case.csv"));
  const std::string page((std::istreambuf_iterator<char>(html)), std::istreambuf_iterator<char>());
  std::string header;
  std::getline(csv, header);
  EXPECT_NE(page.find("<table id=\"surface\">"), std::string::npos);
  EXPECT_NE(header.find("tumor_hd95,tumor_assd,tumor_nsd"), std::string::npos) << header;
  // Ignored voxels count neither way: with everything but tumour ignored, a model that predicts
  // tumour everywhere agrees with the labels wherever they count.
  auto everything = options("surface-ignored");
  everything.task = kdseg::data::parse_task("map:0:ignore,1:ignore,2:1");
  everything.models = {{"everything", "", std::make_shared<ConstantModel>(2, 1, 0.9)}};
  const json ignored_report = kdseg::eval::evaluate(everything, *comm);
  for (const json& c : ignored_report.at("models")[0].at("cases")) {
    EXPECT_EQ(c.at("hd95").at("tumor").get<double>(), 0.0) << c.dump();
    EXPECT_EQ(c.at("nsd").at("tumor").get<double>(), 1.0) << c.dump();
  }
  o.surface = false;
  o.output = dir.file("no-surface");
  const json without = kdseg::eval::evaluate(o, *comm);
  EXPECT_FALSE(without.at("models")[0].at("summary").contains("surface"));
  EXPECT_FALSE(without.at("models")[0].at("cases")[0].contains("hd95"));
  o.surface = true;
  o.surface_tolerance = 0;
  EXPECT_THROW(kdseg::eval::evaluate(o, *comm), kdseg::Error);
}

TEST_F(EvaluateTest, PredictionsLandInTheSourceGeometry) {
  auto o = options("with-predictions");
  o.save_predictions = true;
  o.models = {{"everything", "", std::make_shared<ConstantModel>(2, 1, 0.75)}};
  kdseg::eval::evaluate(o, *comm);
  const kdseg::data::PreparedStore store(dir.file("p.h5"));
  int checked = 0;
  for (size_t c = 0; c < store.case_ids().size(); ++c) {
    const std::string id = store.case_ids()[c];
    const std::string mask_file = dir.file("with-predictions/predictions/everything/" + id + ".nii.gz");
    if (store.case_fold()[c] != 1) {
      EXPECT_FALSE(fs::exists(mask_file)) << id;
      continue;
    }
    const kdseg::data::Volume source = kdseg::data::read_nifti(store.case_image_files()[c]);
    const kdseg::data::Volume mask = kdseg::data::read_nifti(mask_file);
    const kdseg::data::Volume probs =
        kdseg::data::read_nifti(dir.file("with-predictions/predictions/everything/" + id + "_probs.nii.gz"));
    EXPECT_EQ(mask.voxels.sizes(), source.voxels.sizes()) << id;
    for (size_t i = 0; i < 16; ++i) EXPECT_NEAR(mask.affine[i], source.affine[i], 1e-4) << id;
    // Tumour (LiTS label 2) on exactly the evaluated slices, found back in canonical order.
    const at::Tensor canonical = kdseg::data::to_canonical(mask).voxels;
    std::set<int64_t> expected, found;
    for (int64_t r = 0; r < store.slices(); ++r) {
      if (store.slice_case()[static_cast<size_t>(r)] == static_cast<int32_t>(c))
        expected.insert(store.slice_index()[static_cast<size_t>(r)]);
    }
    for (int64_t k = 0; k < canonical.size(2); ++k) {
      const at::Tensor slice = canonical.select(2, k);
      if ((slice == 2).all().item<bool>()) found.insert(k);
      else EXPECT_TRUE((slice == 0).all().item<bool>()) << id << " slice " << k;
    }
    EXPECT_EQ(found, expected) << id;
    EXPECT_NEAR(probs.voxels.max().item<double>(), 0.75, 1e-5);
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

TEST_F(EvaluateTest, BadInputIsAClearError) {
  auto o = options("bad");
  o.models = {{"three", "three.pt", std::make_shared<ConstantModel>(3, 0, 0.9)}};
  try {
    kdseg::eval::evaluate(o, *comm);
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("three.pt: the model predicts 3 classes but task 'tumor' has 2"),
              std::string::npos)
        << e.what();
  }
  o.models = {{"m", "", std::make_shared<ConstantModel>(2, 0, 0.9)}};
  o.fold = 7;
  try {
    kdseg::eval::evaluate(o, *comm);
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--fold 7 does not exist; the store has 2 folds"), std::string::npos)
        << e.what();
  }
  o.fold = 1;
  o.models.push_back(o.models[0]);
  EXPECT_THROW(kdseg::eval::evaluate(o, *comm), kdseg::Error);  // two models named "m"
  // A checkpoint whose configuration names another architecture than its weights.
  kdseg::models::UNet net(kdseg::models::UNetOptions().width(0.125));
  torch::serialize::OutputArchive out, weights;
  net->save(weights);
  out.write("model", weights);
  out.write("config", c10::IValue(json{{"arch", "unet-resnet50d"}, {"width", 0.125}}.dump()));
  out.write("classes", torch::tensor(int64_t{2}));
  out.write("format", c10::IValue(std::string("kdseg checkpoint 1 (test)")));
  fs::create_directories(dir.file("net"));
  out.save_to(dir.file("net/renamed.pt"));
  try {
    kdseg::teacher::load_model(dir.file("net/renamed.pt"));
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("renamed.pt: its weights do not fit unet-resnet50d"), std::string::npos)
        << e.what();
  }
}

// --regions kits23 on a KiTS23 store: KiTS23's HEC regions, and each case's surfel surface Dice
// at the region's tolerance against the label stacked at its slice positions (as
// SurfaceDistancesOfEachCase) for a model that calls every pixel kidney.
TEST(EvaluateKits23, HecRegionsWithSurfelSurfaceDice) {
  kdseg::test::TempDir dir;
  kdseg::test::write_small_dataset(dir.file("raw"), 4, 24, 8, kdseg::data::Layout::kKits23);
  kdseg::data::PrepareOptions p;
  p.input = dir.file("raw");
  p.output = dir.file("p.h5");
  p.size = 24;
  p.folds = 1;
  p.slices = kdseg::data::SliceSelection::kOrgan;
  kdseg::data::prepare_store(p);
  auto comm = kdseg::dist::make_communicator({kdseg::dist::Backend::kLocal});
  kdseg::eval::EvaluateOptions o;
  o.data = dir.file("p.h5");
  o.output = dir.file("report");
  o.bootstrap = 50;
  o.regions = kdseg::data::RegionSet::kKits23;
  // The paper's tumour-vs-rest task cannot tell KiTS23's regions apart: an error naming the task.
  o.models = {{"tumour", "", std::make_shared<ConstantModel>(2, 1, 0.9)}};
  try {
    kdseg::eval::evaluate(o, *comm);
    FAIL() << "--regions kits23 accepted the tumor task";
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("task tumor"), std::string::npos) << e.what();
  }
  o.task = kdseg::data::parse_task("map:0:0,1:1,2:2,3:3");
  o.models = {{"kidney", "", std::make_shared<ConstantModel>(4, 1, 0.9)}};
  const json report = kdseg::eval::evaluate(o, *comm);
  EXPECT_EQ(report.at("regions"), json::array({"kidney_and_mass", "mass", "tumor"}));
  EXPECT_EQ(report.at("options").at("regions"), "kits23");
  const json& tolerance = report.at("options").at("surface_dice_tolerance_mm");
  EXPECT_EQ(tolerance.at("kidney_and_mass").get<double>(), 1.0330772532390826);
  EXPECT_EQ(tolerance.at("mass").get<double>(), 1.1328796488598762);
  EXPECT_EQ(tolerance.at("tumor").get<double>(), 1.1498198361434828);
  const kdseg::data::PreparedStore store(dir.file("p.h5"));
  const int64_t h = store.height(), w = store.width();
  int checked = 0;
  for (const json& c : report.at("models")[0].at("cases")) {
    const auto it = std::find(store.case_ids().begin(), store.case_ids().end(), c.at("id").get<std::string>());
    const auto index = static_cast<size_t>(it - store.case_ids().begin());
    std::map<int64_t, int64_t> row_at;  // slice index -> row
    for (int64_t r = 0; r < store.slices(); ++r) {
      if (store.slice_case()[static_cast<size_t>(r)] == static_cast<int32_t>(index))
        row_at[store.slice_index()[static_cast<size_t>(r)]] = r;
    }
    const int64_t first = row_at.begin()->first, depth = row_at.rbegin()->first - first + 1;
    at::Tensor everywhere = torch::zeros({depth, h, w}, torch::kByte), kidney = torch::zeros_like(everywhere);
    bool mass = false, tumour = false;
    for (const auto& [k, r] : row_at) {
      everywhere[k - first].fill_(1);
      const at::Tensor label = store.label(r);
      kidney[k - first].copy_(label > 0);
      mass = mass || (label >= 2).any().item<bool>();
      tumour = tumour || (label == 2).any().item<bool>();
    }
    const auto mm = kdseg::data::voxel_spacing(store.case_affines()[index]);
    const auto shape = store.case_shapes()[index];
    const std::array<double, 3> spacing = {mm[2], mm[0] * static_cast<double>(shape[0]) / static_cast<double>(h),
                                           mm[1] * static_cast<double>(shape[1]) / static_cast<double>(w)};
    const double want = kdseg::surfel_surface_dice(everywhere.data_ptr<uint8_t>(), kidney.data_ptr<uint8_t>(),
                                                   {depth, h, w}, spacing, 1.0330772532390826);
    EXPECT_NEAR(c.at("surface_dice").at("kidney_and_mass").get<double>(), want, 1e-12) << c.dump();
    EXPECT_GT(want, 0.0);
    EXPECT_LT(want, 1.0);
    // No mass is predicted: 0 where the case has one, 1 where it has none (as KiTS23 scores).
    EXPECT_EQ(c.at("surface_dice").at("mass").get<double>(), mass ? 0.0 : 1.0) << c.dump();
    EXPECT_EQ(c.at("surface_dice").at("tumor").get<double>(), tumour ? 0.0 : 1.0) << c.dump();
    EXPECT_TRUE(c.at("nsd").contains("kidney_and_mass"));  // the voxel-centre NSD stays beside it
    ++checked;
  }
  EXPECT_EQ(checked, 4);
  const json& summary = report.at("models")[0].at("summary").at("surface").at("kidney_and_mass");
  EXPECT_TRUE(summary.at("surface_dice").contains("mean"));
  std::ifstream csv(dir.file("report/per_case.csv"));
  std::string header;
  std::getline(csv, header);
  EXPECT_NE(header.find("kidney_and_mass_nsd,kidney_and_mass_surface_dice"), std::string::npos) << header;
  // report.html's surface table shows it beside NSD.
  std::ifstream html(dir.file("report/report.html"));
  const std::string page((std::istreambuf_iterator<char>(html)), std::istreambuf_iterator<char>());
  EXPECT_NE(page.find("surface Dice (surfels)"), std::string::npos);
}

}  // namespace
