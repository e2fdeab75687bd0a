// The networks a run trains (--arch, and "arch" in config.json and every checkpoint): the
// paper's UNet (core/models/unet.h) on one of three ResNet-d encoders.
#pragma once

#include "core/enum_names.h"

namespace kdseg::models {

enum class Encoder { kResNet18d, kResNet34d, kResNet50d };
// parse_enum<models::Encoder>, enum_name.
inline constexpr EnumName<Encoder> kEncoderNames[] = {
    {Encoder::kResNet18d, "unet-resnet18d", ""},
    {Encoder::kResNet34d, "unet-resnet34d", ""},
    {Encoder::kResNet50d, "unet-resnet50d", ""},
};
constexpr EnumNames<Encoder> enum_names(EnumTag<Encoder>) { return kEncoderNames; }

}  // namespace kdseg::models
