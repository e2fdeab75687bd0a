#include "teacher/export.h"

#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "core/build_config.h"
#include "core/enum_names.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/hash.h"
#include "core/models/checkpoint.h"
#include "data/preprocessing.h"

namespace kdseg::teacher {
namespace {

// "encoder.layer1.0.conv1.weight" -> "encoder_layer1_0_conv1_weight": a TorchScript attribute name.
std::string attribute_name(const std::string& key) {
  std::string name = key;
  for (char& ch : name) {
    if (ch == '.') ch = '_';
  }
  return name;
}

}  // namespace

ExportSummary export_torchscript(const std::string& path, const std::string& output, int64_t size) {
  const models::Checkpoint checkpoint(path, c10::kCPU);
  KDSEG_CHECK(!checkpoint.info().preprocessing.empty(), path,
              ": has no preprocessing record (a checkpoint from before kdseg recorded it); export needs the window "
              "and size it was trained with: train it again, or predict with --window and --size instead");
  data::Preprocessing preprocessing = data::parse_preprocessing(checkpoint.info().preprocessing, path);
  if (size == 0) size = preprocessing.size;
  KDSEG_CHECK(size > 0, path, ": trained on native-size slices; give --size, the slice size the module will take");
  if (preprocessing.size != 0 && size != preprocessing.size) {
    KDSEG_THROW("--size ", size, ": ", path, " was trained on ", preprocessing.size, "-pixel slices; export it at ",
                "that size (predict resizes scans to it)");
  }
  preprocessing.size = size;

  // The network in float32, NCHW, eval mode, without gradients: what the tracer records.
  models::UNet net(checkpoint.unet_options());
  checkpoint.load_weights(net);
  net->eval();
  torch::NoGradGuard no_grad;
  for (at::Tensor& p : net->parameters()) {
    p.set_requires_grad(false);
    p.set_data(p.data().contiguous());
  }
  for (at::Tensor& b : net->buffers()) b.set_data(b.data().contiguous());

  // The module owns the network's tensors by name, so that the traced graph reads them as
  // attributes (the tracer maps a registered tensor to `self.<name>`).
  torch::jit::Module module("__torch__.kdseg.Segmenter");
  int64_t parameters = 0;
  for (const auto& item : net->named_parameters()) {
    KDSEG_CHECK(!module.hasattr(attribute_name(item.key())), path, ": two of its tensors are both named ",
                attribute_name(item.key()), " in TorchScript");
    module.register_parameter(attribute_name(item.key()), item.value(), /*is_buffer=*/false);
    parameters += item.value().numel();
  }
  for (const auto& item : net->named_buffers()) {
    KDSEG_CHECK(!module.hasattr(attribute_name(item.key())), path, ": two of its tensors are both named ",
                attribute_name(item.key()), " in TorchScript");
    module.register_buffer(attribute_name(item.key()), item.value());
  }

  const double temperature = checkpoint.info().temperature;
  torch::jit::Stack inputs{torch::zeros({1, 1, size, size})};
  auto traced = torch::jit::tracer::trace(
      inputs,
      [&](torch::jit::Stack in) -> torch::jit::Stack {
        at::Tensor logits = net->forward(in.at(0).toTensor()).logits;
        if (temperature != 1) logits = logits / temperature;
        return {logits};
      },
      [](const torch::autograd::Variable&) { return std::string(); }, /*strict=*/false, /*force_outplace=*/false,
      &module);
  const std::shared_ptr<torch::jit::Graph> graph = traced.first->graph;
  auto* forward = module._ivalue()->compilation_unit()->create_function(
      c10::QualifiedName(*module.type()->name(), "forward"), graph);
  module.type()->addMethod(forward);

  const RunConfig config = checkpoint.run_config();
  nlohmann::json metadata = {
      {"format", "kdseg torchscript 1"},
      {"kdseg_version", KDSEG_VERSION},
      {"source", path},
      {"source_hash", hash_file(path)},
      {"arch", enum_name(config.arch)},
      {"width", config.width},
      {"classes", checkpoint.info().classes},
      {"input_size", size},
      {"temperature", temperature},
      {"temperature_applied", true},
      {"label_values", preprocessing.label_value_of_class(checkpoint.info().classes)},
      {"preprocessing", nlohmann::json::parse(data::preprocessing_json(preprocessing))},
      {"input",
       "[B,1,S,S] float32: RAS axial slices resized to S (bilinear), HU clamped to the window and mapped "
       "to [-1, 1]"},
      {"output", "[B,C,S,S] logits, already divided by the temperature"}};
  torch::jit::ExtraFilesMap extra{{kExportMetadataFile, metadata.dump(1)}};
  std::ostringstream bytes;
  module.save(bytes, extra);
  write_file_atomic(output, bytes.str());
  return {size, checkpoint.info().classes, temperature, parameters, metadata.dump(1)};
}

}  // namespace kdseg::teacher
