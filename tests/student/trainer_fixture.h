// A real prepared store of synthetic data (4 cases of 32x32x10, 2 folds) and a tiny trainer
// configuration over it, for the trainer's tests on CPU and on CUDA.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/models/unet.h"
#include "data/prepared_store.h"
#include "dist/communicator.h"
#include "student/trainer.h"
#include "tests/data/temp_dir.h"

namespace kdseg::test {

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_small_dataset(dir.file("raw"), 4, 32, 10);
    kdseg::data::PrepareOptions p;
    p.input = dir.file("raw");
    p.output = dir.file("p.h5");
    p.size = 0;
    p.folds = 2;
    p.slices = kdseg::data::SliceSelection::kOrgan;
    kdseg::data::prepare_store(p);
    comm = kdseg::dist::make_communicator({kdseg::dist::Backend::kLocal});
  }
  kdseg::student::TrainConfig config(const std::string& output) const {
    kdseg::student::TrainConfig c;
    c.data = dir.file("p.h5");
    c.output = dir.file(output);
    c.width = 0.125;
    c.crop = 32;
    c.batch_size = 4;
    c.max_steps = 6;
    c.lr = 1e-3;
    c.workers = 2;
    c.log_every = 1;
    c.validate_every = 0;
    return c;
  }
  // Training with `c` fails with a kdseg::Error whose message contains `text`.
  void expect_train_error(const kdseg::student::TrainConfig& c, const std::string& text) const {
    try {
      kdseg::student::train(c, *comm);
      ADD_FAILURE() << "training succeeded; expected an error containing '" << text << "'";
    } catch (const kdseg::Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  }
  // The parameters and buffers of a checkpoint, loaded into a network of the test's shape.
  static std::vector<at::Tensor> parameters_of(const std::string& checkpoint) {
    torch::serialize::InputArchive archive, model_archive;
    archive.load_from(checkpoint, c10::kCPU);  // a GPU run's checkpoint too
    archive.read("model", model_archive);
    kdseg::models::UNet model(kdseg::models::UNetOptions().width(0.125));
    model->load(model_archive);
    std::vector<at::Tensor> out = model->parameters();
    for (const auto& b : model->buffers()) out.push_back(b);
    return out;
  }
  TempDir dir;
  std::unique_ptr<kdseg::dist::Communicator> comm;
};

}  // namespace kdseg::test
