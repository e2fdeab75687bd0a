// The statistics of `kdseg evaluate`'s report and its rendering into HTML and CSV.
#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <regex>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_util.h"
#include "core/random.h"
#include "eval/report.h"
#include "eval/statistics.h"

namespace {
namespace fs = std::filesystem;
namespace eval = kdseg::eval;
namespace report = kdseg::eval::report;
using json = nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A fresh folder under the system temp folder, removed when the object goes away.
class ScratchDir {
 public:
  ScratchDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("kdseg-report-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() { fs::remove_all(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  fs::path path() const { return path_; }

 private:
  fs::path path_;
};

std::vector<double> uniform_values(size_t n, uint64_t seed) {
  kdseg::Rng rng(seed);
  std::vector<double> values(n);
  for (double& v : values) v = rng.uniform();
  return values;
}

// A model of the report schema with one region, "tumor"; cases get Dice dice[i] and ECE ece[i].
json make_model(const std::string& name, const std::vector<double>& dice, double ece) {
  json cases = json::array();
  for (size_t i = 0; i < dice.size(); ++i) {
    cases.push_back({{"id", "case_" + std::to_string(i)},
                     {"slices", 10},
                     {"dice", {{"tumor", dice[i]}}},
                     {"slice_dice", {{"tumor", dice[i]}}},
                     {"ece", ece},
                     {"classwise_ece", ece / 2},
                     {"nll", 4 * ece},
                     {"brier", 2 * ece}});
  }
  const double mean = eval::mean_ignoring_nan(dice);
  const eval::Interval ci = eval::bootstrap_ci(dice);
  return {{"name", name},
          {"file", "/runs/" + name + ".pt"},
          {"file_hash", "0123abcd"},
          {"description", "UNet resnet18d"},
          {"slices", 10 * dice.size()},
          {"summary",
           {{"dice",
             {{"tumor",
               {{"mean", mean},
                {"ci95", {ci.low, ci.high}},
                {"global", mean + 0.01},
                {"worst5", eval::worst_fraction_mean(dice)}}}}},
            {"slice_dice", {{"tumor", mean}}},
            {"ece", {{"mean", ece}, {"ci95", {ece / 2, ece * 2}}}},
            {"classwise_ece", ece / 2},
            {"nll", 4 * ece},
            {"brier", 2 * ece}}},
          {"reliability",
           {{"bins", 10},
            {"confidence", {nullptr, nullptr, nullptr, nullptr, nullptr, 0.55, 0.65, 0.75, 0.85, 0.97}},
            {"accuracy", {nullptr, nullptr, nullptr, nullptr, nullptr, 0.5, 0.6, 0.8, 0.9, 0.99}},
            {"count", {0, 0, 0, 0, 0, 10, 20, 40, 400, 100000}}}},
          {"cases", cases}};
}

json make_report(std::vector<json> models) {
  return {{"format", "kdseg report 1"},
          {"tool_version", "0.1.0"},
          {"created", "2026-11-26T17:00:00Z"},
          {"data", "/data/prepared.h5"},
          {"store_hash", "ab12"},
          {"fold", 0},
          {"task", {{"name", "tumor"}, {"classes", 2}, {"class_names", {"background", "tumor"}}}},
          {"regions", {"tumor"}},
          {"options", {{"device", "cpu"}, {"bins", 10}}},
          {"empty_slice_dice", 1.0},
          {"models", std::move(models)}};
}

json two_model_report() {
  return make_report({make_model("teacher", {0.9, 0.7, 0.8}, 0.02), make_model("student", {0.6, 0.5, 0.7}, 0.03)});
}

// The text between the start of the element that `open` begins and the next `close`.
std::string element(const std::string& html, const std::string& open, const std::string& close) {
  const size_t begin = html.find(open);
  if (begin == std::string::npos) return {};
  const size_t end = html.find(close, begin);
  return end == std::string::npos ? std::string() : html.substr(begin, end + close.size() - begin);
}

struct Cell {
  std::string classes;
  std::string text;  // the inner HTML
};

// The <td> cells of the row of table#comparison whose first cell names `model`.
std::vector<Cell> comparison_row(const std::string& html, const std::string& model) {
  const std::string table = element(html, "<table id=\"comparison\">", "</table>");
  const std::regex row_pattern("<tr><td class=\"model\">(.*?)</tr>");
  const std::regex cell_pattern("<td class=\"(num[^\"]*)\"[^>]*>(.*?)</td>");  // the numbers, not the model
  for (auto row = std::sregex_iterator(table.begin(), table.end(), row_pattern); row != std::sregex_iterator(); ++row) {
    const std::string text = (*row)[0];
    if (text.find("</span>" + model + "</td>") == std::string::npos) continue;
    std::vector<Cell> cells;
    for (auto c = std::sregex_iterator(text.begin(), text.end(), cell_pattern); c != std::sregex_iterator(); ++c) {
      cells.push_back({(*c)[1], (*c)[2]});
    }
    return cells;
  }
  return {};
}

bool marked_best(const std::vector<Cell>& cells, const std::string& value) {
  for (const Cell& cell : cells) {
    if (cell.text.find(">" + value + "<") != std::string::npos) {
      return cell.classes.find("best") != std::string::npos;
    }
  }
  ADD_FAILURE() << "no cell shows " << value;
  return false;
}

size_t count_of(const std::string& text, const std::string& part) {
  size_t count = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++count;
  return count;
}

// ---- statistics ----------------------------------------------------------------------------------

TEST(Report, MeanIgnoresNonFiniteValues) {
  EXPECT_DOUBLE_EQ(eval::mean_ignoring_nan({kNaN, 1.0, 3.0, INFINITY}), 2.0);
  EXPECT_TRUE(std::isnan(eval::mean_ignoring_nan({kNaN, kNaN})));
  EXPECT_TRUE(std::isnan(eval::mean_ignoring_nan({})));
}

TEST(Report, BootstrapIsDeterministicForASeedAndContainsTheMean) {
  const std::vector<double> values = uniform_values(20, 1);
  const eval::Interval a = eval::bootstrap_ci(values, 2000, 0.95, 7);
  const eval::Interval b = eval::bootstrap_ci(values, 2000, 0.95, 7);
  EXPECT_EQ(a.low, b.low);
  EXPECT_EQ(a.high, b.high);
  const double mean = eval::mean_ignoring_nan(values);
  EXPECT_LT(a.low, mean);
  EXPECT_GT(a.high, mean);
  // Another seed draws other resamples: the same interval to the last bit would mean the seed is ignored.
  const eval::Interval other = eval::bootstrap_ci(values, 2000, 0.95, 8);
  EXPECT_TRUE(other.low != a.low || other.high != a.high);
  // A lower level gives a narrower interval inside the wider one (same resamples).
  const eval::Interval narrow = eval::bootstrap_ci(values, 2000, 0.5, 7);
  EXPECT_GT(narrow.low, a.low);
  EXPECT_LT(narrow.high, a.high);
}

TEST(Report, BootstrapNarrowsWithMoreCasesAsTheStandardErrorDoes) {
  // Independent reference: the normal approximation 2 * 1.96 * sd / sqrt(n). The tolerance, 15%,
  // covers the Monte Carlo error of 2000 resamples (a few percent) and the skew of small samples.
  const auto expected_width = [](const std::vector<double>& v) {
    const double mean = eval::mean_ignoring_nan(v);
    double squares = 0;
    for (const double x : v) squares += (x - mean) * (x - mean);
    return 2 * 1.959964 * std::sqrt(squares / static_cast<double>(v.size())) / std::sqrt(static_cast<double>(v.size()));
  };
  double previous = INFINITY;
  for (const size_t n : {10, 50, 250}) {
    const std::vector<double> values = uniform_values(n, 2);
    const eval::Interval ci = eval::bootstrap_ci(values);
    const double width = ci.high - ci.low;
    EXPECT_NEAR(width, expected_width(values), 0.15 * expected_width(values)) << n << " cases";
    EXPECT_LT(width, previous) << n << " cases";
    previous = width;
  }
}

TEST(Report, BootstrapDropsNanAndHandlesFewValues) {
  const eval::Interval none = eval::bootstrap_ci({});
  EXPECT_TRUE(std::isnan(none.low) && std::isnan(none.high));
  const eval::Interval all_nan = eval::bootstrap_ci({kNaN, kNaN});
  EXPECT_TRUE(std::isnan(all_nan.low) && std::isnan(all_nan.high));
  const eval::Interval one = eval::bootstrap_ci({kNaN, 0.7, kNaN});
  EXPECT_EQ(one.low, 0.7);
  EXPECT_EQ(one.high, 0.7);
  // NaN entries are dropped before resampling: the same interval as without them.
  const eval::Interval with_nan = eval::bootstrap_ci({0.2, kNaN, 0.8, 0.5}, 500, 0.9, 3);
  const eval::Interval without = eval::bootstrap_ci({0.2, 0.8, 0.5}, 500, 0.9, 3);
  EXPECT_EQ(with_nan.low, without.low);
  EXPECT_EQ(with_nan.high, without.high);
  EXPECT_THROW(eval::bootstrap_ci({0.1, 0.2}, 0), kdseg::Error);
  EXPECT_THROW(eval::bootstrap_ci({0.1, 0.2}, 100, 1.0), kdseg::Error);
  EXPECT_THROW(eval::bootstrap_ci({0.1, 0.2}, 100, kNaN), kdseg::Error);
}

TEST(Report, PairedDifferenceKeepsPairsAndTestsExactly) {
  // Five cases, every one better by 0.1: mean +0.1; the permutation test's two most extreme
  // sign patterns (all + and all -) of 32 reach it, p = 2/32; resampling differences of
  // 0.1 only gives [0.1, 0.1]. Pairs with NaN on either side are left out.
  const auto better =
      eval::paired_difference({0.6, 0.7, kNaN, 0.8, 0.9, 0.5, 0.4}, {0.5, 0.6, 0.3, 0.7, 0.8, kNaN, 0.3});
  EXPECT_EQ(better.cases, 5);
  EXPECT_NEAR(better.mean, 0.1, 1e-12);
  EXPECT_NEAR(better.ci95.low, 0.1, 1e-12);
  EXPECT_NEAR(better.ci95.high, 0.1, 1e-12);
  EXPECT_NEAR(better.p_value, 2.0 / 32, 1e-12);
  // Differences +0.3, -0.1, +0.2, -0.2: observed |sum| 0.2; of the 16 patterns, those with
  // |sum| >= 0.2 are 10 (enumerated by hand below).
  const std::vector<double> d{0.3, -0.1, 0.2, -0.2};
  int extreme = 0;
  for (int mask = 0; mask < 16; ++mask) {
    double sum = 0;
    for (int i = 0; i < 4; ++i) sum += ((mask >> i) & 1) ? -d[static_cast<size_t>(i)] : d[static_cast<size_t>(i)];
    extreme += std::abs(sum) >= 0.2 - 1e-12;
  }
  const auto mixed = eval::paired_difference({0.8, 0.4, 0.7, 0.3}, {0.5, 0.5, 0.5, 0.5});
  EXPECT_NEAR(mixed.mean, 0.05, 1e-12);
  EXPECT_NEAR(mixed.p_value, extreme / 16.0, 1e-12);
  EXPECT_LT(mixed.ci95.low, 0.0);
  EXPECT_GT(mixed.ci95.high, 0.0);
  // Beyond 20 cases: random patterns, deterministic for a seed, near the exact answer.
  std::vector<double> a(30), b(30);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = 0.5 + 0.01 * static_cast<double>(i % 7);
    b[i] = 0.5 + 0.01 * static_cast<double>((i * 3) % 7);
  }
  const auto many = eval::paired_difference(a, b, 200, 0.95, 1, 20000);
  EXPECT_EQ(many.p_value, eval::paired_difference(a, b, 200, 0.95, 1, 20000).p_value);
  EXPECT_GT(many.p_value, 0.0);
  EXPECT_LE(many.p_value, 1.0);
  const auto none = eval::paired_difference({kNaN}, {0.5});
  EXPECT_EQ(none.cases, 0);
  EXPECT_TRUE(std::isnan(none.mean) && std::isnan(none.p_value));
  EXPECT_THROW(eval::paired_difference({0.1}, {0.1, 0.2}), kdseg::Error);
}

// Worked by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 give 0.02, 0.03, 0.06, 0.04,
// and the running maximum lifts the last to 0.06; NaN is left out of m and stays NaN.
TEST(Report, HolmAdjustmentStepsDownAndKeepsOrder) {
  const std::vector<double> adjusted = eval::holm_adjusted({0.01, 0.04, kNaN, 0.03, 0.005});
  ASSERT_EQ(adjusted.size(), 5u);
  EXPECT_NEAR(adjusted[0], 0.03, 1e-15);
  EXPECT_NEAR(adjusted[1], 0.06, 1e-15);
  EXPECT_TRUE(std::isnan(adjusted[2]));
  EXPECT_NEAR(adjusted[3], 0.06, 1e-15);
  EXPECT_NEAR(adjusted[4], 0.02, 1e-15);
  EXPECT_EQ(eval::holm_adjusted({0.3, 0.6}), (std::vector<double>{0.6, 0.6}));  // capped at 1 where needed
  EXPECT_EQ(eval::holm_adjusted({0.7, 0.6}), (std::vector<double>{1.0, 1.0}));
  EXPECT_EQ(eval::holm_adjusted({0.2}), (std::vector<double>{0.2}));  // one test: unchanged
}

TEST(Report, WorstFractionMeanAveragesTheLowestValues) {
  std::vector<double> values;
  for (int i = 100; i >= 1; --i) values.push_back(i / 100.0);
  EXPECT_NEAR(eval::worst_fraction_mean(values, 0.05), 0.03, 1e-12);  // (0.01 + ... + 0.05) / 5
  // 0.07 * 100 is 7.000000000000001 in doubles: still the lowest 7, not 8.
  EXPECT_NEAR(eval::worst_fraction_mean(values, 0.07), 0.04, 1e-12);
  EXPECT_NEAR(eval::worst_fraction_mean(values, 1.0), 0.505, 1e-12);
  // ceil(0.05 * 3) = 1: the single lowest finite value; NaN is not a value.
  EXPECT_EQ(eval::worst_fraction_mean({0.9, kNaN, 0.4, 0.6}), 0.4);
  EXPECT_TRUE(std::isnan(eval::worst_fraction_mean({kNaN})));
  EXPECT_THROW(eval::worst_fraction_mean(values, 0.0), kdseg::Error);
  EXPECT_THROW(eval::worst_fraction_mean(values, 1.5), kdseg::Error);
}

// ---- CSV -----------------------------------------------------------------------------------------

TEST(Report, CsvHasOneLinePerModelAndCaseWithNanEmptyAndFieldsQuoted) {
  json r = make_report({make_model("a, \"quoted\" model", {0.8, kNaN}, 0.02)});
  r["regions"] = {"tumor", "organ,x"};
  for (json& c : r["models"][0]["cases"]) c["dice"]["organ,x"] = 0.95;
  r["models"][0]["cases"][1]["nll"] = nullptr;
  r["models"][0]["cases"][1]["id"] = "case \"1\", left";
  const std::string csv = report::render_per_case_csv(r);
  EXPECT_EQ(csv,
            "model,case,slices,tumor_dice,\"organ,x_dice\",ece,classwise_ece,nll,brier\n"
            "\"a, \"\"quoted\"\" model\",case_0,10,0.8,0.95,0.02,0.01,0.08,0.04\n"
            "\"a, \"\"quoted\"\" model\",\"case \"\"1\"\", left\",10,,0.95,0.02,0.01,,0.04\n");
}

TEST(Report, CsvListsEveryModel) {
  const std::string csv = report::render_per_case_csv(two_model_report());
  EXPECT_EQ(count_of(csv, "\n"), 1u + 3 + 3);
  EXPECT_EQ(count_of(csv, "\nteacher,"), 3u);
  EXPECT_EQ(count_of(csv, "\nstudent,"), 3u);
}

// ---- HTML ----------------------------------------------------------------------------------------

TEST(Report, HtmlEscapesEveryStringOfTheReport) {
  json r = make_report({make_model("<b>&\"x\"", {0.8, 0.6}, 0.02)});
  r["models"][0]["description"] = "</td><script>alert(1)</script>";
  r["models"][0]["cases"][0]["id"] = "<i>case</i>";
  r["options"]["note"] = "</pre><img src=x>";
  const std::string html = report::render_html(r);
  EXPECT_EQ(html.find("<b>&\"x\""), std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;&amp;&quot;x&quot;"), std::string::npos);
  EXPECT_EQ(html.find("<script>alert"), std::string::npos);
  EXPECT_EQ(html.find("<i>case"), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
}

TEST(Report, HtmlMarksTheBestValueOfEachColumn) {
  // "dice" is better in every Dice column, "calibrated" in every calibration column.
  const std::string html = report::render_html(
      make_report({make_model("dice", {0.9, 0.8}, 0.04), make_model("calibrated", {0.6, 0.5}, 0.01)}));
  const std::vector<Cell> dice = comparison_row(html, "dice");
  const std::vector<Cell> calibrated = comparison_row(html, "calibrated");
  ASSERT_EQ(dice.size(), 7u);  // mean, global, worst 5%, ECE, classwise ECE, NLL, Brier
  ASSERT_EQ(calibrated.size(), 7u);
  EXPECT_TRUE(marked_best(dice, "0.8500"));  // mean Dice
  EXPECT_FALSE(marked_best(calibrated, "0.5500"));
  EXPECT_TRUE(marked_best(dice, "0.8000"));  // worst 5%
  EXPECT_FALSE(marked_best(calibrated, "0.5000"));
  EXPECT_TRUE(marked_best(calibrated, "0.0100"));  // ECE
  EXPECT_FALSE(marked_best(dice, "0.0400"));
  EXPECT_TRUE(marked_best(calibrated, "0.0400"));  // NLL = 4 ECE
  EXPECT_FALSE(marked_best(dice, "0.1600"));
  const auto best_cells = [](const std::vector<Cell>& cells) {
    return std::count_if(cells.begin(), cells.end(),
                         [](const Cell& c) { return c.classes.find("best") != std::string::npos; });
  };
  EXPECT_EQ(best_cells(dice), 3);
  EXPECT_EQ(best_cells(calibrated), 4);
}

TEST(Report, HtmlShowsNanAndNullAsDashAndMarksNoBestAmongOneValue) {
  json r = two_model_report();
  r["models"][0]["summary"]["nll"] = nullptr;
  r["models"][1]["summary"]["nll"] = kNaN;  // a NaN not yet turned into null
  r["models"][1]["summary"]["brier"] = nullptr;
  const std::string html = report::render_html(r);
  const std::vector<Cell> teacher = comparison_row(html, "teacher");
  const std::vector<Cell> student = comparison_row(html, "student");
  ASSERT_EQ(teacher.size(), 7u);
  ASSERT_EQ(student.size(), 7u);
  EXPECT_EQ(teacher[5].text, "<span class=\"v\">\xE2\x80\x93</span>");  // NLL
  EXPECT_EQ(student[5].text, "<span class=\"v\">\xE2\x80\x93</span>");
  EXPECT_EQ(student[6].text, "<span class=\"v\">\xE2\x80\x93</span>");  // Brier
  EXPECT_EQ(teacher[6].classes.find("best"), std::string::npos);        // nothing to compare with
}

TEST(Report, HtmlHasItsPartsAndNoExternalResources) {
  json r = make_report({make_model("teacher", {0.9, 0.7, 0.8}, 0.02), make_model("student", {0.6, 0.5, 0.7}, 0.03),
                        make_model("student-ls", {0.7, 0.6, 0.65}, 0.025)});
  const std::string html = report::render_html(r);
  EXPECT_EQ(count_of(html, "<table id=\"comparison\">"), 1u);
  EXPECT_EQ(count_of(html, "<svg class=\"reliability\""), 3u);
  EXPECT_EQ(count_of(html, "<svg id=\"per-case-dice\""), 1u);
  EXPECT_EQ(count_of(html, "<table id=\"per-case\">"), 1u);
  EXPECT_EQ(count_of(html, "<section id=\"configuration\">"), 1u);
  // One dot per model and case in the per-case plot, one row per model and case in the table.
  // (The legend's dots have no tooltip, so "</circle>" counts the cases' dots only.)
  EXPECT_EQ(count_of(element(html, "<svg id=\"per-case-dice\"", "</svg>"), "</circle>"), 9u);
  EXPECT_EQ(count_of(element(html, "<table id=\"per-case\">", "</table>"), "<tr><td"), 9u);
  // Bars for the 5 filled bins of each reliability diagram.
  EXPECT_EQ(count_of(element(html, "<svg class=\"reliability\"", "</svg>"), "<rect class=\"gap\""), 5u);
  for (const char* external : {"http://", "https://", "//cdn", "<link", " src=", "@import", "url("}) {
    EXPECT_EQ(html.find(external), std::string::npos) << external;
  }
  EXPECT_NE(html.find("/runs/student-ls.pt"), std::string::npos);                  // provenance
  EXPECT_NE(html.find("&quot;device&quot;: &quot;cpu&quot;"), std::string::npos);  // options
  EXPECT_EQ(count_of(html, "<table id=\"paired\">"), 0u) << "no paired differences in this report";
  // With paired differences: a row per model after the first, against the first.
  r["models"][1]["paired"] = {
      {"reference", "teacher"},
      {"dice",
       {{"tumor", {{"cases", 3}, {"mean", -0.2}, {"ci95", {-0.3, -0.1}}, {"p_value", 0.25}, {"p_holm", 0.5}}}}}};
  r["models"][2]["paired"] = {
      {"reference", "teacher"},
      {"dice", {{"tumor", {{"cases", 0}, {"mean", nullptr}, {"ci95", {nullptr, nullptr}}, {"p_value", nullptr}}}}}};
  const std::string paired = element(report::render_html(r), "<table id=\"paired\">", "</table>");
  EXPECT_EQ(count_of(paired, "<tr><td"), 2u);
  EXPECT_NE(paired.find("Dice against teacher"), std::string::npos) << paired;
  EXPECT_NE(
      paired.find(
          "-0.2000<span class=\"ci\">[-0.3000, -0.1000]</span><span class=\"ci\">p = 0.2500 (Holm 0.5000), n = 3"),
      std::string::npos)
      << paired;
}

TEST(Report, PerCasePlotOrdersCasesByTheFirstModelsDice) {
  const std::string html = report::render_html(make_report(
      {make_model("first", {0.9, kNaN, 0.3, 0.6}, 0.02), make_model("second", {0.1, 0.2, 0.3, 0.4}, 0.02)}));
  const std::string plot = element(html, "<svg id=\"per-case-dice\"", "</svg>");
  // Ascending Dice, the case without a Dice last; the labels follow the same order.
  const size_t c2 = plot.find(">case_2</text>"), c3 = plot.find(">case_3</text>");
  const size_t c0 = plot.find(">case_0</text>"), c1 = plot.find(">case_1</text>");
  ASSERT_NE(c1, std::string::npos);
  EXPECT_LT(c2, c3);
  EXPECT_LT(c3, c0);
  EXPECT_LT(c0, c1);
  EXPECT_EQ(count_of(plot, "</circle>"), 7u);  // no dot for the missing Dice
}

TEST(Report, RejectsAReportThatDoesNotFollowTheSchema) {
  json wrong_format = two_model_report();
  wrong_format["format"] = "kdseg report 0";
  EXPECT_THROW(report::render_html(wrong_format), kdseg::Error);
  json no_summary = two_model_report();
  no_summary["models"][1].erase("summary");
  try {
    report::render_html(no_summary);
    FAIL() << "a model without a summary was rendered";
  } catch (const kdseg::Error& e) {
    EXPECT_NE(e.message().find("does not follow the schema"), std::string::npos) << e.message();
  }
  json short_reliability = two_model_report();
  short_reliability["models"][0]["reliability"]["count"].erase(0);
  EXPECT_THROW(report::render_html(short_reliability), kdseg::Error);
  json text_metric = two_model_report();
  text_metric["models"][0]["cases"][0]["ece"] = "0.1";
  EXPECT_THROW(report::render_per_case_csv(text_metric), kdseg::Error);
}

// ---- files ---------------------------------------------------------------------------------------

TEST(Report, WriteReportWritesThreeFilesIntoANewFolder) {
  const ScratchDir dir;
  const fs::path folder = dir.path() / "eval" / "fold0";
  const json r = two_model_report();
  report::write_report(folder.string(), r);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"per_case.csv", "report.html", "report.json"}));
  EXPECT_EQ(json::parse(kdseg::read_file((folder / "report.json").string())), r);
  EXPECT_EQ(kdseg::read_file((folder / "per_case.csv").string()), report::render_per_case_csv(r));
  EXPECT_EQ(kdseg::read_file((folder / "report.html").string()), report::render_html(r));
}

TEST(Report, WriteReportWritesNothingForAnInvalidReport) {
  const ScratchDir dir;
  json r = two_model_report();
  r["models"][0].erase("cases");
  EXPECT_THROW(report::write_report((dir.path() / "eval").string(), r), kdseg::Error);
  EXPECT_FALSE(fs::exists(dir.path() / "eval"));
}

}  // namespace
