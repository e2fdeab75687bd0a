// kdseg checkpoints: the one module that writes and reads them. `kdseg train` and `distill`
// save last.pt and best.pt and resume from them; teachers and evaluated students are built
// from them (teacher/model_loader.h).
//
// A checkpoint is a LibTorch archive (the zip file torch::serialize::OutputArchive writes):
//   format     string   "kdseg checkpoint 1 (<kdseg version>)"
//   config     string   the run's record as JSON (core/run_record.h); its arch and width
//                       describe the network
//   classes    int64    the task's class count: the network's output channels
//   step       int64    optimiser steps done
//   best_dice  float64  the best mean validation Dice so far, -1 before any validation
//   data_hash  string   the prepared store's content_hash (absent in the earliest checkpoints)
//   preprocessing string  JSON: the layout, HU window and in-plane size of the training store
//                       (data/preprocessing.h), which predict repeats on new scans; absent in
//                       checkpoints written before it
//   temperature float64 T: the model's probabilities are softmax(logits / T) (`kdseg calibrate`;
//                       absent: 1)
//   model      archive  the UNet's parameters and buffers
//   optimizer  archive  the optimiser's state (core/adamw.h); absent in a calibrated copy, which
//                       evaluates and teaches but does not resume
// Tensors are saved on whatever device they live on and loaded onto the reader's, so a GPU
// run resumes or is evaluated on a CPU and back.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/models/unet.h"
#include "core/run_record.h"

namespace torch::optim {
class Optimizer;
}

namespace kdseg::models {

struct CheckpointInfo {
  std::string config;  // JSON
  int64_t classes = 0;
  int64_t step = 0;
  double best_dice = -1;
  std::string data_hash;  // empty when the checkpoint predates it
  double temperature = 1;
  std::string preprocessing;  // JSON (data/preprocessing.h); empty when the checkpoint predates it
};

// Writes `path` atomically: a crash leaves the previous file whole.
void save_checkpoint(const std::string& path, const UNet& model, const torch::optim::Optimizer& optimizer,
                     const CheckpointInfo& info);

class Checkpoint;
// Writes `source`'s network and record to `path` (atomically) with `temperature`, and without
// the optimiser's state.
void save_calibrated_checkpoint(const std::string& path, const Checkpoint& source, double temperature);

class Checkpoint {
 public:
  // Reads `path` with its tensors on `device`. Throws kdseg::Error naming the file when it is
  // not a readable kdseg checkpoint.
  Checkpoint(const std::string& path, c10::Device device);
  // The checkpoint at `path`, or null when the file is of another kind (a TorchScript module),
  // with the reason in `why_not` when given.
  static std::unique_ptr<Checkpoint> open_if_checkpoint(const std::string& path, c10::Device device,
                                                        std::string* why_not = nullptr);
  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const std::string& path() const { return path_; }
  const CheckpointInfo& info() const { return info_; }
  // The run's record (info().config), read by its one reader: errors name the file.
  RunConfig run_config() const;
  // The network the checkpoint's configuration describes (architecture, width, classes),
  // before its weights are loaded. `base` supplies everything else (dropout, norm layers).
  UNetOptions unet_options(UNetOptions base = UNetOptions()) const;
  // The network with its weights, on the checkpoint's device, in the faster layout there
  // (channels_last_is_faster), in eval mode.
  UNet build_frozen_model() const;
  // Loads the weights into `model` (whose layout they then take) and the optimiser's state.
  // Errors name the file and what does not fit.
  void load_weights(UNet& model) const;
  void load_optimizer(torch::optim::Optimizer& optimizer) const;

 private:
  struct Archive;
  Checkpoint(std::string path, c10::Device device, std::unique_ptr<Archive> archive);
  std::string path_;
  c10::Device device_;
  std::unique_ptr<Archive> archive_;
  CheckpointInfo info_;
};

}  // namespace kdseg::models
