#include "data/prepare_parts.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <random>

#include "core/error.h"
#include "core/file_util.h"
#include "data/hdf5_util.h"

namespace kdseg::data::detail {
namespace fs = std::filesystem;

namespace {

// The part's own tables (prepare_parts.h) and its "run" attribute.
constexpr const char* kPartGroup = "part";
constexpr const char* kDigests[4] = {"part/image_digest", "part/label_digest", "part/rater_digest",
                                     "part/majority_digest"};  // per Rows
constexpr const char* kHistogram = "part/histogram";
constexpr const char* kCase = "part/case";
constexpr const char* kBadCase = "part/bad_case";
constexpr const char* kBadProblem = "part/bad_problem";
constexpr const char* kRunAttribute = "run";

// The part file of rank `rank` of the run `token`: a temporary of part_name's in its folder.
std::string find_part(const std::string& output, int rank, int ranks, int64_t token) {
  const fs::path name = fs::path(part_name(output, rank, ranks)).filename();
  const fs::path folder = fs::path(output).parent_path().empty() ? fs::path(".") : fs::path(output).parent_path();
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string file = it->path().filename().string(), suffix = "-" + name.string();
    if (file.rfind(".kdseg-tmp-", 0) != 0 || file.size() <= suffix.size() ||
        file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    if (!is_own_regular_file(it->path().string())) continue;  // not made by this user: never a part
    try {
      const h5::Handle part = PreparedStore::open_file(it->path().string());
      if (h5::has_attribute(part, kRunAttribute) &&
          h5::read_string_attribute(part, kRunAttribute) == std::to_string(token))
        return it->path().string();
    } catch (const Error&) {
      // another run's part being written, or not a part: not ours
    }
  }
  KDSEG_THROW(output, ": the part of rank ", rank, " (", name.string(), ") is missing from ", folder.string());
}

}  // namespace

// Copies case `row` of an open part into `writer`: its chunks and their digests as they are.
class PartReader {
 public:
  explicit PartReader(const std::string& path) : path_(path), file_(PreparedStore::open_file(path)) {
    const char* const* names = kDigests;
    for (size_t d = 0; d < 4; ++d) {
      digests_[d].resize(h5::dataset_dims(file_, names[d]).at(0));
      if (!digests_[d].empty()) h5::read_array(file_, names[d], H5T_NATIVE_UINT64, digests_[d].data());
    }
    histogram_.resize(h5::dataset_dims(file_, kHistogram).at(0));
    if (!histogram_.empty()) h5::read_array(file_, kHistogram, H5T_NATIVE_INT64, histogram_.data());
    const auto cases = h5::dataset_dims(file_, kCase).at(0);
    case_of_row_.resize(cases);
    if (cases > 0) h5::read_array(file_, kCase, H5T_NATIVE_INT64, case_of_row_.data());
    const auto bad = h5::dataset_dims(file_, kBadCase).at(0);
    std::vector<int64_t> bad_cases(bad);
    if (bad > 0) h5::read_array(file_, kBadCase, H5T_NATIVE_INT64, bad_cases.data());
    const std::vector<std::string> messages = h5::read_strings(file_, kBadProblem);
    for (size_t j = 0; j < bad_cases.size(); ++j) problems_[static_cast<size_t>(bad_cases[j])] = messages.at(j);
    if (cases == 0) return;
    ids_ = h5::read_strings(file_, store::kCaseId);
    slices_kept_.resize(cases);
    shapes_.resize(3 * cases);
    spacings_.resize(3 * cases);
    affines_.resize(16 * cases);
    h5::read_array(file_, store::kSlicesKept, H5T_NATIVE_INT32, slices_kept_.data());
    h5::read_array(file_, store::kShape, H5T_NATIVE_INT32, shapes_.data());
    h5::read_array(file_, store::kSpacing, H5T_NATIVE_DOUBLE, spacings_.data());
    h5::read_array(file_, store::kAffine, H5T_NATIVE_DOUBLE, affines_.data());
    if (h5::exists(file_, store::kRaterAgreement)) {
      raters_ = static_cast<int64_t>(h5::dataset_dims(file_, store::kRaterAgreement).at(1));
      agreement_.resize(cases * static_cast<size_t>(raters_));
      h5::read_array(file_, store::kRaterAgreement, H5T_NATIVE_DOUBLE, agreement_.data());
      regions_ = static_cast<size_t>(h5::dataset_dims(file_, store::kRaterPairwiseDice).at(1));
      pairwise_.resize(cases * regions_);
      h5::read_array(file_, store::kRaterPairwiseDice, H5T_NATIVE_DOUBLE, pairwise_.data());
    }
    majority_ = h5::exists(file_, store::kMajority);
    index_.resize(static_cast<size_t>(h5::dataset_dims(file_, store::kSliceIndex).at(0)));
    if (!index_.empty()) {
      h5::read_array(file_, store::kSliceIndex, H5T_NATIVE_INT32, index_.data());
      const auto dims = h5::dataset_dims(file_, store::kImage);
      height_ = static_cast<int64_t>(dims[1]);
      width_ = static_cast<int64_t>(dims[2]);
    }
  }
  const std::vector<int64_t>& cases() const { return case_of_row_; }
  const std::map<size_t, std::string>& problems() const { return problems_; }
  const std::vector<int64_t>& histogram() const { return histogram_; }

  void copy_case(size_t row, const CaseFiles& files, StoreWriter& writer) {
    CaseEntry entry;
    entry.id = ids_.at(row);
    entry.image_file = files.image;
    entry.label_file = files.label;
    const auto n = static_cast<int64_t>(slices_kept_[row]);
    entry.index.assign(index_.begin() + first_, index_.begin() + first_ + n);
    std::copy_n(shapes_.begin() + static_cast<std::ptrdiff_t>(3 * row), 3, entry.shape.begin());
    std::copy_n(spacings_.begin() + static_cast<std::ptrdiff_t>(3 * row), 3, entry.spacing.begin());
    std::copy_n(affines_.begin() + static_cast<std::ptrdiff_t>(16 * row), 16, entry.affine.begin());
    const auto r = static_cast<size_t>(raters_);
    entry.agreement.assign(agreement_.begin() + static_cast<std::ptrdiff_t>(row * r),
                           agreement_.begin() + static_cast<std::ptrdiff_t>((row + 1) * r));
    entry.pairwise.assign(pairwise_.begin() + static_cast<std::ptrdiff_t>(row * regions_),
                          pairwise_.begin() + static_cast<std::ptrdiff_t>((row + 1) * regions_));
    writer.begin_case(std::move(entry), height_, width_);
    if (n > 0) {
      copy_rows(writer, Rows::kImage, store::kImage, n, 2);
      copy_rows(writer, Rows::kLabel, store::kLabel, n, 2);
      if (raters_ > 0) copy_rows(writer, Rows::kRaters, store::kRaters, n, 3);
      if (majority_) copy_rows(writer, Rows::kMajority, store::kMajority, n, 2);
    }
    writer.end_case();
    first_ += n;
  }

 private:
  void copy_rows(StoreWriter& writer, Rows which, const char* name, int64_t n, size_t row_rank) {
    const h5::Handle set = h5::open_dataset(file_, name);
    const std::vector<uint64_t>& digests = digests_[static_cast<size_t>(which)];
    KDSEG_CHECK(static_cast<size_t>(first_ + n) <= digests.size(), path_, ": fewer digests than rows in ", name);
    for (int64_t j = 0; j < n; ++j) {
      std::vector<hsize_t> offset(row_rank + 1, 0);
      offset[0] = static_cast<hsize_t>(first_ + j);
      EncodedRow copy{h5::read_raw_chunk(set, offset), digests[static_cast<size_t>(first_ + j)], {}};
      writer.write(which, j, copy);
    }
  }

  std::string path_;
  h5::Handle file_;
  std::vector<uint64_t> digests_[4];
  std::vector<int64_t> histogram_;
  std::vector<int64_t> case_of_row_;
  std::map<size_t, std::string> problems_;
  std::vector<std::string> ids_;
  std::vector<int32_t> slices_kept_, shapes_, index_;
  std::vector<double> spacings_, affines_, agreement_, pairwise_;
  size_t regions_ = 0;
  int64_t raters_ = 0, height_ = 0, width_ = 0, first_ = 0;
  bool majority_ = false;
};

std::string part_name(const std::string& output, int rank, int ranks) {
  return (fs::path(output).parent_path() /
          (fs::path(output).filename().string() + ".part-" + std::to_string(rank) + "-of-" + std::to_string(ranks)))
      .string();
}

int64_t run_token(const PrepareRanks& ranks) {
  std::vector<int64_t> token{0};
  if (ranks.rank == 0) {
    std::random_device random;
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    token[0] = static_cast<int64_t>(
        (static_cast<uint64_t>(random()) << 32 ^ static_cast<uint64_t>(now) ^ static_cast<uint64_t>(::getpid())) >> 1);
  }
  ranks.sum(token);
  return token[0];
}

void mark_part(const StoreWriter& writer, int64_t token) {
  h5::write_string_attribute(writer.file(), kRunAttribute, std::to_string(token));
}

void write_part_tables(const StoreWriter& writer, const Converted& converted) {
  const hid_t file = writer.file();
  const h5::Handle part = h5::create_group(file, kPartGroup);
  for (const Rows which : {Rows::kImage, Rows::kLabel, Rows::kRaters, Rows::kMajority}) {
    const std::vector<uint64_t>& digests = writer.digests(which);
    h5::write_array(file, kDigests[static_cast<size_t>(which)], H5T_NATIVE_UINT64, {digests.size()}, digests.data());
  }
  h5::write_array(file, kHistogram, H5T_NATIVE_INT64, {writer.histogram().size()}, writer.histogram().data());
  const std::vector<int64_t> cases(converted.written.begin(), converted.written.end());
  h5::write_array(file, kCase, H5T_NATIVE_INT64, {cases.size()}, cases.data());
  std::vector<int64_t> bad;
  std::vector<std::string> messages;
  for (const auto& [i, problem] : converted.problems) {
    bad.push_back(static_cast<int64_t>(i));
    messages.push_back(problem);
  }
  h5::write_array(file, kBadCase, H5T_NATIVE_INT64, {bad.size()}, bad.data());
  h5::write_strings(file, kBadProblem, messages);
}

Parts::Parts(const std::string& output, int ranks, int64_t token, size_t cases) : where_(cases, {SIZE_MAX, 0}) {
  for (int r = 0; r < ranks; ++r) {
    parts_.push_back(std::make_unique<PartReader>(find_part(output, r, ranks, token)));
    problems_.insert(parts_.back()->problems().begin(), parts_.back()->problems().end());
    for (size_t row = 0; row < parts_.back()->cases().size(); ++row)
      where_[static_cast<size_t>(parts_.back()->cases()[row])] = {static_cast<size_t>(r), row};
  }
}

Parts::~Parts() = default;

void Parts::copy_into(StoreWriter& writer, const std::vector<CaseFiles>& found) {
  for (size_t i = 0; i < found.size(); ++i) {
    if (where_[i].first != SIZE_MAX) parts_[where_[i].first]->copy_case(where_[i].second, found[i], writer);
  }
  for (const auto& part : parts_) writer.add_histogram(part->histogram());
}

}  // namespace kdseg::data::detail
