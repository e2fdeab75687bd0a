// The precompiled header shared by every LibTorch-using target (see cmake/KdsegHelpers.cmake).
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
