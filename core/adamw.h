// AdamW with multi-tensor updates: LibTorch's torch::optim::AdamW (same options, parameter
// groups and state) whose step() updates all parameters of a group with one _foreach_ call per
// operation instead of one call per parameter. On CUDA that is a handful of kernel launches
// per step instead of several per parameter, as Python's default (foreach) AdamW does; on CPU
// the arithmetic is the same, operation by operation.
//
// Checkpoints key the state by group and position instead of by tensor address, as LibTorch
// does in a text form that changed between 1.x and 2.x (a 1.13 checkpoint's keys all read as 0
// in 2.x): a checkpoint moves between LibTorch versions, and so between the CPU and GPU builds.
// load() still reads LibTorch's own AdamW layout.
#pragma once

#include <torch/optim/adamw.h>

#include <vector>

namespace kdseg {
namespace models {
class UNetImpl;
}

// The paper's AdamW parameter groups of a UNet, in this order: encoder weights, encoder biases
// and normalisation weights (the 1-d parameters), decoder-and-heads weights, their 1-d
// parameters. The encoder learns at `lr`, the decoder and heads at 10x; weight decay applies to
// the weights only. The trainer and the benchmarks build their optimisers from it.
std::vector<torch::optim::OptimizerParamGroup> unet_param_groups(models::UNetImpl& net, double lr, double weight_decay);
// The learning rate of group `group` of unet_param_groups.
inline double unet_group_lr(int group, double lr) { return group >= 2 ? 10 * lr : lr; }

// Scales the gradients of `parameters` so that their joint L2 norm is at most `max_norm`, as
// torch.nn.utils.clip_grad_norm_ (scale max_norm / (norm + 1e-6) when below 1), and returns the
// norm before clipping as a float32 scalar tensor on the gradients' device. Unlike LibTorch's
// clip_grad_norm_, which returns a double, nothing is read back to the host: on a GPU the step
// does not wait for it. Parameters without a gradient are skipped; none at all gives norm 0.
at::Tensor clip_grad_norm(const std::vector<at::Tensor>& parameters, double max_norm);

class MultiTensorAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;

  // amsgrad is refused (the trainer does not use it).
  at::Tensor step(LossClosure closure = nullptr) override;

  // Per group: its options, its parameter count, and per parameter with a state its step
  // count and moments, under "group<g>/<position>".
  void save(torch::serialize::OutputArchive& archive) const override;
  // This class's layout or LibTorch's AdamW layout. The groups and their sizes must match.
  void load(torch::serialize::InputArchive& archive) override;
};

}  // namespace kdseg
