#include "core/models/pretrained.h"

#include <torch/torch.h>

#include <regex>

#include "core/error.h"
#include "core/file_util.h"
#include "core/zip_check.h"

namespace kdseg::models {

std::string encoder_tensor_name(const std::string& name, bool torchvision) {
  static const std::regex kLayer(
      R"(layer[1-4]\.\d+\.(conv[1-3]|bn[1-3])\.(weight|bias|running_mean|running_var|num_batches_tracked))");
  static const std::regex kDownsample(R"((layer[1-4]\.\d+)\.downsample\.(\d)\.(.+))");
  static const std::regex kStem(R"((conv1\.[0-9]|bn1)\.(weight|bias|running_mean|running_var|num_batches_tracked))");
  std::smatch m;
  if (std::regex_match(name, kLayer)) return "encoder." + name;
  if (std::regex_match(name, m, kDownsample)) {
    // ResNet-d shortcuts are (avgpool, conv, bn); torchvision's are (conv, bn).
    const int index = std::stoi(m[2].str()) + (torchvision ? 1 : 0);
    return "encoder." + m[1].str() + ".downsample." + std::to_string(index) + "." + m[3].str();
  }
  if (!torchvision && std::regex_match(name, kStem)) return "encoder." + name;
  return {};
}

PretrainedReport load_pretrained_encoder(UNetImpl& model, const std::string& path) {
  const std::string bytes = read_file(path);
  torch::IValue value;
  try {
    value = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const std::exception& e) {
    check_zip_intact(path, "weights file");  // damage is the clearer reason
    KDSEG_THROW(path,
                ": not a weights file written by tools/python/export_encoder.py (torch.save of a dict): ", e.what());
  }
  check_zip_intact(path, "weights file");  // the pickle reader never checks the records' CRC-32s
  KDSEG_CHECK(value.isGenericDict(), path, ": expected a dict of name -> tensor");
  PretrainedReport report;
  const auto dict = value.toGenericDict();
  for (const auto& item : dict) {
    if (item.key().isString() && item.key().toStringRef() == "__source__" && item.value().isString()) {
      report.source = item.value().toStringRef();
    }
  }
  KDSEG_CHECK(!report.source.empty(), path, ": no \"__source__\" entry (timm:<model> or torchvision:<model>)");
  const bool torchvision = report.source.rfind("torchvision:", 0) == 0;
  auto params = model.named_parameters();
  auto buffers = model.named_buffers();
  torch::NoGradGuard no_grad;
  for (const auto& item : dict) {
    const std::string name = item.key().toStringRef();
    if (name == "__source__") continue;
    KDSEG_CHECK(item.value().isTensor(), path, ": entry ", name, " is not a tensor");
    const std::string target = encoder_tensor_name(name, torchvision);
    at::Tensor* destination = target.empty() ? nullptr : params.find(target);
    if (destination == nullptr && !target.empty()) destination = buffers.find(target);
    if (destination == nullptr) {
      report.skipped.push_back(name);
      continue;
    }
    at::Tensor source = item.value().toTensor();
    if (source.dim() == 4 && destination->dim() == 4 && source.size(1) != destination->size(1) &&
        destination->size(1) == 1) {
      source = source.sum(1, /*keepdim=*/true);  // RGB stem on a 1-channel input
    }
    KDSEG_CHECK(source.sizes() == destination->sizes(), path, ": ", name, " has shape ", source.sizes(), " but ",
                target, " of ", enum_name(model.options().encoder()), " (width ", model.options().width(), ") has ",
                destination->sizes(), "; export the matching network");
    destination->copy_(source);
    ++report.loaded;
  }
  KDSEG_CHECK(report.loaded > 0, path, ": no tensor matched the encoder of ", enum_name(model.options().encoder()));
  return report;
}

}  // namespace kdseg::models
