// Data parallel training: parameters and buffers broadcast from rank 0, gradients packed into
// buckets that are all-reduced (averaged) as soon as they are complete, while backward is
// still running.
//
//   DataParallel ddp(model, comm);           // collective: broadcasts rank 0's state
//   loss.backward();                         // buckets start reducing during backward
//   ddp.synchronize_gradients();             // collective: waits, writes averaged .grad
//   optimizer.step();
//
// Buckets follow the reverse order of model->parameters() (roughly the order in which
// backward produces gradients): the first holds about first_bucket_bytes, the others about
// bucket_bytes. They are reduced strictly in bucket order on every rank. On the MPI backend a
// communication thread (on a duplicate communicator) reduces them while autograd continues;
// on NCCL they are enqueued on the current CUDA stream from the gradient hooks.
#pragma once

#include <torch/nn/module.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "dist/communicator.h"

namespace kdseg::dist {

struct DataParallelOptions {
  int64_t first_bucket_bytes = int64_t{1} << 20;
  int64_t bucket_bytes = int64_t{25} << 20;
  // Start each bucket's reduction during backward (false: all after backward, for comparison).
  bool overlap = true;
};

class DataParallel {
 public:
  DataParallel(std::shared_ptr<torch::nn::Module> module, Communicator& comm, DataParallelOptions options = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Collective. Waits for every bucket and replaces each parameter's .grad by the average
  // over ranks. Parameters that got no gradient on a rank contribute zeros.
  void synchronize_gradients();

  // While the returned guard lives, backward passes only accumulate local gradients (gradient
  // accumulation); the next synchronised backward reduces the accumulated sum.
  class NoSync {
   public:
    explicit NoSync(DataParallel& ddp) : ddp_(ddp), previous_(ddp.sync_enabled_) { ddp_.sync_enabled_ = false; }
    ~NoSync() { ddp_.sync_enabled_ = previous_; }
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;

   private:
    DataParallel& ddp_;
    bool previous_;
  };
  NoSync no_sync() { return NoSync(*this); }

  // Collective. True while every rank still has a batch: loop on it so that ranks with an
  // uneven number of batches stop together instead of waiting in a collective.
  bool all_ranks_have_batch(bool this_rank_has_one);

  // Collective. Broadcasts rank 0's parameters and buffers (done by the constructor).
  void broadcast_state();

  size_t bucket_count() const { return buckets_.size(); }

 private:
  struct Slot {
    at::Tensor param;
    size_t bucket;
    int64_t offset, numel;
  };
  struct Bucket {
    at::Tensor buffer;  // flat, the parameters' dtype and device
    std::vector<size_t> slots;
    size_t pending = 0;
    bool launched = false;
  };

  void build_buckets();
  void on_gradient(size_t slot, const at::Tensor& grad);
  void mark_ready(size_t bucket);  // holds mutex_
  void launch_ready_in_order();    // holds mutex_
  void reduce(size_t bucket);
  void communication_loop();
  void reset_for_next_backward();

  std::shared_ptr<torch::nn::Module> module_;
  Communicator& comm_;
  DataParallelOptions options_;
  std::unique_ptr<Communicator> reducer_comm_;  // MPI: used only by the communication thread
  std::vector<Slot> slots_;
  std::vector<unsigned> hooks_;  // removed by the destructor: hooks must not outlive this object
  std::vector<Bucket> buckets_;
  std::vector<char> slot_seen_;
  bool sync_enabled_ = true;
  bool use_thread_ = false;
  size_t next_to_launch_ = 0;
  size_t reduced_ = 0;
  std::vector<size_t> queue_;
  bool stop_ = false;
  std::mutex mutex_;
  std::condition_variable work_, done_;
  std::thread thread_;
};

}  // namespace kdseg::dist
