#include "teacher/model_loader.h"

#include <torch/torch.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/models/unet.h"

namespace kdseg::teacher {
namespace {

class CheckpointModel final : public FrozenModel {
 public:
  CheckpointModel(const std::string& path, torch::serialize::InputArchive& archive, c10::Device device)
      : path_(path) {
    c10::IValue config_text;
    KDSEG_CHECK(archive.try_read("config", config_text) && config_text.isString(), path,
                ": a kdseg checkpoint without its configuration");
    config_ = config_text.toStringRef();
    const auto config = nlohmann::json::parse(config_);
    at::Tensor classes;
    KDSEG_CHECK(archive.try_read("classes", classes), path, ": a kdseg checkpoint without its class count");
    classes_ = classes.item<int64_t>();
    arch_ = config.at("arch").get<std::string>();
    model_ = models::UNet(models::UNetOptions()
                              .encoder(models::parse_architecture(arch_))
                              .width(config.at("width").get<double>())
                              .classes(classes_));
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    try {
      model_->load(model_archive);
    } catch (const std::exception& e) {
      KDSEG_THROW(path, ": its weights do not fit ", arch_, ": ", error_message(e));
    }
    model_->to(device);
    models::use_channels_last(*model_);  // the fastest convolution layout, whatever the checkpoint's
    model_->eval();
  }

  at::Tensor logits(const at::Tensor& images) override {
    torch::NoGradGuard no_grad;
    return model_(images).logits;
  }
  int64_t classes() const override { return classes_; }
  std::string describe() const override { return "kdseg checkpoint " + path_ + " (" + arch_ + ")"; }
  std::string training_config() const override { return config_; }

 private:
  std::string path_, arch_, config_;
  int64_t classes_ = 0;
  models::UNet model_{nullptr};
};

}  // namespace

std::unique_ptr<FrozenModel> load_model(const std::string& path, c10::Device device) {
  std::error_code ec;
  KDSEG_CHECK(std::filesystem::is_regular_file(path, ec), path, ": no such teacher file");
  torch::serialize::InputArchive archive;
  bool is_archive = true;
  try {
    archive.load_from(path, device);
  } catch (const std::exception&) {
    is_archive = false;
  }
  c10::IValue format;
  if (is_archive && archive.try_read("format", format) && format.isString() &&
      format.toStringRef().rfind("kdseg checkpoint", 0) == 0) {
    return std::make_unique<CheckpointModel>(path, archive, device);
  }
  return load_torchscript_model(path, device);
}

}  // namespace kdseg::teacher
