#include "teacher/model_loader.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/zip_check.h"
#include "teacher/export.h"

namespace kdseg::teacher {
namespace {

at::Tensor logits_of(const c10::IValue& out, const std::string& path) {
  if (out.isTensor()) return out.toTensor();
  if (out.isTuple() && !out.toTupleRef().elements().empty()) return logits_of(out.toTupleRef().elements()[0], path);
  if (out.isList() && out.toListRef().size() > 0) return logits_of(out.toListRef()[0], path);
  if (out.isGenericDict()) {
    for (const auto& item : out.toGenericDict()) {
      if (item.key().isString() && (item.key().toStringRef() == "out" || item.key().toStringRef() == "logits")) {
        return logits_of(item.value(), path);
      }
    }
  }
  KDSEG_THROW(path, ": the module returned ", out.tagKind(), ", not logits [B,C,H,W]");
}

class TorchScriptModel final : public FrozenModel {
 public:
  TorchScriptModel(const std::string& path, c10::Device device, int64_t probe) : path_(path), device_(device) {
    std::error_code ec;
    KDSEG_CHECK(std::filesystem::is_regular_file(path, ec), path, ": no such TorchScript file");
    torch::jit::ExtraFilesMap extra{{kExportMetadataFile, ""}};
    try {
      module_ = torch::jit::load(path, device, extra);
    } catch (const std::exception& e) {
      check_zip_intact(path, "module");  // damage is the clearer reason
      KDSEG_THROW(path,
                  ": not a TorchScript file torch::jit::load can read (save it with torch.jit.script(model).save): ",
                  error_message(e));
    }
    check_zip_intact(path, "module");  // torch::jit::load does not check the records' CRC-32s
    module_.eval();
    if (!extra[kExportMetadataFile].empty()) {  // exported by kdseg: its preprocessing and size
      const nlohmann::json metadata = nlohmann::json::parse(extra[kExportMetadataFile], nullptr, false);
      KDSEG_CHECK(metadata.is_object() && metadata.contains("preprocessing") && metadata.contains("input_size"), path,
                  ": its ", kExportMetadataFile, " is not kdseg's export metadata");
      preprocessing_ = metadata.at("preprocessing").dump();
      probe = metadata.at("input_size").get<int64_t>();
      exported_from_ = metadata.value("source", std::string());
      exported_temperature_ = metadata.value("temperature", 1.0);
    }
    const at::Tensor out = logits(torch::zeros({2, 1, probe, probe}, torch::TensorOptions().device(device)));
    std::ostringstream shape;
    shape << out.sizes();
    KDSEG_CHECK(out.dim() == 4 && out.size(0) == 2 && out.size(2) == probe && out.size(3) == probe && out.size(1) >= 2,
                path, ": for input [2,1,", probe, ",", probe, "] the module returned ", shape.str(),
                "; a teacher must return logits [B,C,H,W] with C >= 2 at the input size");
    classes_ = out.size(1);
  }

  at::Tensor logits(const at::Tensor& images) override {
    torch::NoGradGuard no_grad;
    try {
      return logits_of(module_.forward({images}), path_);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      KDSEG_THROW(path_, ": forward failed for input ", images.sizes(), ": ", error_message(e));
    }
  }
  int64_t classes() const override { return classes_; }
  std::string describe() const override {
    if (exported_from_.empty()) return "TorchScript " + path_;
    char t[32];
    std::snprintf(t, sizeof t, "%.4g", exported_temperature_);
    return "TorchScript " + path_ + " (exported by kdseg from " + exported_from_ +
           (exported_temperature_ != 1 ? std::string(", calibrated: T = ") + t : std::string()) + ")";
  }
  std::string preprocessing() const override { return preprocessing_; }
  int64_t parameters() const override {
    int64_t n = 0;
    for (const at::Tensor& p : module_.parameters()) n += p.numel();
    return n;
  }

 private:
  std::string preprocessing_, exported_from_;
  double exported_temperature_ = 1;
  std::string path_;
  c10::Device device_;
  torch::jit::Module module_;
  int64_t classes_ = 0;
};

}  // namespace

std::unique_ptr<FrozenModel> load_torchscript_model(const std::string& path, c10::Device device, int64_t probe_size) {
  return std::make_unique<TorchScriptModel>(path, device, probe_size);
}

}  // namespace kdseg::teacher
