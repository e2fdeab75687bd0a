// The trainer, for teachers and students alike: the paper's UNet on a prepared store's fold,
// AdamW with parameter groups, warmup then linear decay, data parallel through kdseg::dist,
// exact resume, metrics.jsonl, validation by case.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <c10/core/Device.h>

#include "dist/communicator.h"

namespace kdseg {
class FrozenModel;
}

namespace kdseg::student {

struct TrainConfig {
  std::string data;                 // prepared store
  std::string output;               // folder: checkpoints, metrics.jsonl, config.json
  int fold = 0;
  std::string arch = "unet-resnet18d";
  double width = 1.0;               // channel multiplier (tests and quick runs)
  double dropout = 0.1;
  std::string task = "tumor";
  std::string labels = "hard";      // hard | ls (boundary label smoothing)
  double ls_epsilon = 0.5;
  int64_t ls_kernel = 3;
  std::string loss = "ce+dml";      // ce | dml | ce+dml (0.25 CE + 0.75 DML)
  int64_t epochs = 0;               // one of epochs and max_steps
  int64_t max_steps = 0;
  int64_t batch_size = 8;           // global, across ranks
  int64_t accumulate = 1;           // micro-batches per optimiser step
  int64_t crop = 384;
  double lr = 1e-4;                 // encoder; decoder and heads get 10x
  double weight_decay = 1e-2;
  double warmup = 0.01;             // fraction of the steps
  double clip_grad = 0;             // max gradient norm, 0: off
  uint64_t seed = 0;
  int workers = 2;
  int64_t log_every = 10;           // steps
  int64_t validate_every = 1;       // epochs (0: never)
  int64_t checkpoint_every = 0;     // steps (0: at the end of each epoch only)
  int64_t stop_after = 0;           // stop this invocation after N steps (0: run to the end)
  bool resume = false;              // continue the run in output (its last.pt)
  bool force = false;               // start over although output holds a run
  bool skip_nonfinite = false;
  bool deterministic = false;
  // cpu, or cuda: one GPU per rank (the node-local rank's), collectives over NCCL, cuDNN
  // autotuning (off with `deterministic`) and batches in page-locked memory.
  std::string device = "cpu";
  // Weights, and so activations, channels-last (NHWC): the layout of the fastest convolutions of
  // cuDNN and of oneDNN on CPU.
  bool channels_last = true;
  std::string precision = "auto";   // auto (bf16 on CUDA, fp32 on CPU) | bf16 (autocast, CUDA only) | fp32

  // Distillation (`kdseg distill`): soft labels from a precomputed cache, or from a teacher run
  // inside each step on the augmented batch ("online", as the reference implementation does).
  std::string teacher_mode = "none";   // none | cache | online
  std::string cache;                   // cache folder (teacher_mode cache)
  std::string teacher;                 // teacher file: its hash is checked against the cache; online: the teacher
  std::shared_ptr<FrozenModel> online_teacher;  // loaded by the caller for teacher_mode online
  double temperature = 1.0;            // softmax temperature of the soft labels and the KL term
  std::string dml_reduction = "global";  // global (DML over the global batch) | local (per rank)
};

struct TrainSummary {
  int64_t steps = 0;                // optimiser steps done, resumed ones included
  int64_t steps_this_run = 0;       // steps this invocation made
  int64_t skipped_steps = 0;
  double last_loss = 0;
  double best_dice = -1;            // mean tumour Dice over validation cases
};

// The device this rank trains on: the CPU, or for --device cuda the node-local rank's GPU. Throws
// kdseg::Error when there is none, or when the backend cannot reduce CUDA tensors (MPI).
c10::Device training_device(const TrainConfig& config, const dist::Communicator& comm);

// Collective over `comm`. Throws kdseg::Error naming the problem (missing fold, bad option,
// non-finite loss at step N, ...).
TrainSummary train(const TrainConfig& config, dist::Communicator& comm);

}  // namespace kdseg::student
