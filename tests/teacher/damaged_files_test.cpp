// Checkpoints and TorchScript modules whose bytes changed after they were written: LibTorch's
// reader loads a flipped bit in a weight silently, kdseg refuses the file naming the record.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
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
  EXPECT_EQ(kdseg::check_zip(path).damage, "");
  EXPECT_EQ(M::Checkpoint(path, c10::kCPU).info().classes, 2);

  flip_bit_of(path, largest);
  const std::string damage = kdseg::check_zip(path).damage;
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

// A copy cut short keeps its start but not its end record; one whose end record survives (bytes
// of the end copied on) is named by the directory it points past; other files are left to their
// readers, and a missing file is named.
TEST(DamagedFiles, ACutCopyAndOtherFilesAreToldApart) {
  kdseg::test::TempDir dir;
  const std::string bytes = read_bytes(save_small_checkpoint(dir.file("whole.pt")));
  const auto damage_of = [&](const std::string& name) { return kdseg::check_zip(dir.file(name)).damage; };
  write_bytes(dir.file("half.pt"), bytes.substr(0, bytes.size() / 2));
  EXPECT_NE(damage_of("half.pt").find("no end-of-central-directory record: the file was cut short"), std::string::npos)
      << damage_of("half.pt");
  EXPECT_NE(error_of([&] { M::Checkpoint(dir.file("half.pt"), c10::kCPU); }).find("the file was cut short"),
            std::string::npos);
  write_bytes(dir.file("cut.pt"), bytes.substr(0, bytes.size() / 2) + bytes.substr(bytes.size() - 22));
  EXPECT_NE(damage_of("cut.pt").find("the file was cut short or its end damaged"), std::string::npos)
      << damage_of("cut.pt");
  // Bytes appended in a copy: the archive still reads and checks, as LibTorch's reader takes it.
  write_bytes(dir.file("appended.pt"), bytes + "trailing bytes");
  EXPECT_EQ(damage_of("appended.pt"), "");
  EXPECT_EQ(M::Checkpoint(dir.file("appended.pt"), c10::kCPU).info().classes, 2);
  // An end record counting fewer entries than its directory holds.
  // LibTorch writes the zip64 end record, whose counts (8 bytes each, at 24 and 32) readers take.
  std::string fewer = bytes;
  uint64_t end64 = 0;
  std::memcpy(&end64, &fewer[fewer.size() - 22 - 20 + 8], sizeof end64);
  ASSERT_EQ(fewer.compare(end64, 4, "PK\x06\x06"), 0);
  for (const size_t field : {size_t{24}, size_t{32}}) {
    uint64_t count = 0;
    std::memcpy(&count, &fewer[end64 + field], sizeof count);
    ASSERT_GT(count, 1u);
    --count;
    std::memcpy(&fewer[end64 + field], &count, sizeof count);
  }
  write_bytes(dir.file("fewer.pt"), fewer);
  EXPECT_NE(damage_of("fewer.pt").find("entries its end record counts"), std::string::npos) << damage_of("fewer.pt");

  // An intact archive of another kind (torch.save of a dict): named as neither kind of model.
  c10::Dict<std::string, at::Tensor> state;
  state.insert("w", torch::ones({2}));
  const std::vector<char> pickled = torch::pickle_save(state);
  write_bytes(dir.file("state.pt"), std::string(pickled.begin(), pickled.end()));
  EXPECT_EQ(damage_of("state.pt"), "");
  EXPECT_NE(error_of([&] {
              kdseg::teacher::load_model(dir.file("state.pt"));
            }).find("an intact zip archive, but neither a kdseg checkpoint"),
            std::string::npos);

  write_bytes(dir.file("text.pt"), "not a zip archive");
  const kdseg::ZipCheck text = kdseg::check_zip(dir.file("text.pt"));
  EXPECT_FALSE(text.is_zip);
  EXPECT_EQ(text.damage, "");
  EXPECT_NE(error_of([] { kdseg::check_zip("/nonexistent/x.pt"); }).find("/nonexistent/x.pt: cannot open"),
            std::string::npos);
}

}  // namespace
