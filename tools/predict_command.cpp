// `kdseg predict`: segments new scans with one model or an ensemble (eval/predict.h); `kdseg export`:
// a checkpoint as a TorchScript module (teacher/export.h).
#include "tools/predict_command.h"

#include <ATen/Parallel.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/device.h"
#include "core/enum_names.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/run_record.h"
#include "eval/predict.h"
#include "teacher/export.h"
#include "teacher/model_loader.h"
#include "tools/launch.h"

namespace kdseg::tools {
namespace po = boost::program_options;

void add_predict_options(po::options_description& d) {
  // clang-format off
  d.add_options()
      ("model", po::value<std::vector<std::string>>()->required()->composing(),
       "a kdseg checkpoint (a calibrated one applies its temperature) or TorchScript file; repeat for an "
       "ensemble, whose probabilities are averaged")
      ("input", po::value<std::string>()->required(),
       "a NIfTI scan, a folder of them, an MSD / nnU-Net raw folder (dataset.json, imagesTs/), or a folder "
       "prepare reads (lits, kits, qubiq)")
      ("output", po::value<std::string>()->required(),
       "folder: <case>.nii.gz (labels), <case>_probs.nii.gz, predictions.json")
      ("tta", po::value<std::string>()->default_value("none"), "test-time augmentation: none, or flip (the 4 in-plane flips)")
      ("batch-size", po::value<int64_t>()->default_value(8), "slices per forward pass")
      ("window", po::value<std::string>(),
       "LOW,HIGH: the HU window, for a model without kdseg's preprocessing record (or to replace it)")
      ("size", po::value<int64_t>(),
       "the in-plane size slices are resized to, for a model without kdseg's preprocessing record (0: each scan's own)")
      ("skip-bad-cases", po::bool_switch(), "report a scan that cannot be read and go on")
      ("force", po::bool_switch(), "replace the predictions of other models or settings in --output")
      ("device", po::value<std::string>()->default_value("cpu"), enum_help<c10::DeviceType>().c_str());
  // clang-format on
}

int run_predict(const po::variables_map& vm) {
  eval::PredictOptions o;
  o.input = vm["input"].as<std::string>();
  o.output = vm["output"].as<std::string>();
  o.batch_size = vm["batch-size"].as<int64_t>();
  if (o.batch_size < 1) throw po::error("--batch-size must be at least 1");
  const std::string tta = vm["tta"].as<std::string>();
  if (tta != "none" && tta != "flip") throw po::error("--tta must be none or flip, got '" + tta + "'");
  o.tta_flip = tta == "flip";
  o.force = vm["force"].as<bool>();
  o.skip_bad_cases = vm["skip-bad-cases"].as<bool>();
  eval::PreprocessingOverride given;
  if (vm.count("window")) {
    const std::string text = vm["window"].as<std::string>();
    const size_t comma = text.find(',');
    const std::optional<double> low = comma == std::string::npos ? std::nullopt : parse_number(text.substr(0, comma));
    const std::optional<double> high = comma == std::string::npos ? std::nullopt : parse_number(text.substr(comma + 1));
    if (!low || !high || !(*low < *high))
      throw po::error("--window must be LOW,HIGH in HU with LOW < HIGH (e.g. -60,140), got '" + text + "'");
    given.window = std::make_pair(*low, *high);
  }
  if (vm.count("size")) {
    given.size = vm["size"].as<int64_t>();
    if (*given.size < 0 || *given.size > 4096) throw po::error("--size must be 0 (each scan's own) to 4096");
  }
  const c10::DeviceType device_type = parse_option<c10::DeviceType>(vm, "device");
  const auto files = vm["model"].as<std::vector<std::string>>();
  return run_distributed(vm, device_type == c10::kCUDA, [&](dist::Communicator& comm) {
    o.device = dist::rank_device(device_type, comm);
    o.threads = at::get_num_threads();
    for (const std::string& file : files) {
      eval::PredictModel m;
      m.file = file;
      m.hash = hash_file(file);
      m.model = std::shared_ptr<FrozenModel>(teacher::load_model(file, o.device));
      m.preprocessing = eval::model_preprocessing(*m.model, file, given);
      // On CUDA, bf16 autocast where the checkpoint trained under it (its --precision).
      const std::string record = m.model->training_config();
      m.bf16 = !record.empty() && uses_bf16_autocast(parse_run_config(record, file).precision, o.device);
      if (comm.rank() == 0) log::info("{}: {} ({})", file, m.model->describe(), m.preprocessing.describe());
      o.models.push_back(std::move(m));
    }
    const nlohmann::json result = eval::predict(o, comm);
    if (comm.rank() == 0) {
      double seconds = 0;
      int64_t slices = 0;
      for (const auto& c : result.at("cases")) {
        seconds += c.at("seconds").get<double>();
        slices += c.at("slices").get<int64_t>();
      }
      char rate[32];
      std::snprintf(rate, sizeof rate, "%.1f", seconds > 0 ? static_cast<double>(slices) / seconds : 0.0);
      std::cout << "predicted " << result.at("cases").size() << " cases (" << slices << " slices, " << rate
                << " slices/s per rank)";
      if (!result.at("skipped").empty()) std::cout << ", skipped " << result.at("skipped").size();
      std::cout << "; " << (std::filesystem::absolute(o.output) / "predictions.json").string() << "\n";
      for (const auto& s : result.at("skipped"))
        std::cout << "  skipped " << s.at("id").get<std::string>() << ": " << s.at("why").get<std::string>() << "\n";
    }
    return result.at("skipped_count").get<int64_t>() == 0 || o.skip_bad_cases ? 0 : 1;
  });
}

void add_export_options(po::options_description& d) {
  // clang-format off
  d.add_options()
      ("model", po::value<std::string>()->required(), "a kdseg checkpoint (a calibrated one keeps its temperature)")
      ("output", po::value<std::string>()->required(), "the TorchScript file to write, e.g. student.ts")
      ("size", po::value<int64_t>()->default_value(0),
       "the slice size the module takes (0: its training slices'; needed for a model trained on native sizes)")
      ("force", po::bool_switch(), "replace an existing --output");
  // clang-format on
}

int run_export(const po::variables_map& vm) {
  const std::string model = vm["model"].as<std::string>(), output = vm["output"].as<std::string>();
  const int64_t size = vm["size"].as<int64_t>();
  if (size < 0 || size > 4096) throw po::error("--size must be 0 (the training slices') to 4096");
  std::error_code ec;
  refuse_symlink_output(output);
  KDSEG_CHECK(!std::filesystem::exists(output, ec) || vm["force"].as<bool>(), output,
              ": exists; give --force to replace it");
  KDSEG_CHECK(!std::filesystem::exists(output, ec) || !std::filesystem::equivalent(output, model, ec), output,
              ": is the model itself; write the module beside it");
  return run_distributed(vm, false, [&](dist::Communicator& comm) {
    if (comm.rank() == 0) {
      const teacher::ExportSummary s = teacher::export_torchscript(model, output, size);
      std::printf("wrote %s: TorchScript, input [B,1,%lld,%lld], %lld classes, %lld parameters, T = %.4g applied\n",
                  output.c_str(), static_cast<long long>(s.input_size), static_cast<long long>(s.input_size),
                  static_cast<long long>(s.classes), static_cast<long long>(s.parameters), s.temperature);
    }
    comm.barrier();
    return 0;
  });
}

}  // namespace kdseg::tools
