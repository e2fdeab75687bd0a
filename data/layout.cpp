#include "data/layout.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <map>
#include <regex>
#include <set>

#include "core/error.h"

namespace kdseg::data {
namespace fs = std::filesystem;

std::vector<int> label_values(Layout layout) {
  switch (layout) {
    case Layout::kKits23: return {0, 1, 2, 3};
    case Layout::kQubiq: return {0, 1};
    default: return {0, 1, 2};
  }
}
int tumour_label(Layout layout) { return layout == Layout::kQubiq ? 1 : 2; }
int organ_label(Layout) { return 1; }

namespace {
const std::regex kLitsFile(R"((volume|segmentation)-(\d+)\.nii(\.gz)?)");
const std::regex kKitsCase(R"(case_(\d+))");
const std::regex kQubiqCase(R"(case(\d+))");

std::vector<fs::path> files_under(const std::string& dir) {
  std::error_code ec;
  KDSEG_CHECK(fs::is_directory(dir, ec), dir, ": not a folder");
  std::vector<fs::path> out;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->is_regular_file(ec)) out.push_back(it->path());
  }
  return out;
}

// The first of `names` in `folder`; a name present both as .nii and .nii.gz is an error, since
// which of the two is the case's file cannot be told.
std::string first_file(const fs::path& folder, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const fs::path gz = folder / name;
    if (gz.extension() != ".gz") {
      if (fs::exists(gz)) return gz.string();
      continue;
    }
    const fs::path plain = folder / gz.stem();
    const bool has_gz = fs::exists(gz), has_plain = fs::exists(plain);
    KDSEG_CHECK(!(has_gz && has_plain), gz.string(), " and ", plain.string(), ": one file under two names; remove one");
    if (has_gz) return gz.string();
    if (has_plain) return plain.string();
  }
  return {};
}
std::string kits_image(const fs::path& folder) { return first_file(folder, {"imaging.nii.gz"}); }
std::string kits_label(const fs::path& folder) {
  return first_file(folder, {"segmentation.nii.gz", "aggregated_MAJ_seg.nii.gz"});
}

// Adds case `c` (its id the folder's path under `dir`) under `key`; a key already taken is one
// case under two names ("case_3" beside "case_00003"), and which one is meant cannot be told.
template <typename Key>
void add_case(std::map<Key, CaseFiles>& cases, const Key& key, const CaseFiles& c, const std::string& dir) {
  const auto [at, added] = cases.emplace(key, c);
  KDSEG_CHECK(added, (fs::path(dir) / at->second.id).string(), " and ", (fs::path(dir) / c.id).string(),
              ": two folders of one case number; rename or remove one");
}
}  // namespace

int number_in_name(const std::string& digits, const std::string& path) {
  errno = 0;
  char* end = nullptr;
  const long value = std::strtol(digits.c_str(), &end, 10);
  KDSEG_CHECK(!digits.empty() && *end == '\0' && errno == 0 && value >= 0 && value <= std::numeric_limits<int>::max(),
              path, ": the number ", digits, " in its name is too large (at most ", std::numeric_limits<int>::max(),
              ")");
  return static_cast<int>(value);
}

Layout detect_layout(const std::string& dir) {
  for (const auto& path : files_under(dir)) {
    const std::string name = path.filename().string();
    if (std::regex_match(name, kLitsFile)) return Layout::kLits;
    if ((name == "imaging.nii.gz" || name == "imaging.nii") &&
        std::regex_match(path.parent_path().filename().string(), kKitsCase)) {
      return Layout::kKits23;
    }
    if ((name == "image.nii.gz" || name == "image.nii") &&
        std::regex_match(path.parent_path().filename().string(), kQubiqCase)) {
      return Layout::kQubiq;
    }
  }
  KDSEG_THROW(dir,
              ": no LiTS files (volume-N.nii[.gz] and segmentation-N.nii[.gz]) and no KiTS cases "
              "(case_XXXXX/imaging.nii.gz) and no QUBIQ cases (caseNN/image.nii.gz) found; check --input or name the "
              "layout with --layout");
}

namespace {
// QUBIQ: every caseNN folder holding image.nii[.gz], in path order; ids are the folder's path
// under `dir` ("kidney/Training/case01"), so that the datasets of one download stay apart.
std::vector<CaseFiles> find_qubiq_cases(const std::string& dir) {
  std::map<std::pair<std::string, int>, CaseFiles> cases;
  std::set<fs::path> folders;
  for (const auto& path : files_under(dir)) {
    const std::string name = path.filename().string();
    std::smatch m;
    const std::string folder = path.parent_path().filename().string();
    if ((name != "image.nii.gz" && name != "image.nii") || !std::regex_match(folder, m, kQubiqCase)) continue;
    if (!folders.insert(path.parent_path()).second) continue;
    CaseFiles c;
    c.id = fs::relative(path.parent_path(), dir).generic_string();
    c.image = first_file(path.parent_path(), {"image.nii.gz"});
    const std::string parent = fs::relative(path.parent_path().parent_path(), dir).generic_string();
    add_case(cases, {parent, number_in_name(m[1].str(), path.parent_path().string())}, c, dir);
  }
  std::vector<CaseFiles> out;
  for (auto& [key, c] : cases) out.push_back(std::move(c));
  KDSEG_CHECK(!out.empty(), dir, ": no qubiq cases found (caseNN/image.nii.gz)");
  return out;
}
}  // namespace

std::vector<CaseFiles> find_cases(const std::string& dir, Layout layout) {
  if (layout == Layout::kQubiq) return find_qubiq_cases(dir);
  std::map<int, CaseFiles> cases;
  if (layout == Layout::kLits) {
    for (const auto& path : files_under(dir)) {
      std::smatch m;
      const std::string name = path.filename().string();
      if (!std::regex_match(name, m, kLitsFile)) continue;
      const int number = number_in_name(m[2].str(), path.string());
      CaseFiles& c = cases[number];
      c.id = "volume-" + m[2].str();
      std::string& slot = m[1].str() == "volume" ? c.image : c.label;
      KDSEG_CHECK(slot.empty(), path.string(), ": a second file for ", c.id, " besides ", slot);
      slot = path.string();
    }
    for (auto& [number, c] : cases) {
      const std::string number_text = std::to_string(number);
      if (c.image.empty()) {
        c.problem = c.label + ": segmentation without its volume-" + number_text + ".nii[.gz]";
      } else if (c.label.empty()) {
        c.problem = c.image + ": volume without its segmentation-" + number_text + ".nii[.gz]";
      }
    }
  } else {
    std::error_code ec;
    KDSEG_CHECK(fs::is_directory(dir, ec), dir, ": not a folder");
    for (const auto& entry : fs::directory_iterator(dir)) {
      std::smatch m;
      const std::string name = entry.path().filename().string();
      if (!entry.is_directory() || !std::regex_match(name, m, kKitsCase)) continue;
      CaseFiles c;
      c.id = name;
      c.image = kits_image(entry.path());
      c.label = kits_label(entry.path());
      if (c.image.empty()) {
        c.problem = (entry.path() / "imaging.nii.gz").string() + ": missing (the case has no image)";
      } else if (c.label.empty()) {
        c.problem = (entry.path() / "segmentation.nii.gz").string() + ": missing partner of " + c.image;
      }
      add_case(cases, number_in_name(m[1].str(), entry.path().string()), c, dir);
    }
  }
  std::vector<CaseFiles> out;
  for (auto& [number, c] : cases) out.push_back(std::move(c));
  KDSEG_CHECK(!out.empty(), dir, ": no ", enum_name(layout), " cases found");
  return out;
}

}  // namespace kdseg::data
