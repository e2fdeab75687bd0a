#include "core/models/checkpoint.h"

#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "core/build_config.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/zip_check.h"

namespace kdseg::models {
namespace {

constexpr const char* kFormatPrefix = "kdseg checkpoint";

std::string format_string() { return std::string(kFormatPrefix) + " 1 (" + KDSEG_VERSION + ")"; }

bool has_kdseg_format(torch::serialize::InputArchive& archive) {
  c10::IValue format;
  return archive.try_read("format", format) && format.isString() && format.toStringRef().rfind(kFormatPrefix, 0) == 0;
}

}  // namespace

struct Checkpoint::Archive {
  torch::serialize::InputArchive archive;
};

namespace {

// Every field but the optimiser's state.
void write_checkpoint(const std::string& path, const UNet& model, const torch::optim::Optimizer* optimizer,
                      const CheckpointInfo& info) {
  torch::serialize::OutputArchive archive, model_archive, optimizer_archive;
  model->save(model_archive);
  archive.write("model", model_archive);
  if (optimizer != nullptr) {
    optimizer->save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
  }
  archive.write("temperature", torch::tensor(info.temperature, torch::kDouble));
  archive.write("step", torch::tensor(info.step));
  archive.write("best_dice", torch::tensor(info.best_dice));
  archive.write("classes", torch::tensor(info.classes));
  archive.write("config", c10::IValue(info.config));
  archive.write("data_hash", c10::IValue(info.data_hash));
  if (!info.preprocessing.empty()) archive.write("preprocessing", c10::IValue(info.preprocessing));
  archive.write("format", c10::IValue(format_string()));
  // Serialised in memory, then written with checked writes: LibTorch's file writer cannot
  // report a full disk cleanly (its destructor throws again, which ends the process).
  std::ostringstream bytes;
  archive.save_to(bytes);
  write_file_atomic(path, bytes.str());
}

}  // namespace

void save_checkpoint(const std::string& path, const UNet& model, const torch::optim::Optimizer& optimizer,
                     const CheckpointInfo& info) {
  write_checkpoint(path, model, &optimizer, info);
}

void save_calibrated_checkpoint(const std::string& path, const Checkpoint& source, double temperature) {
  KDSEG_CHECK(std::isfinite(temperature) && temperature > 0, path, ": a temperature must be positive, got ",
              temperature);
  UNet model(source.unet_options());
  source.load_weights(model);
  CheckpointInfo info = source.info();
  info.temperature = temperature;
  write_checkpoint(path, model, nullptr, info);
}

std::unique_ptr<Checkpoint> Checkpoint::open_if_checkpoint(const std::string& path, c10::Device device,
                                                           std::string* why_not) {
  auto archive = std::make_unique<Archive>();
  try {
    archive->archive.load_from(path, device);
  } catch (const std::exception& e) {
    // Damage is the clearer reason, whatever kind of model the file was meant to be.
    check_zip_intact(path, "model");
    if (why_not) *why_not = error_message(e);
    return nullptr;
  }
  if (why_not) *why_not = "no \"kdseg checkpoint\" format record";
  if (!has_kdseg_format(archive->archive)) return nullptr;
  check_zip_intact(path, "checkpoint");  // LibTorch's reader never checks the records' CRC-32s
  return std::unique_ptr<Checkpoint>(new Checkpoint(path, device, std::move(archive)));
}

Checkpoint::Checkpoint(const std::string& path, c10::Device device)
    : Checkpoint(path, device, [&] {
        auto archive = std::make_unique<Archive>();
        try {
          archive->archive.load_from(path, device);
        } catch (const std::exception& e) {
          check_zip_intact(path, "checkpoint");  // damage is the clearer reason
          KDSEG_THROW(path, ": not a readable kdseg checkpoint (", error_message(e), ")");
        }
        KDSEG_CHECK(has_kdseg_format(archive->archive), path, ": not a kdseg checkpoint (no \"", kFormatPrefix,
                    " ...\" format record)");
        check_zip_intact(path, "checkpoint");  // LibTorch's reader never checks the records' CRC-32s
        return archive;
      }()) {}

Checkpoint::Checkpoint(std::string path, c10::Device device, std::unique_ptr<Archive> archive)
    : path_(std::move(path)), device_(device), archive_(std::move(archive)) {
  auto& a = archive_->archive;
  c10::IValue config, data_hash, preprocessing;
  KDSEG_CHECK(a.try_read("config", config) && config.isString(), path_,
              ": a kdseg checkpoint without its configuration");
  info_.config = config.toStringRef();
  at::Tensor classes, step, best_dice;
  KDSEG_CHECK(a.try_read("classes", classes), path_, ": a kdseg checkpoint without its class count");
  info_.classes = classes.item<int64_t>();
  if (a.try_read("step", step)) info_.step = step.item<int64_t>();
  if (a.try_read("best_dice", best_dice)) info_.best_dice = best_dice.item<double>();
  if (a.try_read("data_hash", data_hash) && data_hash.isString()) info_.data_hash = data_hash.toStringRef();
  if (a.try_read("preprocessing", preprocessing) && preprocessing.isString())
    info_.preprocessing = preprocessing.toStringRef();
  at::Tensor temperature;
  if (a.try_read("temperature", temperature)) info_.temperature = temperature.item<double>();
  KDSEG_CHECK(std::isfinite(info_.temperature) && info_.temperature > 0, path_, ": its temperature ", info_.temperature,
              " is not a positive number");
}

Checkpoint::~Checkpoint() = default;

RunConfig Checkpoint::run_config() const { return parse_run_config(info_.config, path_); }

UNetOptions Checkpoint::unet_options(UNetOptions base) const {
  const RunConfig config = run_config();
  return base.encoder(config.arch).width(config.width).classes(info_.classes);
}

void Checkpoint::load_weights(UNet& model) const {
  torch::serialize::InputArchive model_archive;
  archive_->archive.read("model", model_archive);
  try {
    model->load(model_archive);
  } catch (const std::exception& e) {
    KDSEG_THROW(path_, ": its weights do not fit ", enum_name(model->options().encoder()), ": ", error_message(e));
  }
}

void Checkpoint::load_optimizer(torch::optim::Optimizer& optimizer) const {
  torch::serialize::InputArchive optimizer_archive;
  KDSEG_CHECK(archive_->archive.try_read("optimizer", optimizer_archive), path_,
              ": holds no optimiser state (a calibrated copy, `kdseg calibrate`): resume from the checkpoint it was "
              "made from");
  try {
    optimizer.load(optimizer_archive);
  } catch (const std::exception& e) {
    KDSEG_THROW(path_, ": its optimiser state does not fit this run: ", error_message(e));
  }
}

UNet Checkpoint::build_frozen_model() const {
  UNet model(unet_options());
  load_weights(model);
  model->to(device_);
  if (channels_last_is_faster(device_)) use_channels_last(*model);  // whatever the checkpoint's layout
  model->eval();
  return model;
}

}  // namespace kdseg::models
