// The teacher a student learns from: anything that maps images [B,1,H,W] to logits [B,C,H,W].
// kdseg's own UNet checkpoints are one kind (with the trainer); a TorchScript module trained in
// Python (MONAI, nnU-Net, segmentation_models_pytorch, ...) is another:
//
//   model.eval(); torch.jit.script(model).save("teacher.pt")   # or torch.jit.trace(model, x)
//
// Teachers run in eval mode without gradients.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <string>

namespace kdseg {

class Teacher {
 public:
  virtual ~Teacher() = default;
  // images [B,1,H,W] float32 on the teacher's device -> logits [B,C,H,W].
  virtual at::Tensor logits(const at::Tensor& images) = 0;
  virtual int64_t classes() const = 0;
  virtual std::string describe() const = 0;
  // The configuration (JSON) a kdseg checkpoint was trained with: its store and held-out fold,
  // so that evaluation can refuse a fold the model trained on. Empty for other teachers.
  virtual std::string training_config() const { return {}; }
};

// Loads a TorchScript file and checks it on a probe input: it must take [B,1,H,W] and return a
// tensor [B,C,H,W] with C >= 2 at the input's size (a tuple or list: its first element; a dict:
// its "out" or "logits" entry). Errors name the file and what came out.
std::unique_ptr<Teacher> load_torchscript_teacher(const std::string& path, c10::Device device = c10::kCPU,
                                                  int64_t probe_size = 64);

}  // namespace kdseg
