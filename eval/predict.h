// `kdseg predict`: segments new CT volumes with one model or the average of several, and writes
// each case's label map and foreground probability in the source file's geometry.
//
// Each model sees a scan as it saw its training slices (data/preprocessing.h: the canonical RAS
// orientation, the HU window, the in-plane size), slice by slice and whole (no crops). Its
// probabilities are softmax(logits / T) with its own temperature (a calibrated checkpoint's T),
// averaged over the flips of --tta flip and over the models, resized back to the canonical plane
// (bilinear), and the class of a voxel is their argmax.
//
// Output folder:
//   <case>.nii.gz            uint8 labels (the layout's label values, or the class where unknown)
//   <case>_probs.nii.gz      float32, 1 - P(background), as `evaluate --save-predictions` writes it
//   <case>_probs_<k>.nii.gz  float32, P(class k), for each foreground class of a task with more than two
//   predictions.json         the models (file, hash, temperature, preprocessing), TTA, and per case
//                            its input, files, slices and seconds; the skipped cases and why
//   .kdseg-predict/          the run's identity (run.json) and one record per finished case: a rerun
//                            skips the cases recorded, and refuses a folder of other models' runs
// Both NIfTI files of a case are written atomically before its record: a crash leaves no partial
// file, and the rerun predicts that case again. A record counts only for the same scan (path,
// size, modification time). Memory follows one case.
//
// Under mpirun each rank predicts cases rank, rank + N, ... into the same folder (which every
// rank must see: one file system) and rank 0 writes predictions.json.
#pragma once

#include <c10/core/Device.h>

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/frozen_model.h"
#include "core/task_spec.h"
#include "data/preprocessing.h"

namespace kdseg::dist {
class Communicator;
}

namespace kdseg::eval {

struct PredictModel {
  std::string file;
  std::string hash;  // of the file (core/hash.h)
  std::shared_ptr<FrozenModel> model;
  data::Preprocessing preprocessing;  // with the task its classes stand for, where known
  bool bf16 = false;                  // under bf16 autocast (on CUDA, for a checkpoint trained so; the rest float32)
};

// What stands in for a model's missing preprocessing record (--window LOW,HIGH and --size N).
struct PreprocessingOverride {
  std::optional<std::pair<double, double>> window;
  std::optional<int64_t> size;
};

// The preprocessing of `model` (loaded from `file`): its checkpoint's record; for a checkpoint
// that predates it, the store its record names when that store is still there (the same content
// hash); otherwise --window and --size. Given values replace the record's (with a warning). Errors
// name the file and what is missing.
data::Preprocessing model_preprocessing(const FrozenModel& model, const std::string& file,
                                        const PreprocessingOverride& given);

struct PredictOptions {
  std::vector<PredictModel> models;
  std::string input;
  std::string output;
  bool tta_flip = false;
  int64_t batch_size = 8;
  c10::Device device = c10::kCPU;
  bool force = false;           // replace another run's predictions in --output
  bool skip_bad_cases = false;  // report a case that cannot be read and go on
  int threads = 1;              // compressing the NIfTI files
};

// One scan to segment.
struct PredictCase {
  std::string id;     // "liver_3", "case_00012", "volume-12", or the file name without .nii(.gz)
  std::string image;  // path
};

// The scans under `input`: one NIfTI file; a folder in the Medical Segmentation Decathlon or
// nnU-Net raw layout (dataset.json with imagesTs/ or imagesTr/, "<case>_0000.nii.gz" or
// "<case>.nii.gz"; macOS "._" files skipped; a second channel "_0001" refused, kdseg's models
// take one CT channel); a folder prepare reads (lits, kits19/21/23, qubiq: the images, labels not
// needed); or a folder of NIfTI files. Sorted by id. Errors name the input and, for two files
// of one id, both.
std::vector<PredictCase> find_predict_cases(const std::string& input);

// Predicts every case and returns predictions.json on rank 0 (other ranks get its models and
// options), with "skipped_count" on every rank. The output folder is locked while it runs, must
// be its user's own and writable by no other user, and is refused when it holds other files. Models must agree on the
// classes and the preprocessing (layout, task, window, size). Errors name the file.
nlohmann::json predict(const PredictOptions& options, dist::Communicator& comm);

}  // namespace kdseg::eval
