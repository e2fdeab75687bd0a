// Reference parity of the loss family: runs every case of a dml_cases.json file (schema in
// the file) by its kind and options, in float64 and float32, and compares loss and gradient
// with respect to the logits against the reference values.
//
// usage: dml_reference_test [CASES.json]   (default: the copy under tests/data)
// Tolerances, relative to the largest magnitude of the compared reference tensor: 1e-9 in
// float64 (the reference is float64, so only summation order differs) and 1e-5 in float32
// (accumulation order differs between implementations; float32 epsilon is 1.2e-7).
// Unknown kinds, option names or component names are failures, never skips.

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "core/error.h"
#include "core/losses/distill.h"
#include "core/losses/dml.h"

namespace {

using json = nlohmann::json;
using torch::Tensor;
namespace L = kdseg::losses;

// Thrown for problems with the case itself (unknown options, missing inputs): a failure.
struct CaseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

Tensor tensor_from(const json& entry) {
  std::vector<int64_t> shape = entry.at("shape").get<std::vector<int64_t>>();
  const std::string dtype = entry.value("dtype", "float64");
  const json& data = entry.at("data");
  if (dtype == "int64") {
    return torch::tensor(data.get<std::vector<int64_t>>(), torch::kLong).reshape(shape);
  }
  if (dtype == "bool") {
    std::vector<int64_t> values;
    for (const auto& v : data) values.push_back(v.is_boolean() ? v.get<bool>() : v.get<int64_t>() != 0);
    return torch::tensor(values, torch::kLong).reshape(shape).to(torch::kBool);
  }
  if (dtype != "float64" && dtype != "float32") throw CaseError("unknown input dtype " + dtype);
  return torch::tensor(data.get<std::vector<double>>(), torch::kDouble).reshape(shape);
}

// Reads the options of a case, refusing names that the kind does not define.
class Options {
 public:
  Options(const json& options, std::set<std::string> known) : options_(options) {
    for (const auto& [name, value] : options.items()) {
      if (!known.count(name)) throw CaseError("unknown option '" + name + "'");
    }
  }
  bool has(const std::string& name) const { return options_.contains(name) && !options_.at(name).is_null(); }
  double number(const std::string& name, double fallback) const {
    return has(name) ? options_.at(name).get<double>() : fallback;
  }
  bool flag(const std::string& name, bool fallback) const {
    return has(name) ? options_.at(name).get<bool>() : fallback;
  }
  std::optional<int64_t> index(const std::string& name) const {
    return has(name) ? std::optional<int64_t>(options_.at(name).get<int64_t>()) : std::nullopt;
  }
  L::ActiveClasses mode(const std::string& name, L::ActiveClasses fallback) const {
    if (!has(name)) return fallback;
    const auto text = options_.at(name).get<std::string>();
    if (text == "ALL") return L::ActiveClasses::kAll;
    if (text == "PRESENT") return L::ActiveClasses::kPresent;
    throw CaseError("option '" + name + "' has unknown value '" + text + "'");
  }
  std::vector<double> list(const std::string& name) const {
    return has(name) ? options_.at(name).get<std::vector<double>>() : std::vector<double>{};
  }

 private:
  const json& options_;
};

// Options of the reference JDTLoss, mapped to DmlOptions. The reference's own defaults apply
// to names a case leaves out.
L::DmlOptions jdt_options(const Options& o) {
  return L::DmlOptions()
      .dataset_weight(o.number("mIoUD", 1.0))
      .image_weight(o.number("mIoUI", 0.0))
      .class_weight(o.number("mIoUC", 0.0))
      .alpha(o.number("alpha", 1.0))
      .beta(o.number("beta", 1.0))
      .gamma(o.number("gamma", 1.0))
      .smooth(o.number("smooth", 1e-3))
      .threshold(o.number("threshold", 0.01))
      .norm(o.number("norm", 1.0))
      .log_loss(o.flag("log_loss", false))
      .ignore_index(o.index("ignore_index"))
      .class_weights(o.list("class_weights"))
      .active_hard(o.mode("active_classes_mode_hard", L::ActiveClasses::kPresent))
      .active_soft(o.mode("active_classes_mode_soft", L::ActiveClasses::kAll));
}

const std::set<std::string> kJdtOptions = {"mIoUD",
                                           "mIoUI",
                                           "mIoUC",
                                           "alpha",
                                           "beta",
                                           "gamma",
                                           "smooth",
                                           "threshold",
                                           "norm",
                                           "log_loss",
                                           "ignore_index",
                                           "class_weights",
                                           "active_classes_mode_hard",
                                           "active_classes_mode_soft"};
const std::set<std::string> kPlainOptions = {"smooth", "present_only"};
const std::set<std::string> kKdOptions = {
    "T", "ce_weight", "jdt_weight", "main_weight", "label_weight", "teacher_weight", "ignore_index", "smooth"};
const std::set<std::string> kLsOptions = {"epsilon", "k", "smooth"};

double relative_error(const Tensor& value, const Tensor& reference) {
  const double scale = reference.abs().max().item<double>();
  const double diff = (value.to(torch::kDouble) - reference.to(torch::kDouble)).abs().max().item<double>();
  return scale > 0 ? diff / scale : diff;
}

struct Inputs {
  std::map<std::string, Tensor> tensors;
  const Tensor& at(const std::string& name) const {
    const auto it = tensors.find(name);
    if (it == tensors.end()) throw CaseError("input '" + name + "' not in the file");
    return it->second;
  }
};

// The loss of one case in one precision; `components` receives unweighted parts for kd.
Tensor case_loss(const json& c, const Inputs& in, const Tensor& logits, torch::Dtype dtype,
                 std::map<std::string, Tensor>* components) {
  const std::string kind = c.at("kind").get<std::string>();
  const json& raw_options = c.contains("options") ? c.at("options") : json::object();
  Tensor label = in.at(c.at("label").get<std::string>());
  if (label.is_floating_point()) label = label.to(dtype);
  const Tensor keep =
      c.contains("keep_mask") && !c.at("keep_mask").is_null() ? in.at(c.at("keep_mask").get<std::string>()) : Tensor();
  const int64_t classes = logits.size(1);

  if (kind == "jdt") {
    return L::dml_loss(logits, label, keep, jdt_options(Options(raw_options, kJdtOptions)));
  }
  if (kind == "sdl" || kind == "dml2") {
    const Options o(raw_options, kPlainOptions);
    const double smooth = o.number("smooth", 1.0);
    const bool present = o.flag("present_only", true);
    return kind == "sdl" ? L::soft_dice_loss(logits, label, keep, smooth, present)
                         : L::dml2_loss(logits, label, keep, smooth, present);
  }
  if (kind == "kd") {
    const Options o(raw_options, kKdOptions);
    const double t = o.number("T", 1.0);
    const auto ignore = o.index("ignore_index");
    const Tensor teacher = torch::softmax(in.at("teacher_logits").to(dtype) / t, 1);
    const auto weights = L::ObjectiveWeights()
                             .temperature(t)
                             .ce(o.number("ce_weight", 0.25))
                             .dml(o.number("jdt_weight", 0.75))
                             .main(o.number("main_weight", 0.5))
                             .label(o.number("label_weight", 0.5))
                             .teacher(o.number("teacher_weight", 0.5));
    const auto dml = L::DmlOptions().smooth(o.number("smooth", 1.0));
    const L::SegmentationObjective objective(weights, dml, ignore);
    if (components) {
      const Tensor keep_t = ignore ? label != *ignore : Tensor();
      (*components)["ce_hard"] = L::cross_entropy(logits, label, ignore);
      (*components)["kl_teacher"] = L::kl_divergence(logits, teacher, t, keep_t);
      (*components)["dml1_hard"] = L::dml_loss(logits, label, {}, L::DmlOptions(dml).ignore_index(ignore));
      (*components)["dml1_teacher"] = L::dml_loss(logits, teacher, keep_t, dml);
    }
    return objective({logits, Tensor(), label, teacher, keep}).total;
  }
  if (kind == "ls") {
    const Options o(raw_options, kLsOptions);
    if (!label.is_floating_point()) throw CaseError("ls: label must be the smoothed soft label");
    const L::SegmentationObjective objective(L::ObjectiveWeights(), L::DmlOptions().smooth(o.number("smooth", 1.0)));
    (void)classes;
    return objective({logits, Tensor(), Tensor(), label, keep}).total;
  }
  throw CaseError("unknown kind '" + kind + "'");
}

struct Outcome {
  bool ok = true;
  std::string text;
};

Outcome run_precision(const json& c, const Inputs& in, torch::Dtype dtype) {
  const bool f64 = dtype == torch::kDouble;
  const double tolerance = f64 ? 1e-9 : 1e-5;
  Tensor logits = in.at(c.at("logits").get<std::string>()).to(dtype).detach().requires_grad_(true);
  std::map<std::string, Tensor> components;
  const Tensor loss = case_loss(c, in, logits, dtype, f64 ? &components : nullptr);
  loss.backward();
  const json& ref_loss = c.at(f64 ? "loss" : "loss_float32");
  const json& ref_grad = c.at(f64 ? "grad_logits" : "grad_logits_float32");
  const double loss_err = relative_error(loss.detach(), torch::tensor(ref_loss.get<double>(), torch::kDouble));
  const Tensor grad_ref = torch::tensor(ref_grad.at("data").get<std::vector<double>>(), torch::kDouble)
                              .reshape(ref_grad.at("shape").get<std::vector<int64_t>>());
  const double grad_err = relative_error(logits.grad(), grad_ref);
  Outcome out;
  out.ok = loss_err <= tolerance && grad_err <= tolerance;
  char buffer[256];
  std::snprintf(buffer, sizeof buffer, "%s loss %.12g (ref %.12g, rel %.1e) grad rel %.1e", f64 ? "f64" : "f32",
                loss.item<double>(), ref_loss.get<double>(), loss_err, grad_err);
  out.text = buffer;
  if (f64 && c.contains("components_float64")) {
    for (const auto& [name, value] : c.at("components_float64").items()) {
      const auto it = components.find(name);
      if (it == components.end()) throw CaseError("unknown component '" + name + "'");
      const double err = relative_error(it->second.detach(), torch::tensor(value.get<double>(), torch::kDouble));
      out.ok = out.ok && err <= tolerance;
      std::snprintf(buffer, sizeof buffer, "; %s rel %.1e", name.c_str(), err);
      out.text += buffer;
    }
  }
  return out;
}

// Boundary label smoothing of the hard labels with ignore pixels (ignore index = C) against
// the file's boundary map and smoothed labels, with epsilon and k from the ls cases.
Outcome check_label_smoothing(const json& root, const Inputs& in) {
  Outcome out;
  int checked = 0;
  for (const auto& c : root.at("cases")) {
    if (c.at("kind") != "ls") continue;
    const Options o(c.at("options"), kLsOptions);
    const Tensor target = in.at(c.at("label").get<std::string>());
    const int64_t classes = target.size(1);
    const auto smoothed = L::boundary_label_smoothing(in.at("hard_ignore"), classes, o.number("epsilon", 0.0),
                                                      static_cast<int64_t>(o.number("k", 3)), classes);
    const bool boundary_ok = smoothed.boundary.equal(in.at("ls_boundary"));
    const double err = relative_error(smoothed.soft.to(torch::kDouble), target);
    out.ok = out.ok && boundary_ok && err <= 1e-12;
    out.text += std::string(checked ? "; " : "") + c.at("label").get<std::string>() + ": boundary " +
                (boundary_ok ? "equal" : "DIFFERS") + ", soft label rel " + std::to_string(err);
    ++checked;
  }
  if (!checked) {
    out.ok = false;
    out.text = "no ls case to take epsilon and k from";
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : KDSEG_REFERENCE_CASES;
  torch::set_num_threads(1);
  json root;
  try {
    std::ifstream file(path);
    if (!file) {
      std::fprintf(stderr, "dml_reference_test: cannot open %s\n", path.c_str());
      return 2;
    }
    root = json::parse(file);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dml_reference_test: %s: %s\n", path.c_str(), e.what());
    return 2;
  }
  Inputs inputs;
  for (const auto& [name, entry] : root.at("inputs").items()) inputs.tensors[name] = tensor_from(entry);

  int passed = 0, failed = 0;
  const auto report = [&](const std::string& id, bool ok, const std::string& text) {
    std::printf("%s %s: %s\n", ok ? "PASS" : "FAIL", id.c_str(), text.c_str());
    (ok ? passed : failed)++;
  };
  for (const auto& c : root.at("cases")) {
    const std::string id = c.value("id", std::string("<no id>"));
    try {
      const Outcome f64 = run_precision(c, inputs, torch::kDouble);
      const Outcome f32 = run_precision(c, inputs, torch::kFloat);
      report(id + " [" + c.at("kind").get<std::string>() + "]", f64.ok && f32.ok, f64.text + " | " + f32.text);
    } catch (const std::exception& e) {
      report(id, false, e.what());
    }
  }
  if (inputs.tensors.count("ls_boundary")) {
    try {
      const Outcome ls = check_label_smoothing(root, inputs);
      report("boundary_label_smoothing", ls.ok, ls.text);
    } catch (const std::exception& e) {
      report("boundary_label_smoothing", false, e.what());
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
