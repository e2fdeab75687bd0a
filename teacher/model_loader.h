// Frozen models from files: a kdseg checkpoint (`kdseg train`: its UNet in eval mode) or any
// TorchScript module that maps [B,1,H,W] to logits [B,C,H,W]. Told apart by content.
//
// A TorchScript module is saved in Python with
//
//   model.eval(); torch.jit.script(model).save("teacher.pt")   # or torch.jit.trace(model, x)
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

#include "core/frozen_model.h"

namespace kdseg::models {
class Checkpoint;
}

namespace kdseg::teacher {

// An open kdseg checkpoint's frozen UNet (its logits divided by the checkpoint's temperature), for
// a caller that also reads the checkpoint's record, so that the file is read once.
std::unique_ptr<FrozenModel> checkpoint_model(const models::Checkpoint& checkpoint);

// A kdseg checkpoint or a TorchScript file, on `device`. Errors name the file.
std::unique_ptr<FrozenModel> load_model(const std::string& path, c10::Device device = c10::kCPU);

// Loads a TorchScript file and checks it on a probe input: it must take [B,1,H,W] and return a
// tensor [B,C,H,W] with C >= 2 at the input's size (a tuple or list: its first element; a dict:
// its "out" or "logits" entry). Errors name the file and what came out.
std::unique_ptr<FrozenModel> load_torchscript_model(const std::string& path, c10::Device device = c10::kCPU,
                                                    int64_t probe_size = 64);

// Several models as one: the mean of their probabilities (each after its own temperature), as
// logits log(mean_i softmax(z_i)), computed as logsumexp_i log_softmax(z_i) - log n so that they
// stay finite wherever the z_i are. Its softmax is the members' mean probability; a temperature
// applied to its logits sharpens or softens that mean. Members must predict the same classes
// (errors name `files`, one per member).
std::unique_ptr<FrozenModel> make_ensemble(std::vector<std::unique_ptr<FrozenModel>> members,
                                           const std::vector<std::string>& files);

}  // namespace kdseg::teacher
