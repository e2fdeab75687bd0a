#include "data/loader.h"

#include <hdf5.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "core/parse.h"
#include "core/random.h"
#include "data/chunked_rows.h"
#include "data/hdf5_util.h"
#include "data/soft_label_cache.h"

namespace kdseg::data {
namespace F = torch::nn::functional;
using torch::Tensor;

// --- the task ---------------------------------------------------------------------------------

Tensor Task::classes_of(const Tensor& labels) const {
  const Tensor table = torch::from_blob(const_cast<int64_t*>(class_of.data()), {256}, torch::kLong);
  return table.index({labels.to(torch::kLong)});
}

Tensor Task::window(const Tensor& hu) const {
  return (hu.to(torch::kFloat).clamp(hu_low, hu_high) - hu_low) * (2.0 / (hu_high - hu_low)) - 1.0;
}

Task make_task(const std::string& name, Layout layout, const std::string& cysts,
               std::optional<std::pair<double, double>> window) {
  Task task;
  task.name = name;
  task.class_of.fill(task.ignore_index);
  const std::vector<int> values = label_values(layout);
  const int tumour = tumour_label(layout), organ = organ_label(layout);
  if (name == "tumor" || name == "tumour") {
    task.classes = 2;
    for (int v : values) task.class_of[static_cast<size_t>(v)] = v == tumour ? 1 : 0;
    if (layout == Layout::kKits23) {
      KDSEG_CHECK(cysts == "organ" || cysts == "tumor" || cysts == "ignore", "--cysts must be organ, tumor or ignore");
      task.class_of[3] = cysts == "tumor" ? 1 : cysts == "ignore" ? task.ignore_index : 0;
    }
  } else if (name == "organ-tumor" || name == "organ-tumour") {
    task.classes = 3;
    for (int v : values) task.class_of[static_cast<size_t>(v)] = v == tumour ? 2 : v == organ ? 1 : 0;
    if (layout == Layout::kKits23) {
      KDSEG_CHECK(cysts == "organ" || cysts == "tumor" || cysts == "ignore", "--cysts must be organ, tumor or ignore");
      task.class_of[3] = cysts == "tumor" ? 2 : cysts == "ignore" ? task.ignore_index : 1;
    }
  } else if (name.rfind("map:", 0) == 0) {
    // "map:0:0,1:1,2:1,3:ignore"
    std::stringstream spec(name.substr(4));
    std::string pair;
    int64_t top = 0;
    while (std::getline(spec, pair, ',')) {
      const auto colon = pair.find(':');
      KDSEG_CHECK(colon != std::string::npos, "--task ", name, ": expected value:class pairs, got '", pair, "'");
      const std::string label_text = pair.substr(0, colon), target = pair.substr(colon + 1);
      const auto number = [&](const std::string& text, const char* what) {
        const std::optional<int64_t> v = parse_integer(text);
        KDSEG_CHECK(v && *v >= 0, "--task ", name, ": '", text, "' is not a ", what,
                    " (expected value:class pairs such as 0:0,1:1,2:ignore)");
        return *v;
      };
      const int64_t value = number(label_text, "label value");
      KDSEG_CHECK(std::find(values.begin(), values.end(), value) != values.end(), "--task ", name, ": label ", value,
                  " does not occur in ", layout_name(layout), " (its labels: 0-", values.back(), ")");
      const int64_t cls = target == "ignore" ? task.ignore_index : number(target, "class");
      task.class_of[static_cast<size_t>(value)] = cls;
      if (cls != task.ignore_index) top = std::max(top, cls);
    }
    task.classes = top + 1;
    KDSEG_CHECK(task.classes >= 2, "--task ", name, ": a map needs at least two classes");
  } else {
    KDSEG_THROW("unknown --task '", name, "': use tumor, organ-tumor or map:<value>:<class>,...");
  }
  const bool lits = layout == Layout::kLits;
  const auto w = window.value_or(lits ? std::make_pair(-60.0, 140.0) : std::make_pair(-200.0, 300.0));
  KDSEG_CHECK(w.first < w.second, "HU window must have low < high, got [", w.first, ", ", w.second, "]");
  task.hu_low = w.first;
  task.hu_high = w.second;
  return task;
}

// --- augmentation -----------------------------------------------------------------------------

namespace {

// Pads [C,H,W] at the bottom/right to at least `size` and crops size x size at (top, left).
Tensor pad_crop(const Tensor& t, int64_t size, int64_t top, int64_t left, double fill) {
  const int64_t h = t.size(1), w = t.size(2);
  Tensor padded = t;
  if (h < size || w < size) {
    padded = torch::full({t.size(0), std::max(h, size), std::max(w, size)}, fill, t.options());
    padded.narrow(1, 0, h).narrow(2, 0, w).copy_(t);
  }
  return padded.narrow(1, top, size).narrow(2, left, size).contiguous();
}

Sample crop_all(const Sample& in, int64_t size, int64_t top, int64_t left, int64_t ignore_index) {
  Sample out;
  out.image = pad_crop(in.image, size, top, left, -1.0);
  out.label = pad_crop(in.label.unsqueeze(0), size, top, left, static_cast<double>(ignore_index)).squeeze(0);
  if (in.extra.defined()) out.extra = pad_crop(in.extra, size, top, left, 0.0);
  return out;
}

}  // namespace

// Scale, flip and crop in one resampling of the output grid (grid_sample), so that the cost is
// that of the crop whatever the scale: output pixel (i, j) is pixel (top + i, left + j) of the
// slice scaled to round(H*s) x round(W*s) (the sampling positions of bilinear interpolation
// with align_corners=false), mirrored along dim 0 when flipped; positions outside the scaled
// slice are padding.
Sample augment(const Sample& in, const AugmentOptions& o, uint64_t seed, int64_t ignore_index) {
  Rng rng(seed);
  const double scale = o.scale_max > o.scale_min ? rng.uniform(o.scale_min, o.scale_max) : o.scale_min;
  const bool flip = o.flip && rng.bernoulli(0.5);
  const int64_t h = in.image.size(1), w = in.image.size(2);
  const int64_t sh = std::max<int64_t>(1, std::llround(static_cast<double>(h) * scale));
  const int64_t sw = std::max<int64_t>(1, std::llround(static_cast<double>(w) * scale));
  const int64_t out_h = o.crop > 0 ? o.crop : sh, out_w = o.crop > 0 ? o.crop : sw;
  const int64_t top = o.crop > 0 ? rng.uniform_int(0, std::max<int64_t>(0, sh - o.crop)) : 0;
  const int64_t left = o.crop > 0 ? rng.uniform_int(0, std::max<int64_t>(0, sw - o.crop)) : 0;
  if (sh == h && sw == w && !flip && out_h <= h && out_w <= w) {
    return crop_all(in, out_h, top, left, ignore_index);  // a plain crop: no resampling
  }
  // Source coordinates (pixel centres at integers) of every output pixel, per axis.
  const auto axis = [](int64_t n_out, int64_t offset, int64_t scaled, int64_t source, bool mirror) {
    Tensor dst = torch::arange(n_out, torch::kDouble) + static_cast<double>(offset);
    const Tensor inside = dst < static_cast<double>(scaled);
    if (mirror) dst = static_cast<double>(scaled - 1) - dst;
    const Tensor src = (dst + 0.5) * (static_cast<double>(source) / static_cast<double>(scaled)) - 0.5;
    // grid_sample's normalised coordinates (align_corners=false).
    return std::make_pair(((2 * src + 1) / static_cast<double>(source) - 1).to(torch::kFloat), inside);
  };
  const auto [gy, inside_y] = axis(out_h, top, sh, h, flip);
  const auto [gx, inside_x] = axis(out_w, left, sw, w, false);
  const Tensor grid = torch::stack({gx.view({1, out_w}).expand({out_h, out_w}), gy.view({out_h, 1}).expand({out_h, out_w})}, 2)
                          .unsqueeze(0);
  const Tensor outside = (inside_y.view({out_h, 1}) & inside_x.view({1, out_w})).logical_not();
  const auto sample = [&](const Tensor& t, torch::nn::functional::GridSampleFuncOptions::mode_t mode) {
    return F::grid_sample(t.unsqueeze(0), grid,
                          F::GridSampleFuncOptions().mode(mode).padding_mode(torch::kBorder).align_corners(false))
        .squeeze(0);
  };
  Sample out;
  out.image = sample(in.image, torch::kBilinear).masked_fill(outside.unsqueeze(0), -1.0);
  out.label = sample(in.label.unsqueeze(0).to(torch::kFloat), torch::kNearest)
                  .squeeze(0)
                  .round()
                  .to(torch::kLong)
                  .masked_fill(outside, ignore_index);
  if (in.extra.defined()) out.extra = sample(in.extra, torch::kBilinear).masked_fill(outside.unsqueeze(0), 0.0);
  return out;
}

Sample center_crop(const Sample& in, int64_t crop, int64_t ignore_index) {
  if (crop <= 0) return in;
  const int64_t h = in.image.size(1), w = in.image.size(2);
  // A slice smaller than the crop is padded around its centre.
  Sample centred = in;
  const int64_t pad_h = std::max<int64_t>(0, crop - h), pad_w = std::max<int64_t>(0, crop - w);
  if (pad_h > 0 || pad_w > 0) {
    const std::vector<int64_t> pad{pad_w / 2, pad_w - pad_w / 2, pad_h / 2, pad_h - pad_h / 2};
    centred.image = F::pad(in.image, F::PadFuncOptions(pad).value(-1.0));
    centred.label = F::pad(in.label.unsqueeze(0), F::PadFuncOptions(pad).value(static_cast<double>(ignore_index))).squeeze(0);
    if (in.extra.defined()) centred.extra = F::pad(in.extra, F::PadFuncOptions(pad).value(0.0));
  }
  const int64_t top = (centred.image.size(1) - crop) / 2, left = (centred.image.size(2) - crop) / 2;
  return crop_all(centred, crop, top, left, ignore_index);
}

// --- sampling ---------------------------------------------------------------------------------

DistributedSampler::DistributedSampler(std::vector<int64_t> rows, int rank, int world_size, int64_t global_batch,
                                       uint64_t seed, bool drop_last)
    : rows_(std::move(rows)), rank_(rank), world_(world_size), global_batch_(global_batch), seed_(seed),
      drop_last_(drop_last) {
  KDSEG_CHECK(world_ >= 1 && rank_ >= 0 && rank_ < world_, "sampler: rank ", rank_, " outside [0, ", world_, ")");
  KDSEG_CHECK(global_batch_ >= world_ && global_batch_ % world_ == 0, "--batch-size ", global_batch_,
              " is the global batch: it must be a multiple of the number of ranks (", world_, ")");
  KDSEG_CHECK(!rows_.empty(), "sampler: no slices to sample from");
}

int64_t DistributedSampler::steps_per_epoch() const {
  const int64_t n = static_cast<int64_t>(rows_.size());
  return drop_last_ ? std::max<int64_t>(1, n / global_batch_) : (n + global_batch_ - 1) / global_batch_;
}

std::vector<std::vector<DistributedSampler::Item>> DistributedSampler::batches(int64_t epoch) const {
  std::vector<int64_t> order = rows_;
  Rng rng(derive_seed(seed_, {0x5A3D, static_cast<uint64_t>(epoch)}));
  for (size_t i = order.size(); i > 1; --i) {
    std::swap(order[i - 1], order[static_cast<size_t>(rng.uniform_int(0, static_cast<int64_t>(i) - 1))]);
  }
  const int64_t steps = steps_per_epoch();
  std::vector<std::vector<Item>> out(static_cast<size_t>(steps));
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t j = rank_; j < global_batch_; j += world_) {
      const int64_t position = s * global_batch_ + j;
      // Padding repeats the epoch from its start (a batch smaller than the data set is full).
      const int64_t row = order[static_cast<size_t>(position % static_cast<int64_t>(order.size()))];
      out[static_cast<size_t>(s)].push_back(
          {row, derive_seed(seed_, {static_cast<uint64_t>(epoch), static_cast<uint64_t>(position)})});
    }
  }
  return out;
}

std::vector<int64_t> evaluation_rows(const std::vector<int64_t>& rows, int rank, int world) {
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t begin = n * rank / world, end = n * (rank + 1) / world;
  return std::vector<int64_t>(rows.begin() + begin, rows.begin() + end);
}

std::vector<std::vector<DistributedSampler::Item>> evaluation_plan(const std::vector<int64_t>& rows, int64_t batch) {
  std::vector<std::vector<DistributedSampler::Item>> plan;
  for (size_t i = 0; i < rows.size(); i += static_cast<size_t>(batch)) {
    std::vector<DistributedSampler::Item> items;
    for (size_t j = i; j < std::min(rows.size(), i + static_cast<size_t>(batch)); ++j) items.push_back({rows[j], 0});
    plan.push_back(std::move(items));
  }
  return plan;
}

// --- reading slices: compressed chunks under a lock, decoding outside it -------------------------

namespace {

class ChunkReader {
 public:
  explicit ChunkReader(const std::string& path) : file_(open_store(path)), image_(file_, path, "slices/image"),
                                                  label_(file_, path, "slices/label") {
    KDSEG_CHECK(image_.row_shape().size() == 2 && label_.row_shape() == image_.row_shape(), path,
                ": /slices/image and /slices/label must both be [N,H,W]");
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

 private:
  static h5::Handle open_store(const std::string& path) {
    h5::quiet_errors();
    const h5::Lock lock(h5::library_mutex());
    h5::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    KDSEG_CHECK(file.get() >= 0, path, ": cannot open the prepared store");
    KDSEG_CHECK(H5Aexists(file, "format") > 0 && h5::read_string_attribute(file, "format") == "kdseg prepared store 1",
                path, ": not a kdseg prepared store");
    return file;
  }

  h5::Handle file_;
  ChunkedRows image_, label_;
};

}  // namespace

// --- the batch loader ---------------------------------------------------------------------------

struct BatchLoader::Impl {
  ChunkReader reader;
  Task task;
  LoaderOptions options;
  std::vector<std::vector<DistributedSampler::Item>> plan;
  std::mutex mutex;
  std::condition_variable ready, space;
  std::map<size_t, Batch> done;
  size_t next_to_take = 0;
  size_t next_to_build = 0;
  std::exception_ptr error;
  bool stop = false;
  std::vector<std::thread> workers;

  Impl(const std::string& path, Task t, LoaderOptions o, std::vector<std::vector<DistributedSampler::Item>> p)
      : reader(path), task(std::move(t)), options(o), plan(std::move(p)) {}

  Batch build(const std::vector<DistributedSampler::Item>& items) {
    std::vector<Tensor> images, labels, soft;
    Batch batch;
    for (const auto& item : items) {
      Sample s{task.window(reader.image(item.row)).unsqueeze(0), task.classes_of(reader.label(item.row)), Tensor()};
      if (options.soft_labels) s.extra = options.soft_labels->probabilities(item.row, options.temperature);
      s = options.train ? augment(s, options.augment, item.seed, task.ignore_index)
                        : center_crop(s, options.augment.crop, task.ignore_index);
      images.push_back(s.image);
      labels.push_back(s.label);
      if (s.extra.defined()) soft.push_back(s.extra);
      batch.rows.push_back(item.row);
    }
    batch.images = torch::stack(images);
    batch.labels = torch::stack(labels);
    if (!soft.empty()) batch.soft = torch::stack(soft);
    if (options.pin_memory) {
      // Page-locked, so that the trainer's copy to the GPU is asynchronous.
      batch.images = batch.images.pin_memory();
      batch.labels = batch.labels.pin_memory();
      if (batch.soft.defined()) batch.soft = batch.soft.pin_memory();
    }
    return batch;
  }

  void work() {
    while (true) {
      size_t index;
      {
        std::unique_lock<std::mutex> lock(mutex);
        space.wait(lock, [&] {
          return stop || next_to_build >= plan.size() ||
                 next_to_build < next_to_take + static_cast<size_t>(std::max(1, options.prefetch));
        });
        if (stop || next_to_build >= plan.size()) return;
        index = next_to_build++;
      }
      try {
        Batch batch = build(plan[index]);
        std::lock_guard<std::mutex> lock(mutex);
        done.emplace(index, std::move(batch));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
      }
      ready.notify_all();
    }
  }
};

BatchLoader::BatchLoader(const std::string& store, Task task, LoaderOptions options,
                         std::vector<std::vector<DistributedSampler::Item>> plan)
    : impl_(std::make_unique<Impl>(store, std::move(task), options, std::move(plan))) {
  const int workers = std::max(1, options.workers);
  for (int w = 0; w < workers; ++w) impl_->workers.emplace_back([this] { impl_->work(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop = true;
  }
  impl_->space.notify_all();
  for (auto& t : impl_->workers) t.join();
}

std::optional<Batch> BatchLoader::next() {
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(impl_->mutex);
  if (impl_->next_to_take >= impl_->plan.size()) return std::nullopt;
  impl_->ready.wait(lock, [&] { return impl_->error || impl_->done.count(impl_->next_to_take) > 0; });
  if (impl_->error) std::rethrow_exception(impl_->error);
  Batch batch = std::move(impl_->done.at(impl_->next_to_take));
  impl_->done.erase(impl_->next_to_take);
  ++impl_->next_to_take;
  lock.unlock();
  impl_->space.notify_all();
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return batch;
}

}  // namespace kdseg::data
