// AdamW with multi-tensor updates: LibTorch's torch::optim::AdamW (same options, parameter
// groups, state and checkpoints) whose step() updates all parameters of a group with one
// _foreach_ call per operation instead of one call per parameter. On CUDA that is a handful
// of kernel launches per step instead of several per parameter, as Python's default
// (foreach) AdamW does; on CPU the arithmetic is the same, operation by operation.
#pragma once

#include <torch/optim/adamw.h>

#include <vector>

namespace kdseg {

class MultiTensorAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;

  // amsgrad is refused (the trainer does not use it).
  at::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace kdseg
