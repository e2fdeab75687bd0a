// Uses kdseg's Dice semimetric loss from another CMake project.
#include <torch/torch.h>

#include <cstdio>

#include "core/losses/dml.h"

int main() {
  torch::manual_seed(0);
  const torch::Tensor logits = torch::randn({2, 3, 16, 16}, torch::requires_grad());
  const torch::Tensor labels = torch::randint(0, 3, {2, 16, 16}, torch::kLong);
  const torch::Tensor teacher = torch::softmax(torch::randn({2, 3, 16, 16}), 1);

  namespace L = kdseg::losses;
  const torch::Tensor hard = L::dml_loss(logits, labels);        // DML1 on hard labels
  const torch::Tensor soft = L::dml_loss(logits, teacher);       // DML1 on soft labels
  const torch::Tensor dice = L::soft_dice_loss(logits, labels);  // equal on hard labels
  (hard + soft).backward();

  std::printf("DML hard %.6f  soft Dice %.6f  DML soft %.6f\n", hard.item<double>(), dice.item<double>(),
              soft.item<double>());
  const bool ok = std::abs(hard.item<double>() - dice.item<double>()) < 1e-5 && logits.grad().defined();
  return ok ? 0 : 1;
}
