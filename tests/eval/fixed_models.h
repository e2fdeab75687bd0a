// Models whose predictions a test knows without running a network.
#pragma once

#include <torch/torch.h>

#include <string>

#include "core/frozen_model.h"

namespace kdseg::test {

// Predicts one class everywhere, with probability `p`.
class ConstantModel final : public FrozenModel {
 public:
  ConstantModel(int64_t classes, int64_t predicted, double p) : classes_(classes), predicted_(predicted), p_(p) {}
  at::Tensor logits(const at::Tensor& images) override {
    // softmax(log q) = q for normalised q.
    at::Tensor q = torch::full({images.size(0), classes_, images.size(2), images.size(3)},
                               (1 - p_) / static_cast<double>(classes_ - 1));
    q.select(1, predicted_).fill_(p_);
    return q.log();
  }
  int64_t classes() const override { return classes_; }
  std::string describe() const override { return "constant class " + std::to_string(predicted_); }

 private:
  int64_t classes_, predicted_;
  double p_;
};

// Two classes: class 1 inside rows [top, bottom) and columns [left, right) of every slice, so
// across a case's slices a box whose surface distances to the labels a test can work out.
class BoxModel final : public FrozenModel {
 public:
  BoxModel(int64_t top, int64_t bottom, int64_t left, int64_t right)
      : top_(top), bottom_(bottom), left_(left), right_(right) {}
  at::Tensor logits(const at::Tensor& images) override {
    at::Tensor out = torch::zeros({images.size(0), 2, images.size(2), images.size(3)});
    out.select(1, 1).narrow(1, top_, bottom_ - top_).narrow(2, left_, right_ - left_).fill_(1);
    return out;
  }
  int64_t classes() const override { return 2; }
  std::string describe() const override { return "a box of class 1"; }

 private:
  int64_t top_, bottom_, left_, right_;
};

}  // namespace kdseg::test
