#include "dist/data_parallel.h"

#include <torch/torch.h>

#include "core/error.h"
#include "dist/backends.h"

namespace kdseg::dist {

DataParallel::DataParallel(std::shared_ptr<torch::nn::Module> module, Communicator& comm, DataParallelOptions options)
    : module_(std::move(module)), comm_(comm), options_(options) {
  KDSEG_CHECK(module_ != nullptr, "DataParallel: no module");
  KDSEG_CHECK(options_.first_bucket_bytes > 0 && options_.bucket_bytes > 0, "DataParallel: bucket sizes must be > 0");
  broadcast_state();
  if (comm_.size() == 1) return;
  build_buckets();
  use_thread_ = options_.overlap && comm_.backend() == Backend::kMpi && detail::mpi_supports_threads();
  if (use_thread_) {
    reducer_comm_ = comm_.duplicate();
    thread_ = std::thread([this] { communication_loop(); });
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    hooks_.push_back(slots_[i].param.register_hook([this, i](const at::Tensor& grad) { on_gradient(i, grad); }));
  }
}

DataParallel::~DataParallel() {
  for (size_t i = 0; i < hooks_.size(); ++i) slots_[i].param.remove_hook(hooks_[i]);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DataParallel::broadcast_state() {
  torch::NoGradGuard no_grad;
  const auto broadcast = [this](const at::Tensor& tensor) {
    at::Tensor data = tensor.detach();
    if (data.is_contiguous()) {
      comm_.broadcast(data, 0);
      return;
    }
    at::Tensor packed = data.contiguous();  // channels-last weights travel in logical order
    comm_.broadcast(packed, 0);
    data.copy_(packed);
  };
  for (const auto& tensor : module_->parameters()) broadcast(tensor);
  for (const auto& tensor : module_->buffers()) broadcast(tensor);
}

void DataParallel::build_buckets() {
  std::vector<at::Tensor> params;
  for (const auto& p : module_->parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  std::reverse(params.begin(), params.end());
  int64_t limit = options_.first_bucket_bytes, filled = 0;
  std::vector<size_t> current;
  const auto close = [&] {
    if (current.empty()) return;
    Bucket bucket;
    int64_t numel = 0;
    for (const size_t s : current) {
      slots_[s].bucket = buckets_.size();
      slots_[s].offset = numel;
      numel += slots_[s].numel;
    }
    bucket.buffer = torch::zeros({numel}, slots_[current.front()].param.options().requires_grad(false));
    bucket.slots = current;
    buckets_.push_back(std::move(bucket));
    current.clear();
    filled = 0;
    limit = options_.bucket_bytes;
  };
  for (const auto& p : params) {
    // Dense in any layout (channels-last included): buckets hold gradients in logical order.
    KDSEG_CHECK(p.is_non_overlapping_and_dense(),
                "DataParallel: a parameter is not dense (a view into another tensor?)");
    const bool same_kind = current.empty() || (slots_[current.front()].param.scalar_type() == p.scalar_type() &&
                                               slots_[current.front()].param.device() == p.device());
    if (!same_kind || (filled > 0 && filled + static_cast<int64_t>(p.nbytes()) > limit)) close();
    slots_.push_back(Slot{p, 0, 0, p.numel()});
    current.push_back(slots_.size() - 1);
    filled += static_cast<int64_t>(p.nbytes());
  }
  close();
  slot_seen_.assign(slots_.size(), 0);
  reset_for_next_backward();
}

void DataParallel::on_gradient(size_t slot, const at::Tensor& grad) {
  if (!sync_enabled_) return;
  Slot& s = slots_[slot];
  at::Tensor view = buckets_[s.bucket].buffer.narrow(0, s.offset, s.numel).view_as(s.param);
  {
    torch::NoGradGuard no_grad;
    view.copy_(grad);
    // Gradients accumulated under no_sync are in .grad already; this backward's are not yet.
    if (s.param.grad().defined()) view.add_(s.param.grad());
  }
  std::lock_guard<std::mutex> lock(mutex_);
  KDSEG_CHECK(!slot_seen_[slot],
              "DataParallel: a parameter received two gradients in one backward; call "
              "synchronize_gradients() after every backward (or use no_sync())");
  slot_seen_[slot] = 1;
  mark_ready(s.bucket);
}

void DataParallel::mark_ready(size_t bucket) {
  KDSEG_CHECK(buckets_[bucket].pending > 0, "DataParallel: bucket ", bucket, " completed twice");
  if (--buckets_[bucket].pending == 0) launch_ready_in_order();
}

void DataParallel::launch_ready_in_order() {
  // Launch only in bucket order, so that every rank issues the same sequence of collectives.
  while (next_to_launch_ < buckets_.size() && buckets_[next_to_launch_].pending == 0) {
    const size_t b = next_to_launch_++;
    buckets_[b].launched = true;
    if (use_thread_) {
      queue_.push_back(b);
      work_.notify_one();
    }
  }
}

void DataParallel::reduce(size_t bucket) {
  Communicator& comm = reducer_comm_ ? *reducer_comm_ : comm_;
  comm.all_reduce(buckets_[bucket].buffer, ReduceOp::kAverage);
}

void DataParallel::communication_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    work_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    const size_t b = queue_.front();
    queue_.erase(queue_.begin());
    lock.unlock();
    try {
      reduce(b);
    } catch (const std::exception& e) {
      // A failed reduction cannot be retried consistently across ranks: end the job.
      comm_.abort(std::string("gradient bucket reduction failed: ") + e.what());
    }
    lock.lock();
    ++reduced_;
    done_.notify_all();
  }
}

void DataParallel::synchronize_gradients() {
  if (comm_.size() == 1 || !sync_enabled_) return;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    // Parameters that took no part in this backward contribute zeros.
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (slot_seen_[i]) continue;
      Slot& s = slots_[i];
      at::Tensor view = buckets_[s.bucket].buffer.narrow(0, s.offset, s.numel);
      if (s.param.grad().defined()) view.copy_(s.param.grad().reshape({-1}));
      else view.zero_();
      slot_seen_[i] = 1;
      mark_ready(s.bucket);
    }
    if (use_thread_) {
      done_.wait(lock, [this] { return reduced_ == buckets_.size(); });
    }
  }
  if (!use_thread_) {
    for (size_t b = 0; b < buckets_.size(); ++b) reduce(b);
  }
  torch::NoGradGuard no_grad;
  for (Slot& s : slots_) {
    const at::Tensor view = buckets_[s.bucket].buffer.narrow(0, s.offset, s.numel).view_as(s.param);
    if (s.param.grad().defined()) s.param.mutable_grad().copy_(view);
    else s.param.mutable_grad() = view.clone();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  reset_for_next_backward();
}

void DataParallel::reset_for_next_backward() {
  for (auto& b : buckets_) {
    b.pending = b.slots.size();
    b.launched = false;
  }
  std::fill(slot_seen_.begin(), slot_seen_.end(), 0);
  next_to_launch_ = 0;
  reduced_ = 0;
}

bool DataParallel::all_ranks_have_batch(bool this_rank_has_one) {
  at::Tensor flag = torch::full({1}, this_rank_has_one ? 1 : 0, torch::kInt);
  all_reduce_any_device(comm_, flag, ReduceOp::kMin);
  return flag.item<int>() == 1;
}

}  // namespace kdseg::dist
