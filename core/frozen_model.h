// A frozen model: anything that maps images [B,1,H,W] to logits [B,C,H,W] without learning.
// Teachers are frozen models, and so are the students and baselines `evaluate` scores. kdseg's
// own UNet checkpoints are one kind, a TorchScript module trained in Python (MONAI, nnU-Net,
// segmentation_models_pytorch, ...) another; teacher/model_loader.h loads both from files.
//
// Frozen models run in eval mode without gradients.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace kdseg {

class FrozenModel {
 public:
  virtual ~FrozenModel() = default;
  // images [B,1,H,W] float32 on the model's device -> logits [B,C,H,W].
  virtual at::Tensor logits(const at::Tensor& images) = 0;
  virtual int64_t classes() const = 0;
  virtual std::string describe() const = 0;
  // The configuration (JSON) a kdseg checkpoint was trained with: its store and held-out fold,
  // so that evaluation can refuse a fold the model trained on. Empty for other models.
  virtual std::string training_config() const { return {}; }
  // The preprocessing of its training slices as JSON (data/preprocessing.h): a kdseg checkpoint's
  // since it records it. Empty otherwise.
  virtual std::string preprocessing() const { return {}; }
  // Its parameter count (0 where unknown).
  virtual int64_t parameters() const { return 0; }
  // T: its logits are divided by it (a calibrated checkpoint); 1 otherwise.
  virtual double temperature() const { return 1; }
};

}  // namespace kdseg
