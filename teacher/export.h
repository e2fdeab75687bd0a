// `kdseg export`: a kdseg checkpoint as a TorchScript module that PyTorch loads without kdseg
// (torch.jit.load), for Triton, a MONAI bundle or `torch.onnx.export`.
//
// The module is built in C++: the checkpoint's UNet (in eval mode, float32, NCHW weights) is
// traced by LibTorch's tracer at the input size, with its parameters and buffers registered as
// the module's own (so the file holds them by name, e.g. `encoder_layer1_0_conv1_weight`) and its
// temperature applied to the logits. Its forward maps [B,1,S,S] preprocessed slices (the HU
// window mapped to [-1, 1], RAS axial slices at the recorded size S) to logits [B,C,S,S]; any
// batch size, the one size (the decoder's resampling sizes are traced as constants).
//
// The file carries kdseg.json as an extra file (Python: torch.jit.load(p, _extra_files={"kdseg.json": ""})):
//   {"format": "kdseg torchscript 1", "kdseg_version": ..., "source": <checkpoint>, "source_hash": ...,
//    "arch": ..., "width": ..., "classes": C, "input_size": S, "temperature": T (applied),
//    "label_values": [...], "preprocessing": {data/preprocessing.h}}
// kdseg's own loader reads it back (teacher/model_loader.h): an exported module is a --model of
// predict and evaluate and a --teacher of precompute, with its preprocessing.
#pragma once

#include <cstdint>
#include <string>

namespace kdseg::teacher {

// The name of the metadata file inside an exported module.
inline constexpr const char* kExportMetadataFile = "kdseg.json";

struct ExportSummary {
  int64_t input_size = 0;
  int64_t classes = 0;
  double temperature = 1;
  int64_t parameters = 0;
  std::string metadata;  // kdseg.json
};

// Writes `checkpoint` to `output` (atomically) as a TorchScript module for inputs of
// `size` x `size` (0: the size of its training slices; required for a model trained on
// native-size slices). Errors name the file.
ExportSummary export_torchscript(const std::string& checkpoint, const std::string& output, int64_t size = 0);

}  // namespace kdseg::teacher
