// `kdseg evaluate` and `kdseg calibrate`.
#include "tools/evaluate_command.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/device.h"
#include "core/enum_names.h"
#include "core/error.h"
#include "core/frozen_model.h"
#include "core/log.h"
#include "core/models/checkpoint.h"
#include "core/parse.h"
#include "data/prepared_store.h"
#include "data/task.h"
#include "eval/evaluate.h"
#include "eval/held_out.h"
#include "eval/report_files.h"
#include "teacher/calibration.h"
#include "teacher/model_loader.h"
#include "tools/launch.h"

namespace kdseg::tools {
namespace po = boost::program_options;

namespace {

// "runs/teacher/best.pt" -> "teacher"; "student.pt" -> "student".
std::string default_name(const std::string& file) {
  const std::filesystem::path p(file);
  const std::string stem = p.stem().string();
  if ((stem == "last" || stem == "best") && p.has_parent_path() && !p.parent_path().filename().empty()) {
    return p.parent_path().filename().string();
  }
  return stem;
}

// One line per model: each region's mean Dice (and surface distances), then ECE.
void print_summary(const nlohmann::json& report, const std::string& output) {
  const auto text = [](const nlohmann::json& v, int decimals) {
    if (v.is_null()) return std::string("n/a");
    char out[32];
    std::snprintf(out, sizeof out, "%.*f", decimals, v.get<double>());
    return std::string(out);
  };
  for (const auto& model : report.at("models")) {
    const nlohmann::json& summary = model.at("summary");
    std::cout << model.at("name").get<std::string>() << ":";
    for (const auto& [region, dice] : summary.at("dice").items()) {
      std::cout << " " << region << " Dice " << text(dice.at("mean"), 4);
      if (!summary.contains("surface")) continue;
      const nlohmann::json& surface = summary.at("surface").at(region);
      std::cout << " (HD95 " << text(surface.at("hd95").at("mean"), 2) << " mm, NSD "
                << text(surface.at("nsd").at("mean"), 4) << ")";
    }
    std::cout << ", ECE " << text(summary.at("ece").at("mean"), 4) << "\n";
  }
  if (report.contains("figures") && !report.at("figures").empty()) {
    std::cout << "figures: " << report.at("figures").size() << " in "
              << (std::filesystem::absolute(output) / eval::kFiguresFolder).string() << "\n";
  }
  std::cout << "report: " << (std::filesystem::absolute(output) / eval::kReportHtmlFile).string() << "\n";
}

}  // namespace

void add_evaluate_options(po::options_description& d) {
  // clang-format off
  d.add_options()
      ("data", po::value<std::string>()->required(), "prepared store (kdseg prepare)")
      ("fold", po::value<int>()->default_value(0), "the fold whose cases are evaluated")
      ("model", po::value<std::vector<std::string>>()->required()->composing(),
       "a kdseg checkpoint or TorchScript file; repeat for several models")
      ("name", po::value<std::vector<std::string>>()->composing(),
       "the models' names in the report, in --model order (default: the file's folder or stem)")
      ("output", po::value<std::string>()->required(), "report folder: report.html, report.json, per_case.csv")
      ("task", po::value<std::string>()->default_value("tumor"), enum_help<data::TaskKind>().c_str())
      ("batch-size", po::value<int64_t>()->default_value(4), "slices per forward pass")
      ("workers", po::value<int>()->default_value(2), "data loading threads per rank")
      ("bins", po::value<int>()->default_value(10), "calibration bins")
      ("bootstrap", po::value<int>()->default_value(2000), "bootstrap resamples of the 95% intervals over cases")
      ("seed", po::value<uint64_t>()->default_value(0), "seed of the bootstrap")
      ("surface-tolerance", po::value<double>()->default_value(2.0),
       "tolerance in mm of the normalised surface Dice (NSD)")
      ("band-mm", po::value<double>()->default_value(2.0),
       "half width in mm of the band around the reference's boundary where band_ece is measured")
      ("no-surface", po::bool_switch(), "skip the surface distances (HD95, ASSD, NSD)")
      ("regions", po::value<std::string>()->default_value("task"),
       ("the regions measured: " + enum_help<data::RegionSet>() +
        "; kits23 measures kidney_and_mass, mass and tumor at KiTS23's surface Dice tolerances")
           .c_str())
      ("save-predictions", po::bool_switch(),
       "write predictions/<model>/<case>.nii.gz (labels) and <case>_probs.nii.gz in the source geometry")
      ("show-case", po::value<std::vector<std::string>>()->composing(),
       "a case id to draw besides the worst, median and best (repeat for several)")
      ("no-figures", po::bool_switch(), "skip the figures of cases (report/figures/*.png)")
      ("cache", po::value<std::string>()->default_value(""),
       "a teacher's soft-label cache of --data: the figures show its probabilities where it holds the slice")
      ("no-curves", po::bool_switch(), "skip the training curves read from each checkpoint's metrics.jsonl")
      ("device", po::value<std::string>()->default_value("cpu"), enum_help<c10::DeviceType>().c_str())
      ("force", po::bool_switch(), "replace the report in --output (swapped in whole when the new one is complete)");
  // clang-format on
}

int run_evaluate(const po::variables_map& vm) {
  eval::EvaluateOptions o;
  o.data = vm["data"].as<std::string>();
  o.fold = vm["fold"].as<int>();
  o.output = vm["output"].as<std::string>();
  o.task = parse_task_option(vm);
  o.batch_size = vm["batch-size"].as<int64_t>();
  o.workers = vm["workers"].as<int>();
  o.bins = vm["bins"].as<int>();
  o.bootstrap = vm["bootstrap"].as<int>();
  o.seed = vm["seed"].as<uint64_t>();
  o.save_predictions = vm["save-predictions"].as<bool>();
  o.surface = !vm["no-surface"].as<bool>();
  o.surface_tolerance = vm["surface-tolerance"].as<double>();
  o.band_mm = vm["band-mm"].as<double>();
  o.regions = parse_enum<data::RegionSet>("--regions", vm["regions"].as<std::string>());
  o.force = vm["force"].as<bool>();
  o.figures = !vm["no-figures"].as<bool>();
  o.cache = vm["cache"].as<std::string>();
  o.curves = !vm["no-curves"].as<bool>();
  if (vm.count("show-case")) o.show_cases = vm["show-case"].as<std::vector<std::string>>();
  const c10::DeviceType device_type = parse_option<c10::DeviceType>(vm, "device");
  const auto files = vm["model"].as<std::vector<std::string>>();
  const auto names = vm.count("name") ? vm["name"].as<std::vector<std::string>>() : std::vector<std::string>();
  if (!names.empty() && names.size() != files.size()) {
    throw po::error("give one --name per --model (" + std::to_string(files.size()) + " models, " +
                    std::to_string(names.size()) + " names)");
  }
  return run_distributed(vm, device_type == c10::kCUDA, [&](dist::Communicator& comm) {
    o.device = dist::rank_device(device_type, comm);  // resolved once: the models load onto it
    for (size_t i = 0; i < files.size(); ++i) {
      o.models.push_back({names.empty() ? default_name(files[i]) : names[i], files[i],
                          std::shared_ptr<FrozenModel>(teacher::load_model(files[i], o.device))});
    }
    const nlohmann::json report = eval::evaluate(o, comm);
    if (comm.rank() == 0) print_summary(report, o.output);
    return 0;
  });
}

void add_calibrate_options(po::options_description& d) {
  // clang-format off
  d.add_options()
      ("model", po::value<std::string>()->required(), "a kdseg checkpoint")
      ("data", po::value<std::string>()->required(), "prepared store (kdseg prepare)")
      ("fold", po::value<int>(), "the held-out fold T is fitted on, one the model did not train on")
      ("temperature", po::value<std::string>()->default_value("fit"),
       "fit: fit T on --fold; or a number: write the copy with that T (one fitted elsewhere)")
      ("output", po::value<std::string>()->required(), "the calibrated checkpoint to write, e.g. student.cal.pt")
      ("batch-size", po::value<int64_t>()->default_value(8), "slices per forward pass")
      ("workers", po::value<int>()->default_value(2), "data loading threads per rank")
      ("force", po::bool_switch(), "replace an existing --output")
      ("device", po::value<std::string>()->default_value("cpu"), enum_help<c10::DeviceType>().c_str());
  // clang-format on
}

// Fits the temperature minimising the NLL on a held-out fold (teacher/calibration.h, the fit
// `precompute --temperature fit` uses) and writes a copy of the checkpoint that carries it.
int run_calibrate(const po::variables_map& vm) {
  const std::string file = vm["model"].as<std::string>(), data = vm["data"].as<std::string>();
  const std::string output = vm["output"].as<std::string>();
  const std::string temperature_text = vm["temperature"].as<std::string>();
  const bool fit_it = temperature_text == "fit";
  const std::optional<double> given = fit_it ? std::nullopt : parse_number(temperature_text);
  if (!fit_it && (!given || !(*given > 0) || !std::isfinite(*given)))
    throw po::error("--temperature must be fit or a positive number, got '" + temperature_text + "'");
  if (fit_it && !vm.count("fold")) throw po::error("--temperature fit needs --fold, the held-out fold to fit on");
  const int fold = vm.count("fold") ? vm["fold"].as<int>() : -1;
  const int64_t batch_size = vm["batch-size"].as<int64_t>();
  const int workers = vm["workers"].as<int>();
  if (batch_size < 1) throw po::error("--batch-size must be at least 1");
  const c10::DeviceType device_type = parse_option<c10::DeviceType>(vm, "device");
  std::error_code ec;
  KDSEG_CHECK(!std::filesystem::exists(output, ec) || vm["force"].as<bool>(), output,
              ": exists; give --force to replace it");
  KDSEG_CHECK(!std::filesystem::exists(output, ec) || !std::filesystem::equivalent(output, file, ec), output,
              ": is the model itself; write the calibrated copy beside it");
  return run_distributed(vm, device_type == c10::kCUDA, [&](dist::Communicator& comm) {
    const c10::Device device = dist::rank_device(device_type, comm);
    std::string why_not;
    const auto checkpoint = models::Checkpoint::open_if_checkpoint(file, device, &why_not);
    KDSEG_CHECK(checkpoint != nullptr, file, ": not a kdseg checkpoint (", why_not,
                "); calibrate writes a checkpoint with its temperature, so it takes kdseg's own");
    if (!fit_it) {
      if (comm.rank() == 0) {
        models::save_calibrated_checkpoint(output, *checkpoint, *given);
        std::printf("wrote %s with T = %.4g (not fitted)\n", output.c_str(), *given);
      }
      comm.barrier();
      return 0;
    }
    const std::unique_ptr<FrozenModel> model = teacher::checkpoint_model(*checkpoint);
    const data::PreparedStore store(data);
    const int folds = store.folds();
    KDSEG_CHECK(fold >= 0 && fold < folds, data, ": --fold ", fold, " does not exist; the store has ", folds,
                " folds (0-", folds - 1, ")");
    eval::check_held_out(*model, file, store, store.rows_in_folds({fold}), fold, comm.rank() == 0,
                         "a temperature fitted on cases it trained on would leave it over-confident on new ones");
    const data::Task task = data::make_task(checkpoint->run_config().task,
                                            parse_enum<data::Layout>(data + ": layout", store.attribute("layout")));
    KDSEG_CHECK(task.classes == model->classes(), file, ": has ", model->classes(), " classes where its task ",
                task.name, " on ", data, " has ", task.classes);
    const teacher::TemperatureFit fit =
        teacher::fit_temperature(*model, data, task, {fold}, device, workers, batch_size, comm);
    // The model already divides by its own temperature: the fit multiplies it.
    const double temperature = checkpoint->info().temperature * fit.temperature;
    if (comm.rank() == 0) {
      models::save_calibrated_checkpoint(output, *checkpoint, temperature);
      std::printf(
          "calibrated: T = %.4g fitted on fold %d of %s (%lld voxels), NLL %.5f at the model's T -> %.5f\n"
          "wrote %s\n",
          temperature, fold, data.c_str(), static_cast<long long>(fit.voxels), fit.nll_before, fit.nll_after,
          output.c_str());
      if (fit.at_grid_end)
        log::warn("{}: the fit ended at the edge of its range [0.1, 10] x the model's T; the minimum may lie beyond",
                  file);
    }
    comm.barrier();
    return 0;
  });
}

}  // namespace kdseg::tools
