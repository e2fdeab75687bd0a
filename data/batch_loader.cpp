#include "data/batch_loader.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "core/error.h"
#include "core/ordered_pipeline.h"
#include "data/chunked_rows.h"
#include "data/hdf5_util.h"
#include "data/prepared_store.h"
#include "data/raters.h"
#include "data/soft_label_cache.h"

namespace kdseg::data {
namespace {
using torch::Tensor;

// --- reading slices: compressed chunks under a lock, decoding outside it -------------------------

class ChunkReader {
 public:
  explicit ChunkReader(const std::string& path)
      : file_(PreparedStore::open_file(path)), image_(file_, path, store::kImage), label_(file_, path, store::kLabel) {
    KDSEG_CHECK(image_.row_shape().size() == 2 && label_.row_shape() == image_.row_shape(), path,
                ": /slices/image and /slices/label must both be [N,H,W]");
    bool has_raters, has_majority;
    {
      const h5::Lock lock(h5::library_mutex());
      has_raters = h5::exists(file_, store::kRaters);
      has_majority = h5::exists(file_, store::kMajority);
    }
    if (has_raters) raters_.emplace(file_, path, store::kRaters);
    if (has_majority) {
      majority_.emplace(file_, path, store::kMajority);
      KDSEG_CHECK(majority_->row_shape() == label_.row_shape() && majority_->element_size() == 1, path,
                  ": /slices/majority must be [N,H,W] uint8 as /slices/label");
    }
    KDSEG_CHECK(label_.element_size() == 1 && !label_.is_float(), path, ": /slices/label must be uint8");
    KDSEG_CHECK(image_.is_float() ? image_.element_size() == 4 : image_.element_size() == 2, path,
                ": /slices/image must be float32 or int16");
  }

  Tensor image(int64_t row) const {
    std::vector<unsigned char> bytes = image_.read(row);
    const at::ScalarType type = image_.is_float() ? at::kFloat : at::kShort;
    // A copy: the buffer goes away on return (to(kFloat) alone would alias it for float32).
    return torch::from_blob(bytes.data(), image_.row_shape(), type).to(torch::kFloat, false, true);
  }
  Tensor label(int64_t row) const {
    std::vector<unsigned char> bytes = label_.read(row);
    return torch::from_blob(bytes.data(), label_.row_shape(), torch::kByte).clone();
  }
  bool has_raters() const { return raters_.has_value(); }
  Tensor raters(int64_t row) const {  // [R,H,W] uint8
    std::vector<unsigned char> bytes = raters_->read(row);
    return torch::from_blob(bytes.data(), raters_->row_shape(), torch::kByte).clone();
  }
  // The raters' majority as prepare aggregated it (KiTS stores); without it, the loader votes.
  bool has_majority() const { return majority_.has_value(); }
  Tensor majority(int64_t row) const {  // [H,W] uint8 label values
    std::vector<unsigned char> bytes = majority_->read(row);
    return torch::from_blob(bytes.data(), majority_->row_shape(), torch::kByte).clone();
  }

 private:
  h5::Handle file_;
  ChunkedRows image_, label_;
  std::optional<ChunkedRows> raters_, majority_;
};

}  // namespace

// --- the batch loader ---------------------------------------------------------------------------

struct BatchLoader::Impl {
  ChunkReader reader;
  std::unique_ptr<PreparedStore> store;  // the case table, for RaterLabels::kWeighted
  Task task;
  LoaderOptions options;
  std::vector<std::vector<DistributedSampler::Item>> plan;
  // Last: its workers stop before the members above go.
  std::unique_ptr<OrderedPipeline<Batch>> batches;

  Impl(const std::string& path, Task loader_task, LoaderOptions loader_options,
       std::vector<std::vector<DistributedSampler::Item>> loader_plan)
      : reader(path), task(std::move(loader_task)), options(std::move(loader_options)), plan(std::move(loader_plan)) {
    KDSEG_CHECK(options.raters == RaterLabels::kNone || reader.has_raters(), path,
                ": the store keeps no raters (prepare a multi-rater dataset, or use --labels hard)");
    if (options.raters == RaterLabels::kWeighted) store = std::make_unique<PreparedStore>(path);
  }

  // The sample's label [H,W] (task classes) and, for the soft rater kinds, its rater mean [C,H,W].
  std::pair<Tensor, Tensor> labels_of(const DistributedSampler::Item& item) const {
    if (options.raters == RaterLabels::kNone) return {task.classes_of(reader.label(item.row)), Tensor()};
    const Tensor raters = task.classes_of(reader.raters(item.row));  // [R,H,W]
    const int64_t count = raters.size(0);
    if (options.raters == RaterLabels::kRandom) return {raters[random_rater(item.seed, count)], Tensor()};
    const Tensor votes = class_votes(raters, task.classes);
    // KiTS's majority is voted per instance at prepare (data/raters.h); other stores' by class here.
    const Tensor majority =
        reader.has_majority() ? task.classes_of(reader.majority(item.row)) : majority_class(votes, task.ignore_index);
    if (options.raters == RaterLabels::kMajority) return {majority, Tensor()};
    // The uniform mean is the votes over the raters who labelled the pixel (0 where none did).
    if (options.raters == RaterLabels::kMean) return {majority, votes / votes.sum(0).clamp_min(1)};
    const auto& weights =
        store->rater_agreement()[static_cast<size_t>(store->slice_case()[static_cast<size_t>(item.row)])];
    return {majority, weighted_mean(raters, weights, task.classes, task.ignore_index)};
  }

  Batch build(const std::vector<DistributedSampler::Item>& items) {
    std::vector<Tensor> images, labels, soft, rater_soft;
    Batch batch;
    for (const auto& item : items) {
      Tensor image = task.window(reader.image(item.row)).unsqueeze(0);
      auto [label, rater_mean] = labels_of(item);
      Sample sample{image, label, Tensor()};
      // The soft maps follow the image's transform together: the teacher's, then the raters'.
      std::vector<Tensor> extra;
      if (options.soft_labels) extra.push_back(options.soft_labels->probabilities(item.row, options.temperature));
      if (rater_mean.defined()) extra.push_back(rater_mean);
      if (!extra.empty()) sample.extra = torch::cat(extra);
      sample = options.train ? augment(sample, options.augment, item.seed, task.ignore_index)
                             : center_crop(sample, options.augment.crop, task.ignore_index);
      images.push_back(sample.image);
      labels.push_back(sample.label);
      if (sample.extra.defined()) {
        const int64_t c = task.classes;
        if (options.soft_labels) soft.push_back(sample.extra.narrow(0, 0, c));
        if (rater_mean.defined()) rater_soft.push_back(sample.extra.narrow(0, sample.extra.size(0) - c, c));
      }
      batch.rows.push_back(item.row);
    }
    batch.images = torch::stack(images);
    batch.labels = torch::stack(labels);
    if (!soft.empty()) batch.soft = torch::stack(soft);
    if (!rater_soft.empty()) batch.rater_soft = torch::stack(rater_soft);
    if (options.pin_memory) {
      // Page-locked, so that the trainer's copy to the GPU is asynchronous.
      for (Tensor* t : {&batch.images, &batch.labels, &batch.soft, &batch.rater_soft}) {
        if (t->defined()) *t = t->pin_memory();
      }
    }
    return batch;
  }
};

BatchLoader::BatchLoader(const std::string& store, Task task, LoaderOptions options,
                         std::vector<std::vector<DistributedSampler::Item>> plan)
    : impl_(std::make_unique<Impl>(store, std::move(task), options, std::move(plan))) {
  Impl& impl = *impl_;
  impl.batches = std::make_unique<OrderedPipeline<Batch>>(
      static_cast<int64_t>(impl.plan.size()), std::max(1, options.workers), std::max(1, options.prefetch),
      [&impl](int64_t index) { return impl.build(impl.plan[static_cast<size_t>(index)]); });
}

BatchLoader::~BatchLoader() = default;

std::optional<Batch> BatchLoader::next() {
  const auto start = std::chrono::steady_clock::now();
  std::optional<Batch> batch = impl_->batches->next();
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return batch;
}

}  // namespace kdseg::data
