// Where a command runs and in which precision: parsed once from the command line (tools/), then
// passed as types. The concrete device (this rank's GPU) is resolved by the communicator
// (dist/communicator.h, rank_device).
#pragma once

#include <c10/core/Device.h>

#include "core/enum_names.h"

namespace kdseg {

// The devices a command runs on (--device): parse_enum<c10::DeviceType>, enum_name.
inline constexpr EnumName<c10::DeviceType> kDeviceTypeNames[] = {
    {c10::DeviceType::CPU, "cpu", ""},
    {c10::DeviceType::CUDA, "cuda", ""},
};
constexpr EnumNames<c10::DeviceType> enum_names(EnumTag<c10::DeviceType>) { return kDeviceTypeNames; }

// Numerics of the network's forward and backward.
enum class Precision {
  kAuto,  // bf16 autocast on CUDA, float32 on CPU
  kBf16,  // bf16 autocast (CUDA only)
  kFp32,  // IEEE float32 (no TF32 tensor cores)
};
inline constexpr EnumName<Precision> kPrecisionNames[] = {
    {Precision::kAuto, "auto", "bf16 autocast on CUDA, fp32 on CPU"},
    {Precision::kBf16, "bf16", ""},
    {Precision::kFp32, "fp32", ""},
};
constexpr EnumNames<Precision> enum_names(EnumTag<Precision>) { return kPrecisionNames; }

// Whether the network runs under bf16 autocast on `device`.
inline bool uses_bf16_autocast(Precision precision, c10::Device device) {
  return device.is_cuda() && precision != Precision::kFp32;
}

}  // namespace kdseg
