// GoogleTest entry point for kdseg's unit tests. Debian's LibTorch starts with one OpenMP
// thread; tests use two so that the parallel code paths run.
#include <gtest/gtest.h>
#include <torch/torch.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  torch::set_num_threads(2);
  return RUN_ALL_TESTS();
}
