// ImageNet encoder weights for the UNet, as the paper used: exported from timm (resnet18d,
// resnet34d, resnet50d: the same network, loaded one to one) or torchvision (resnet18/34/50:
// residual stages only, their 7x7 stem differs from the ResNet-d stem) by
// tools/python/export_encoder.py, which writes `torch.save({name: tensor, "__source__": str})`.
#pragma once

#include <string>
#include <vector>

#include "core/models/unet.h"

namespace kdseg::models {

struct PretrainedReport {
  std::string source;                // "timm:resnet50d", "torchvision:resnet50", ...
  int loaded = 0;                    // tensors copied (parameters and BatchNorm buffers)
  std::vector<std::string> skipped;  // source names without a counterpart (fc, torchvision stem)
};

// The kdseg name ("encoder.layer1.0.conv1.weight") of a timm or torchvision ResNet tensor name,
// or "" when it has none.
std::string encoder_tensor_name(const std::string& source_name, bool torchvision);

// Copies the file's weights into `model`'s encoder. A first convolution with 3 input channels
// is summed over them for a 1-channel model (what timm does for in_chans=1). Shapes that do not
// match (another depth or width) are an error naming the tensor.
PretrainedReport load_pretrained_encoder(UNetImpl& model, const std::string& path);

}  // namespace kdseg::models
