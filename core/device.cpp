#include "core/device.h"

#include "core/error.h"

namespace kdseg {

c10::DeviceType parse_device_type(const std::string& name) {
  if (name == "cpu") return c10::DeviceType::CPU;
  if (name == "cuda") return c10::DeviceType::CUDA;
  KDSEG_THROW("--device must be cpu or cuda, got '", name, "'");
}

const char* device_type_name(c10::DeviceType type) {
  switch (type) {
    case c10::DeviceType::CPU: return "cpu";
    case c10::DeviceType::CUDA: return "cuda";
    default: return "unsupported";
  }
}

Precision parse_precision(const std::string& name) {
  if (name == "auto") return Precision::kAuto;
  if (name == "bf16") return Precision::kBf16;
  if (name == "fp32") return Precision::kFp32;
  KDSEG_THROW("--precision must be auto, bf16 or fp32, got '", name, "'");
}

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::kAuto: return "auto";
    case Precision::kBf16: return "bf16";
    case Precision::kFp32: return "fp32";
  }
  return "?";
}

}  // namespace kdseg
