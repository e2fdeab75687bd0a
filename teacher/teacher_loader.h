// Teachers from files: a kdseg checkpoint (`kdseg train`: its UNet in eval mode) or any
// TorchScript module that maps [B,1,H,W] to logits [B,C,H,W]. Told apart by content.
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <string>

#include "core/teacher.h"

namespace kdseg::teacher {

std::unique_ptr<Teacher> load_teacher(const std::string& path, c10::Device device = c10::kCPU);

}  // namespace kdseg::teacher
