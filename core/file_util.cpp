#include "core/file_util.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace kdseg {
namespace fs = std::filesystem;

namespace {
std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "host";
  return name;
}

// ".kdseg-tmp-<host>-": the temporary files of this machine's processes.
std::string temp_prefix() { return ".kdseg-tmp-" + host_name() + "-"; }

// A hidden name in the same folder that keeps the final name's extension (libraries such as
// niftilib choose the format from it): "dir/.kdseg-tmp-<host>-<pid>-<n>-name.nii.gz".
std::string temp_name_for(const std::string& final_path) {
  static std::atomic<unsigned> counter{0};
  const fs::path path(final_path);
  const std::string prefix = temp_prefix() + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-";
  return (path.parent_path() / (prefix + path.filename().string())).string();
}

// Removes the temporary files of `final_path` that writers on this machine left when they were
// killed (their process is gone), so that reruns do not pile them up.
void remove_stale_temporaries(const fs::path& folder, const std::string& file_name) {
  const std::string prefix = temp_prefix();
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() + file_name.size() || name.compare(0, prefix.size(), prefix) != 0 ||
        name.compare(name.size() - file_name.size(), file_name.size(), file_name) != 0) {
      continue;
    }
    // "<pid>-<n>-" between the prefix and the file name.
    const std::string middle = name.substr(prefix.size(), name.size() - prefix.size() - file_name.size());
    const size_t dash = middle.find('-');
    if (dash == std::string::npos || dash == 0 || middle.back() != '-') continue;
    const std::string pid_text = middle.substr(0, dash), n_text = middle.substr(dash + 1, middle.size() - dash - 2);
    const auto digits = [](const std::string& t) {
      return !t.empty() && t.size() < 12 && t.find_first_not_of("0123456789") == std::string::npos;
    };
    if (!digits(pid_text) || !digits(n_text)) continue;
    const pid_t pid = static_cast<pid_t>(std::stoll(pid_text));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive, or not ours to judge
    std::error_code removed;
    fs::remove(it->path(), removed);
  }
}
}  // namespace

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) KDSEG_THROW(path, ": cannot open to sync: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  // Some file systems refuse fsync on folders; that is not a data-loss error.
  if (rc != 0 && saved != EINVAL && saved != EROFS) {
    KDSEG_THROW(path, ": fsync failed: ", std::strerror(saved));
  }
}

AtomicFile::AtomicFile(std::string final_path)
    : final_path_(std::move(final_path)), temp_path_(temp_name_for(final_path_)) {
  const fs::path parent = fs::path(final_path_).parent_path();
  const fs::path folder = parent.empty() ? fs::path(".") : parent;
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) {
    KDSEG_THROW(final_path_, ": cannot write: folder ", folder.string(), " does not exist");
  }
  if (::access(folder.c_str(), W_OK) != 0) {
    KDSEG_THROW(final_path_, ": cannot write: folder ", folder.string(), " is not writable (", std::strerror(errno),
                ")");
  }
  remove_stale_temporaries(folder, fs::path(final_path_).filename().string());
}

AtomicFile::~AtomicFile() {
  if (!committed_) {
    std::error_code ec;
    fs::remove(temp_path_, ec);
  }
}

void AtomicFile::commit() {
  KDSEG_CHECK(!committed_, final_path_, ": committed twice");
  std::error_code ec;
  if (!fs::exists(temp_path_, ec)) {
    KDSEG_THROW(final_path_, ": nothing was written to the temporary file ", temp_path_);
  }
  fsync_path(temp_path_);
  if (std::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
    KDSEG_THROW(final_path_, ": rename from ", temp_path_, " failed: ", std::strerror(errno));
  }
  committed_ = true;
  const fs::path parent = fs::path(final_path_).parent_path();
  fsync_path(parent.empty() ? "." : parent.string());
}

void write_file_atomic(const std::string& path, std::string_view content) {
  AtomicFile file(path);
  {
    std::ofstream out(file.temp_path(), std::ios::binary | std::ios::trunc);
    if (!out) KDSEG_THROW(path, ": cannot create ", file.temp_path(), ": ", std::strerror(errno));
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.flush();
    if (!out) KDSEG_THROW(path, ": write failed after ", content.size(), " bytes (disk full?): ", std::strerror(errno));
  }
  file.commit();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) KDSEG_THROW(path, ": cannot open: ", std::strerror(errno));
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) KDSEG_THROW(path, ": read failed: ", std::strerror(errno));
  return content.str();
}

std::string utc_now_iso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

}  // namespace kdseg
