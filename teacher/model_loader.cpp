#include "teacher/model_loader.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/models/checkpoint.h"
#include "core/models/unet.h"
#include "core/zip_check.h"

namespace kdseg::teacher {
namespace {

class CheckpointModel final : public FrozenModel {
 public:
  explicit CheckpointModel(const models::Checkpoint& checkpoint)
      : path_(checkpoint.path()),
        config_(checkpoint.info().config),
        preprocessing_(checkpoint.info().preprocessing),
        classes_(checkpoint.info().classes),
        temperature_(checkpoint.info().temperature),
        model_(checkpoint.build_frozen_model()) {}

  // A calibrated checkpoint's logits come divided by its temperature, so that every user of a
  // frozen model (evaluate, precompute, an online teacher) sees its calibrated probabilities.
  at::Tensor logits(const at::Tensor& images) override {
    torch::NoGradGuard no_grad;
    const at::Tensor z = model_(images).logits;
    return temperature_ == 1 ? z : z / temperature_;
  }
  int64_t classes() const override { return classes_; }
  std::string describe() const override {
    std::string text = "kdseg checkpoint " + path_ + " (" + enum_name(model_->options().encoder());
    if (temperature_ != 1) {
      char t[32];
      std::snprintf(t, sizeof t, "%.4g", temperature_);
      text += std::string(", calibrated: T = ") + t;
    }
    return text + ")";
  }
  std::string training_config() const override { return config_; }
  std::string preprocessing() const override { return preprocessing_; }
  double temperature() const override { return temperature_; }
  int64_t parameters() const override {
    int64_t n = 0;
    for (const at::Tensor& p : model_->parameters()) n += p.numel();
    return n;
  }

 private:
  std::string path_, config_, preprocessing_;
  int64_t classes_ = 0;
  double temperature_ = 1;
  models::UNet model_{nullptr};
};

class EnsembleModel final : public FrozenModel {
 public:
  explicit EnsembleModel(std::vector<std::unique_ptr<FrozenModel>> members) : members_(std::move(members)) {}

  at::Tensor logits(const at::Tensor& images) override {
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> log_probs;
    for (auto& m : members_) log_probs.push_back(torch::log_softmax(m->logits(images).to(torch::kFloat), 1));
    return torch::logsumexp(torch::stack(log_probs), 0) - std::log(static_cast<double>(members_.size()));
  }
  int64_t classes() const override { return members_.front()->classes(); }
  std::string describe() const override {
    std::string text = "ensemble of " + std::to_string(members_.size()) + " models (";
    for (size_t i = 0; i < members_.size(); ++i) text += (i ? "; " : "") + members_[i]->describe();
    return text + ")";
  }
  int64_t parameters() const override {
    int64_t n = 0;
    for (const auto& m : members_) n += m->parameters();
    return n;
  }

 private:
  std::vector<std::unique_ptr<FrozenModel>> members_;
};

}  // namespace

std::unique_ptr<FrozenModel> checkpoint_model(const models::Checkpoint& checkpoint) {
  return std::make_unique<CheckpointModel>(checkpoint);
}

std::unique_ptr<FrozenModel> load_model(const std::string& path, c10::Device device) {
  std::error_code ec;
  KDSEG_CHECK(std::filesystem::is_regular_file(path, ec), path, ": no such teacher file");
  std::string not_checkpoint;
  if (const auto checkpoint = models::Checkpoint::open_if_checkpoint(path, device, &not_checkpoint)) {
    return checkpoint_model(*checkpoint);
  }
  try {
    return load_torchscript_model(path, device);
  } catch (const Error& e) {
    // Both kinds are zip archives, and a damaged one was named as such above: this one is intact
    // but of another kind (a state dict from torch.save, say).
    KDSEG_CHECK(!check_zip(path).is_zip, path, ": an intact zip archive, but neither a kdseg checkpoint (",
                not_checkpoint, ") nor a TorchScript module (", e.message(),
                "); a state dict saved by torch.save is neither: save the model with torch.jit.script(model).save");
    throw;
  }
}

std::unique_ptr<FrozenModel> make_ensemble(std::vector<std::unique_ptr<FrozenModel>> members,
                                           const std::vector<std::string>& files) {
  KDSEG_CHECK(!members.empty() && members.size() == files.size(), "an ensemble needs one file per model");
  if (members.size() == 1) return std::move(members.front());
  for (size_t i = 1; i < members.size(); ++i) {
    KDSEG_CHECK(members[i]->classes() == members[0]->classes(), files[i], ": predicts ", members[i]->classes(),
                " classes but ", files[0], " predicts ", members[0]->classes(),
                ": the models of an ensemble must predict the same classes");
  }
  return std::make_unique<EnsembleModel>(std::move(members));
}

}  // namespace kdseg::teacher
