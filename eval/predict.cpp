#include "eval/predict.h"

#include <sys/stat.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "core/autocast.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/folder_lock.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/run_record.h"
#include "data/canonical_writer.h"
#include "data/nifti.h"
#include "data/orientation.h"
#include "data/prepared_store.h"
#include "data/task.h"
#include "dist/communicator.h"
#include "eval/held_out.h"
#include "eval/report_files.h"

namespace kdseg::eval {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;
using torch::Tensor;

namespace {

constexpr const char* kStateFolder = ".kdseg-predict";
constexpr const char* kRunFile = "run.json";
constexpr const char* kPredictionsFile = "predictions.json";

// "liver_3.nii.gz" -> "liver_3"; "case_0000.nii" -> "case_0000".
std::string strip_nifti(const std::string& name) {
  for (const char* ext : {".nii.gz", ".nii"}) {
    const std::string e(ext);
    if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0)
      return name.substr(0, name.size() - e.size());
  }
  return {};
}

bool is_nifti_name(const std::string& name) { return !strip_nifti(name).empty() && name.rfind("._", 0) != 0; }

// The NIfTI files directly in `dir`, sorted; macOS "._" companions left out.
std::vector<fs::path> nifti_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file() && is_nifti_name(entry.path().filename().string())) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// The cases of an MSD / nnU-Net raw folder's images: "<case>_0000" is channel 0 of <case>.
std::vector<PredictCase> channel_cases(const fs::path& images) {
  static const std::regex channel(R"((.*)_(\d{4}))");
  std::vector<PredictCase> cases;
  for (const fs::path& file : nifti_files(images)) {
    const std::string stem = strip_nifti(file.filename().string());
    std::smatch m;
    if (std::regex_match(stem, m, channel)) {
      KDSEG_CHECK(m[2] == "0000", file.string(), ": input channel ", m[2].str(),
                  "; kdseg's models take one CT channel (_0000)");
      cases.push_back({m[1].str(), file.string()});
    } else {
      cases.push_back({stem, file.string()});
    }
  }
  return cases;
}

// Sorted by id; two files of one id are an error naming both.
std::vector<PredictCase> sorted_unique(std::vector<PredictCase> cases, const std::string& input) {
  std::sort(cases.begin(), cases.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  for (size_t i = 1; i < cases.size(); ++i) {
    KDSEG_CHECK(cases[i].id != cases[i - 1].id, input, ": two scans of case ", cases[i].id, ": ", cases[i - 1].image,
                " and ", cases[i].image);
  }
  return cases;
}

// The files predict writes for case `id` of a task of `classes` classes, in the output folder.
std::vector<std::string> output_names(const std::string& id, int64_t classes) {
  const std::string stem = safe_file_name(id);
  std::vector<std::string> names = {stem + ".nii.gz", stem + "_probs.nii.gz"};
  if (classes > 2) {
    for (int64_t k = 1; k < classes; ++k) names.push_back(stem + "_probs_" + std::to_string(k) + ".nii.gz");
  }
  return names;
}

// No two cases may write one file (case "a"'s probabilities are "a_probs.nii.gz", case
// "a_probs"'s labels too), and no output may replace an input scan.
void check_output_names(const std::vector<PredictCase>& cases, int64_t classes, const std::string& output) {
  std::map<std::string, std::string> owner;
  std::error_code ec;
  for (const PredictCase& c : cases) {
    for (const std::string& name : output_names(c.id, classes)) {
      const auto [at, fresh] = owner.emplace(name, c.id);
      KDSEG_CHECK(fresh, "cases ", at->second, " and ", c.id, " would both write ", name, " in ", output,
                  "; rename one of the scans");
      KDSEG_CHECK(!fs::exists(c.image, ec) || !fs::exists(fs::path(output) / name, ec) ||
                      !fs::equivalent(c.image, fs::path(output) / name, ec),
                  output, "/", name, ": is the scan ", c.image, " itself; give an --output apart from the input");
    }
  }
}

// What kind of model it is: a kdseg checkpoint (it records its training) or a TorchScript module.
std::string model_kind(const FrozenModel& model) {
  return model.training_config().empty() ? "torchscript" : "kdseg checkpoint";
}

// Where the folder exists: that it is this user's own and that no other user may write into it
// (not a link, not another user's, not shared like /tmp), so that no file another user placed
// there is ever taken for predict's own.
void check_own_folder(const std::string& path) {
  refuse_symlink_output(path);
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) return;
  KDSEG_CHECK(S_ISDIR(info.st_mode), path, ": exists and is not a folder");
  KDSEG_CHECK(info.st_uid == ::geteuid(), path, ": a folder of another user (uid ", info.st_uid,
              "); predict writes only into its user's own folders");
  KDSEG_CHECK((info.st_mode & (S_IWGRP | S_IWOTH)) == 0, path,
              ": other users may write into it; give predict a folder of its own (e.g. a new one inside it)");
}

// A record of predict's own (a regular file of this user, not a link) as JSON; null otherwise.
nlohmann::json read_record(const std::string& path) {
  if (!is_own_regular_file(path)) return nullptr;
  nlohmann::json j = nlohmann::json::parse(read_file(path), nullptr, false);
  return j.is_object() ? j : nlohmann::json(nullptr);
}

// A string field of a record; empty when it is missing or not a string.
std::string text(const nlohmann::json& record, const char* key) {
  if (!record.is_object()) return {};
  const auto at = record.find(key);
  return at != record.end() && at->is_string() ? at->get<std::string>() : std::string();
}

// What identifies a scan's content for a rerun: its path, size and modification time.
nlohmann::json scan_stamp(const std::string& image) {
  struct stat info {};
  if (::stat(image.c_str(), &info) != 0) return nlohmann::json::object();
  return {{"input", fs::absolute(image).string()},
          {"input_bytes", static_cast<int64_t>(info.st_size)},
          {"input_mtime_ns", static_cast<int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec}};
}

// One case through the models: reads it, predicts every canonical axial slice and writes its files.
class CasePredictor {
 public:
  CasePredictor(const PredictOptions& o, std::vector<uint8_t> value_of_class, int64_t classes)
      : o_(o), value_of_class_(std::move(value_of_class)), classes_(classes) {}

  // Returns the case's record: its files, slices and seconds.
  nlohmann::json run(const PredictCase& c) {
    const auto start = std::chrono::steady_clock::now();
    const data::Volume volume = data::read_nifti(c.image, true, data::VoxelType::kAsStored);
    const std::array<int64_t, 3> shape = {volume.voxels.size(0), volume.voxels.size(1), volume.voxels.size(2)};
    const data::Reorientation r = data::canonical_reorientation(volume.affine, shape);
    const std::vector<std::string> names = output_names(c.id, classes_);
    std::vector<data::CanonicalWriter::File> files;
    for (size_t f = 0; f < names.size(); ++f) {
      files.push_back(
          {(fs::path(o_.output) / names[f]).string(), f == 0 ? data::NiftiType::kUint8 : data::NiftiType::kFloat32});
    }
    data::CanonicalWriter writer(files, shape, volume.affine, r, o_.threads);
    const std::vector<int64_t>& order = writer.order();
    const auto depth = static_cast<int64_t>(order.size());
    for (int64_t first = 0; first < depth; first += o_.batch_size) {
      const int64_t n = std::min(o_.batch_size, depth - first);
      std::vector<Tensor> slices;
      for (int64_t j = 0; j < n; ++j) {
        slices.push_back(data::canonical_slice(volume.voxels, r, order[static_cast<size_t>(first + j)]));
      }
      const Tensor probs = probabilities(torch::stack(slices));  // [n,C,X,Y] on the CPU
      const Tensor labels = label_values(probs.argmax(1));       // [n,X,Y] uint8
      for (int64_t j = 0; j < n; ++j) {
        std::vector<Tensor> planes = {labels[j], 1.0f - probs[j][0]};
        if (classes_ > 2) {
          for (int64_t k = 1; k < classes_; ++k) planes.push_back(probs[j][k]);
        }
        writer.write(planes);
      }
    }
    writer.close();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    nlohmann::json record = {
        {"id", c.id},         {"status", "done"},
        {"labels", names[0]}, {"probabilities", std::vector<std::string>(names.begin() + 1, names.end())},
        {"shape", shape},     {"slices", depth},
        {"seconds", seconds}, {"slices_per_second", seconds > 0 ? static_cast<double>(depth) / seconds : 0.0}};
    record.update(scan_stamp(c.image));
    return record;
  }

 private:
  // slices [n,X,Y] in HU (the file's dtype) -> the models' mean probabilities [n,C,X,Y], float32, CPU.
  Tensor probabilities(const Tensor& hu) {
    torch::NoGradGuard no_grad;
    const int64_t n = hu.size(0), x = hu.size(1), y = hu.size(2);
    Tensor sum;
    int64_t terms = 0;
    for (const PredictModel& m : o_.models) {
      const data::Preprocessing& p = m.preprocessing;
      std::vector<Tensor> inputs;
      for (int64_t j = 0; j < n; ++j) inputs.push_back(p.window(p.resize(hu[j])));
      Tensor images = torch::stack(inputs).unsqueeze(1);  // [n,1,H,W]
      const int64_t h = images.size(2), w = images.size(3);
      // Whole slices at the training size, unpadded, as evaluate feeds them (the UNet takes any size).
      images = images.to(o_.device);
      std::vector<std::vector<int64_t>> flips = {{}};
      if (o_.tta_flip) flips = {{}, {3}, {2}, {2, 3}};
      for (const auto& dims : flips) {
        const Tensor in = dims.empty() ? images : images.flip(dims);
        Tensor logits;
        {
          CudaAutocast autocast(m.bf16);
          logits = m.model->logits(in).to(torch::kFloat);
        }
        KDSEG_CHECK(
            logits.dim() == 4 && logits.size(0) == n && logits.size(2) == in.size(2) && logits.size(3) == in.size(3),
            m.file, ": returned logits of shape ", logits.sizes(), " for input ", in.sizes());
        Tensor probs = torch::softmax(logits, 1);
        if (!dims.empty()) probs = probs.flip(dims);
        probs = probs.to(torch::kCPU);
        if (h != x || w != y) {
          probs = F::interpolate(
              probs,
              F::InterpolateFuncOptions().size(std::vector<int64_t>{x, y}).mode(torch::kBilinear).align_corners(false));
        }
        sum = sum.defined() ? sum.add_(probs) : probs.clone();
        ++terms;
      }
    }
    return sum.div_(static_cast<double>(terms));
  }

  Tensor label_values(const Tensor& classes) const {
    const Tensor table = torch::tensor(std::vector<int64_t>(value_of_class_.begin(), value_of_class_.end()));
    return table.index({classes}).to(torch::kByte);
  }

  const PredictOptions& o_;
  std::vector<uint8_t> value_of_class_;
  int64_t classes_;
};

// The run's identity: what a folder's predictions came from.
nlohmann::json run_identity(const PredictOptions& o) {
  nlohmann::json models = nlohmann::json::array();
  for (const PredictModel& m : o.models) {
    models.push_back({{"file", fs::absolute(m.file).string()},
                      {"hash", m.hash},
                      {"kind", model_kind(*m.model)},
                      {"description", m.model->describe()},
                      {"temperature", m.model->temperature()},
                      {"precision", m.bf16 ? "bf16" : "fp32"},
                      {"task", m.preprocessing.task ? task_name(*m.preprocessing.task) : std::string()},
                      {"preprocessing", nlohmann::json::parse(data::preprocessing_json(m.preprocessing))},
                      {"preprocessing_from", m.preprocessing.from}});
  }
  return {{"models", models}, {"tta", o.tta_flip ? "flip" : "none"}, {"classes", o.models.front().model->classes()}};
}

// Whether two identities describe the same predictions (the models by hash, TTA, preprocessing).
bool same_run(const nlohmann::json& a, const nlohmann::json& b) {
  const auto key = [](const nlohmann::json& run) {
    nlohmann::json k = {{"tta", text(run, "tta")}, {"models", nlohmann::json::array()}};
    const auto models = run.is_object() ? run.find("models") : run.end();
    if (models == run.end() || !models->is_array()) return k;
    for (const auto& m : *models) {
      k["models"].push_back({text(m, "hash"), m.is_object() ? m.value("temperature", nlohmann::json()) : nullptr,
                             m.is_object() ? m.value("preprocessing", nlohmann::json()) : nullptr});
    }
    return k;
  };
  return key(a) == key(b);
}

std::string record_path(const PredictOptions& o, const std::string& id) {
  return (fs::path(o.output) / kStateFolder / ("case." + safe_file_name(id) + ".json")).string();
}

// Rank 0: makes or checks --output (locked by the caller). A folder of another run's predictions
// is refused without --force; with it, that run's files are removed: only the files predict
// writes for the ids its records name, and only where they are this user's regular files.
void prepare_output(const PredictOptions& o, const nlohmann::json& identity, int64_t classes) {
  const fs::path output(o.output), state = output / kStateFolder, run = state / kRunFile;
  check_own_folder(o.output);
  check_own_folder(state.string());
  std::error_code ec;
  if (fs::is_regular_file(run, ec)) {
    const nlohmann::json previous = read_record(run.string());
    if (same_run(previous, identity)) return;  // a rerun: finished cases are kept
    KDSEG_CHECK(o.force, o.output, ": holds predictions of other models or settings (", run.string(),
                previous.is_null() ? ", damaged" : "", "); give another --output, or --force to replace them");
    for (const auto& entry : fs::directory_iterator(state)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("case.", 0) != 0 || entry.path().extension() != ".json") continue;
      const std::string id = text(read_record(entry.path().string()), "id");
      if (!id.empty()) {
        for (const std::string& file : output_names(id, std::max<int64_t>(classes, 64))) {
          const fs::path path = output / file;
          if (is_own_regular_file(path.string())) fs::remove(path, ec);
        }
      }
      if (is_own_regular_file(entry.path().string())) fs::remove(entry.path(), ec);
    }
    if (is_own_regular_file((output / kPredictionsFile).string())) fs::remove(output / kPredictionsFile, ec);
  }
  if (::mkdir(state.c_str(), 0700) != 0) {
    KDSEG_CHECK(errno == EEXIST, state.string(), ": cannot create it (", std::strerror(errno), ")");
  }
  check_own_folder(state.string());  // made by this process, or found as its own above
  write_file_atomic(run.string(), identity.dump(1));
}

// The case's record when it is finished for this scan: its record names the same file, size and
// modification time, and its files are there.
std::optional<nlohmann::json> finished(const PredictOptions& o, const PredictCase& c, int64_t classes) {
  nlohmann::json record = read_record(record_path(o, c.id));
  if (text(record, "status") != "done" || text(record, "id") != c.id) return std::nullopt;
  const nlohmann::json stamp = scan_stamp(c.image);
  for (const auto& [key, value] : stamp.items()) {
    if (!record.contains(key) || record[key] != value) return std::nullopt;  // another scan under this id
  }
  for (const std::string& file : output_names(c.id, classes)) {
    if (!is_own_regular_file((fs::path(o.output) / file).string())) return std::nullopt;
  }
  return record;
}

}  // namespace

data::Preprocessing model_preprocessing(const FrozenModel& model, const std::string& file,
                                        const PreprocessingOverride& given) {
  std::optional<data::Preprocessing> p;
  if (!model.preprocessing().empty()) {
    p = data::parse_preprocessing(model.preprocessing(), file);
    p->from = model.training_config().empty() ? "the module's kdseg.json" : "the checkpoint";
  } else if (!model.training_config().empty()) {  // a checkpoint from before the record: its store
    const RunConfig config = parse_run_config(model.training_config(), file);
    try {
      if (const auto store = open_recorded_store(config))
        p = data::preprocessing_of_store(*store, config.data, config.task);
    } catch (const Error& e) {
      log::warn("{}: its training store cannot tell its preprocessing ({})", file, e.message());
    }
  }
  if (!p) {
    KDSEG_CHECK(given.window && given.size, file, ": has no preprocessing record (",
                model.training_config().empty() ? "a TorchScript module"
                                                : "a checkpoint from before kdseg recorded it, whose store is gone",
                "); give ", !given.window ? "--window LOW,HIGH (the HU window it was trained with)" : "",
                !given.window && !given.size ? " and " : "",
                !given.size ? "--size N (the in-plane size of its training slices; 0: each scan's own)" : "");
    p = data::Preprocessing();
    p->from = "--window/--size";
  }
  if (given.window) {
    if (p->from != "--window/--size" && (p->hu_low != given.window->first || p->hu_high != given.window->second))
      log::warn("{}: trained with HU [{}, {}]; --window {},{} replaces it", file, p->hu_low, p->hu_high,
                given.window->first, given.window->second);
    p->hu_low = given.window->first;
    p->hu_high = given.window->second;
  }
  if (given.size) {
    if (p->from != "--window/--size" && p->size != *given.size)
      log::warn("{}: trained on {}-pixel slices; --size {} replaces it", file, p->size, *given.size);
    p->size = *given.size;
  }
  return *p;
}

std::vector<PredictCase> find_predict_cases(const std::string& input) {
  std::error_code ec;
  KDSEG_CHECK(fs::exists(input, ec), input, ": no such file or folder");
  if (!fs::is_directory(input, ec)) {
    const std::string name = fs::path(input).filename().string();
    KDSEG_CHECK(is_nifti_name(name), input, ": not a NIfTI file (.nii or .nii.gz), nor a folder of them");
    std::string id = strip_nifti(name);
    static const std::regex channel(R"((.*)_0000)");
    std::smatch m;
    if (std::regex_match(id, m, channel)) id = m[1].str();
    return {{id, input}};
  }
  const fs::path dir(input);
  std::vector<PredictCase> cases;
  if (fs::is_regular_file(dir / "dataset.json", ec)) {  // MSD / nnU-Net raw
    for (const char* sub : {"imagesTs", "imagesTr"}) {
      if (fs::is_directory(dir / sub, ec) && !nifti_files(dir / sub).empty()) {
        log::info("{}: the {} scans of {}", input, sub, (dir / "dataset.json").string());
        return sorted_unique(channel_cases(dir / sub), input);
      }
    }
    KDSEG_THROW(input, ": has dataset.json but no NIfTI files in imagesTs/ or imagesTr/");
  }
  std::optional<data::Layout> layout;
  try {
    layout = data::detect_layout(input);
  } catch (const Error&) {
  }
  if (layout) {
    for (const data::CaseFiles& c : data::find_cases(input, *layout)) {
      if (!c.image.empty()) cases.push_back({c.id, c.image});
    }
  } else {  // a folder of scans: each file's own name
    for (const fs::path& file : nifti_files(dir))
      cases.push_back({strip_nifti(file.filename().string()), file.string()});
  }
  KDSEG_CHECK(!cases.empty(), input, ": holds no NIfTI scans (.nii or .nii.gz)");
  return sorted_unique(std::move(cases), input);
}

nlohmann::json predict(const PredictOptions& o, dist::Communicator& comm) {
  KDSEG_CHECK(!o.models.empty(), "predict: no --model");
  KDSEG_CHECK(o.batch_size >= 1, "--batch-size must be at least 1");
  const PredictModel& first = o.models.front();
  for (const PredictModel& m : o.models) {
    KDSEG_CHECK(m.model->classes() == first.model->classes(), m.file, ": ", m.model->classes(), " classes, but ",
                first.file, " has ", first.model->classes(), "; an ensemble's models must share their classes");
    KDSEG_CHECK(m.preprocessing.same_input(first.preprocessing), m.file, ": trained on ", m.preprocessing.describe(),
                ", but ", first.file, " on ", first.preprocessing.describe(),
                "; an ensemble's models must see the scan the same way");
  }
  const int64_t classes = first.model->classes();
  const std::vector<uint8_t> value_of_class = first.preprocessing.label_value_of_class(classes);

  const std::vector<PredictCase> cases = find_predict_cases(o.input);
  check_output_names(cases, classes, o.output);
  {  // every rank must split the same list
    uint64_t h = kFnvOffset;
    for (const PredictCase& c : cases) h = fnv1a(h, c.image.data(), c.image.size() + 1);
    Tensor mine = torch::tensor({static_cast<int64_t>(h >> 1)}, torch::kLong), low = mine.clone();
    dist::all_reduce_any_device(comm, mine, dist::ReduceOp::kMax);
    dist::all_reduce_any_device(comm, low, dist::ReduceOp::kMin);
    KDSEG_CHECK(mine.item<int64_t>() == low.item<int64_t>(), o.input,
                ": the ranks found different scans there (a folder still being filled, or not shared by every rank)");
  }
  // Every header first: a scan that cannot be read as a 3D volume stops the run before anything
  // is written (or is skipped with --skip-bad-cases).
  std::map<std::string, std::string> bad;  // id -> why
  for (const PredictCase& c : cases) {
    try {
      const data::Geometry g = data::read_nifti_geometry(c.image);
      KDSEG_CHECK(g.not_a_volume.empty(), c.image, ": ", g.not_a_volume);
      KDSEG_CHECK(g.datatype.has_value(), c.image, ": a NIfTI datatype kdseg does not read");
      try {
        data::closest_orientation(g.affine);
      } catch (const Error& e) {
        KDSEG_THROW(c.image, ": ", e.message());
      }
    } catch (const Error& e) {
      KDSEG_CHECK(o.skip_bad_cases, e.message(), " (nothing was written; give --skip-bad-cases to skip such scans)");
      bad[c.id] = e.message();
    }
  }
  const nlohmann::json identity = run_identity(o);
  std::optional<FolderLock> lock;  // rank 0's, until predictions.json is written
  if (comm.rank() == 0) {
    check_own_folder(o.output);
    std::error_code ec;
    if (fs::exists(o.output, ec) && !fs::exists(fs::path(o.output) / kStateFolder, ec)) {
      bool empty = true;
      for (const auto& entry : fs::directory_iterator(o.output))
        empty = empty && entry.path().filename() == ".kdseg.lock";
      KDSEG_CHECK(empty || o.force, o.output,
                  ": exists and holds files that are not kdseg predictions; give another --output, or --force to "
                  "write into it");
    }
    lock.emplace(o.output, "kdseg predict");
    prepare_output(o, identity, classes);
  }
  comm.barrier();

  CasePredictor predictor(o, value_of_class, classes);
  int64_t mine = 0;
  for (size_t i = static_cast<size_t>(comm.rank()); i < cases.size(); i += static_cast<size_t>(comm.size())) ++mine;
  Progress progress("predict", mine, comm.rank() == 0);
  for (size_t i = static_cast<size_t>(comm.rank()); i < cases.size(); i += static_cast<size_t>(comm.size())) {
    const PredictCase& c = cases[i];
    if (bad.count(c.id) || finished(o, c, classes)) {
      progress.advance();
      continue;
    }
    std::string why;
    try {
      write_file_atomic(record_path(o, c.id), predictor.run(c).dump(1));
    } catch (const IoError&) {
      throw;  // a full disk is not the case's fault
    } catch (const Error& e) {
      why = e.message().rfind(c.image, 0) == 0 ? e.message() : c.image + ": " + e.message();
    } catch (const c10::Error& e) {  // LibTorch's, e.g. out of memory on one large scan
      why = c.image + ": " + e.what_without_backtrace();
    }
    if (!why.empty()) {
      KDSEG_CHECK(o.skip_bad_cases, why, " (give --skip-bad-cases to skip such scans)");
      log::warn("skipping {}: {}", c.id, why);
      nlohmann::json record = {{"id", c.id}, {"status", "skipped"}, {"why", why}};
      record.update(scan_stamp(c.image));
      write_file_atomic(record_path(o, c.id), record.dump(1));
    }
    progress.advance(1, c.id);
  }
  progress.finish();
  comm.wait_for_all();

  // predictions.json, from every rank's records, on rank 0; the count of skipped cases on every rank.
  nlohmann::json result = identity;
  result["input"] = fs::absolute(o.input).string();
  result["cases"] = nlohmann::json::array();
  result["skipped"] = nlohmann::json::array();
  if (comm.rank() == 0) {
    for (const PredictCase& c : cases) {
      std::string why = bad.count(c.id) ? bad[c.id] : std::string();
      if (why.empty()) {
        if (const auto record = finished(o, c, classes)) {
          result["cases"].push_back(*record);
          continue;
        }
        why = text(read_record(record_path(o, c.id)), "why");
        if (why.empty()) why = "not predicted";
      }
      result["skipped"].push_back({{"id", c.id}, {"input", fs::absolute(c.image).string()}, {"why", why}});
    }
  }
  if (comm.rank() == 0) write_file_atomic((fs::path(o.output) / kPredictionsFile).string(), result.dump(1));
  Tensor skipped = torch::tensor({static_cast<int64_t>(result["skipped"].size())}, torch::kLong);
  dist::all_reduce_any_device(comm, skipped, dist::ReduceOp::kMax);
  result["skipped_count"] = skipped.item<int64_t>();
  return result;
}

}  // namespace kdseg::eval
