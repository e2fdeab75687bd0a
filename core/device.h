// Where a command runs and in which precision: parsed once from the command line (tools/), then
// passed as types. The concrete device (this rank's GPU) is resolved by the communicator
// (dist/communicator.h, rank_device).
#pragma once

#include <c10/core/Device.h>

#include <string>

namespace kdseg {

// "cpu" or "cuda". Throws kdseg::Error naming --device for anything else.
c10::DeviceType parse_device_type(const std::string& name);
const char* device_type_name(c10::DeviceType type);  // "cpu", "cuda"

// Numerics of the network's forward and backward.
enum class Precision {
  kAuto,  // bf16 autocast on CUDA, float32 on CPU
  kBf16,  // bf16 autocast (CUDA only)
  kFp32,  // IEEE float32 (no TF32 tensor cores)
};
Precision parse_precision(const std::string& name);  // auto | bf16 | fp32
const char* precision_name(Precision precision);
// Whether the network runs under bf16 autocast on `device`.
inline bool uses_bf16_autocast(Precision precision, c10::Device device) {
  return device.is_cuda() && precision != Precision::kFp32;
}

}  // namespace kdseg
