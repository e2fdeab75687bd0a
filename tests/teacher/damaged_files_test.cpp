// Checkpoints and TorchScript modules whose bytes changed after they were written: LibTorch's
// reader loads a flipped bit in a weight silently, kdseg refuses the file naming the record.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/adamw.h"
#include "core/error.h"
#include "core/models/checkpoint.h"
#include "core/zip_check.h"
#include "teacher/model_loader.h"
#include "tests/data/temp_dir.h"

namespace {

namespace M = kdseg::models;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Flips one bit in the middle of `tensor`'s bytes as the file at `path` stores them.
void flip_bit_of(const std::string& path, const at::Tensor& tensor) {
  const at::Tensor t = tensor.detach().cpu().contiguous();
  const auto* data = static_cast<const char*>(t.data_ptr());
  std::string bytes = read_bytes(path);
  const auto at = std::search(bytes.begin(), bytes.end(), data, data + t.nbytes());
  ASSERT_NE(at, bytes.end()) << "the tensor's bytes are not in " << path;
  *(at + static_cast<std::ptrdiff_t>(t.nbytes() / 2)) ^= 0x10;
  write_bytes(path, bytes);
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const kdseg::Error& e) {
    return e.what();
  }
  return "no error";
}

std::string save_small_checkpoint(const std::string& path, at::Tensor* largest = nullptr) {
  torch::manual_seed(3);
  M::UNet model(M::UNetOptions().width(0.125).classes(2));
  kdseg::MultiTensorAdamW optimizer(kdseg::unet_param_groups(*model, 1e-3, 0.01), torch::optim::AdamWOptions(1e-3));
  M::CheckpointInfo info;
  info.config = "{}";
  info.classes = 2;
  M::save_checkpoint(path, model, optimizer, info);
  if (largest != nullptr) {
    for (const auto& p : model->parameters())
      if (!largest->defined() || p.numel() > largest->numel()) *largest = p.detach().clone();
  }
  return path;
}

TEST(DamagedFiles, AFlippedBitInACheckpointsWeightIsRefusedNamingTheRecord) {
  kdseg::test::TempDir dir;
  at::Tensor largest;
  const std::string path = save_small_checkpoint(dir.file("last.pt"), &largest);
  EXPECT_EQ(kdseg::zip_damage(path), "");
  EXPECT_EQ(M::Checkpoint(path, c10::kCPU).info().classes, 2);

  flip_bit_of(path, largest);
  const std::string damage = kdseg::zip_damage(path);
  EXPECT_NE(damage.find("does not match its CRC-32"), std::string::npos) << damage;
  EXPECT_EQ(damage.rfind("record ", 0), 0u) << damage;  // names the record
  for (const std::string& message : {error_of([&] { M::Checkpoint(path, c10::kCPU); }),
                                     error_of([&] { M::Checkpoint::open_if_checkpoint(path, c10::kCPU); }),
                                     error_of([&] { kdseg::teacher::load_model(path); })}) {
    EXPECT_NE(message.find(path + ": " + damage), std::string::npos) << message;
    EXPECT_NE(message.find("use an intact copy of the checkpoint"), std::string::npos) << message;
  }
}

TEST(DamagedFiles, AFlippedBitInATorchScriptModuleIsRefused) {
  kdseg::test::TempDir dir;
  const std::string path = dir.file("t.pt");
  torch::jit::Module module("FrozenModel");
  torch::manual_seed(2);
  const at::Tensor w = torch::randn({3, 1, 1, 1});
  module.register_parameter("w", w, false);
  module.define("def forward(self, x):\n    return torch.conv2d(x, self.w)\n");
  module.save(path);
  EXPECT_EQ(kdseg::teacher::load_torchscript_model(path)->classes(), 3);

  flip_bit_of(path, w);
  const std::string message = error_of([&] { kdseg::teacher::load_model(path); });
  EXPECT_NE(message.find("does not match its CRC-32"), std::string::npos) << message;
  EXPECT_NE(message.find("use an intact copy of the module"), std::string::npos) << message;
}

// A copy cut short keeps no end record to read; one whose directory is kept but whose records
// are cut (the end record copied on, as some repair tools do) is named as cut short.
TEST(DamagedFiles, ACutCopyAndOtherFilesAreToldApart) {
  kdseg::test::TempDir dir;
  const std::string bytes = read_bytes(save_small_checkpoint(dir.file("whole.pt")));
  const std::string cut = dir.file("cut.pt");
  write_bytes(cut, bytes.substr(0, bytes.size() / 2) + bytes.substr(bytes.size() - 22));
  EXPECT_NE(kdseg::zip_damage(cut).find("the file was cut short"), std::string::npos) << kdseg::zip_damage(cut);
  EXPECT_NE(error_of([&] { M::Checkpoint(cut, c10::kCPU); }).find("the file was cut short"), std::string::npos);

  write_bytes(dir.file("half.pt"), bytes.substr(0, bytes.size() / 2));  // no end record: LibTorch's reader says
  EXPECT_EQ(kdseg::zip_damage(dir.file("half.pt")), "");
  EXPECT_NE(error_of([&] { M::Checkpoint(dir.file("half.pt"), c10::kCPU); }).find("not a readable kdseg checkpoint"),
            std::string::npos);
  write_bytes(dir.file("text.pt"), "not a zip archive");
  EXPECT_EQ(kdseg::zip_damage(dir.file("text.pt")), "");
  EXPECT_NE(error_of([] { kdseg::zip_damage("/nonexistent/x.pt"); }).find("/nonexistent/x.pt: cannot open"),
            std::string::npos);
}

}  // namespace
