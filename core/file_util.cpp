#include "core/file_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
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

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "host";
  return name;
}

namespace {

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

// Whether `pid` is a live process on this machine: a zombie (killed, not yet reaped by its
// parent) is not; a process we may not signal is taken to be alive.
bool process_alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno != ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const size_t name_end = line.rfind(')');  // "pid (name) S ...": the state follows the name
  return name_end == std::string::npos || name_end + 2 >= line.size() || line[name_end + 2] != 'Z';
}

// Removes the temporary files (and staged folders) of `final_path` that writers on this machine left when they were
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
    if (pid == ::getpid() || process_alive(pid)) continue;
    std::error_code removed;
    fs::remove_all(it->path(), removed);  // a file, or a staged folder
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
  try {
    fsync_path(temp_path_);  // a full disk can surface here, when delayed allocation finds no room
  } catch (const Error& e) {
    throw_write_failure(final_path_, "the file", e.message());
  }
  if (std::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
    KDSEG_THROW(final_path_, ": rename from ", temp_path_, " failed: ", std::strerror(errno));
  }
  committed_ = true;
  const fs::path parent = fs::path(final_path_).parent_path();
  fsync_path(parent.empty() ? "." : parent.string());
}

namespace {
std::string byte_size(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 4) {
    bytes /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, units[unit]);
  return text;
}

// Writes all of `content` to `fd`; false with errno set when the system refuses.
bool write_all(int fd, std::string_view content) {
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}
}  // namespace

std::string free_space_note(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  const std::string folder = parent.empty() ? "." : parent.string();
  struct statvfs info {};
  if (::statvfs(folder.c_str(), &info) != 0) return "";
  const double unit = static_cast<double>(info.f_frsize);
  return byte_size(static_cast<double>(info.f_bavail) * unit) + " free of " +
         byte_size(static_cast<double>(info.f_blocks) * unit) + " on the file system of " + folder;
}

std::string likely_write_failure(const std::string& path) {
  rlimit limit{};
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && !ec && size >= limit.rlim_cur) {
    return std::string(std::strerror(EFBIG)) + " (the file size limit, ulimit -f, is " +
           byte_size(static_cast<double>(limit.rlim_cur)) + ")";
  }
  const fs::path parent = fs::path(path).parent_path();
  struct statvfs info {};
  if (::statvfs(parent.empty() ? "." : parent.c_str(), &info) == 0 &&
      static_cast<double>(info.f_bavail) * static_cast<double>(info.f_frsize) < 1024.0 * 1024.0) {
    return std::strerror(ENOSPC);
  }
  return "";
}

void throw_write_failure(const std::string& path, const std::string& what, const std::string& reason) {
  // An inner writer may have named the free space already.
  const std::string space = reason.find(" free of ") == std::string::npos ? free_space_note(path) : "";
  detail::throw_io_error(
      __FILE__, __LINE__,
      detail::concat(path, ": cannot write ", what, ": ", reason, space.empty() ? "" : " (" + space + ")"));
}

StagedFolder::StagedFolder(std::string final_path) : final_path_(std::move(final_path)) {
  while (final_path_.size() > 1 && final_path_.back() == '/') final_path_.pop_back();
  const std::string name = fs::path(final_path_).filename().string();
  if (name.empty() || name == "." || name == ".." || final_path_ == "/") {
    KDSEG_THROW(final_path_, ": give the output folder a name (it is replaced whole)");
  }
  staging_path_ = temp_name_for(final_path_);
  const fs::path parent = fs::path(final_path_).parent_path();
  const fs::path folder = parent.empty() ? fs::path(".") : parent;
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) KDSEG_THROW(final_path_, ": cannot create its parent folder ", folder.string(), ": ", ec.message());
  std::error_code is_file;
  if (fs::exists(final_path_, is_file) && !fs::is_directory(final_path_, is_file)) {
    KDSEG_THROW(final_path_, ": exists and is not a folder");
  }
  remove_stale_temporaries(folder, fs::path(final_path_).filename().string());
  if (!fs::create_directory(staging_path_, ec) || ec) {
    KDSEG_THROW(final_path_, ": cannot write in ", folder.string(), ": ", ec ? ec.message() : "the name exists");
  }
}

StagedFolder::~StagedFolder() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(staging_path_, ec);
}

void StagedFolder::commit() {
  KDSEG_CHECK(!committed_, final_path_, ": committed twice");
  std::error_code ec;
  const bool replacing = fs::exists(final_path_, ec);
  // Swapped in one step where the file system can; otherwise the old folder is moved aside first.
  if (!replacing) {
    if (std::rename(staging_path_.c_str(), final_path_.c_str()) != 0) {
      KDSEG_THROW(final_path_, ": rename from ", staging_path_, " failed: ", std::strerror(errno));
    }
  } else if (::renameat2(AT_FDCWD, staging_path_.c_str(), AT_FDCWD, final_path_.c_str(), RENAME_EXCHANGE) != 0) {
    // No atomic exchange here (NFS, older kernels): move the old folder aside, then the new in;
    // if the second step fails the old one goes back, and the new one is kept for the user.
    const std::string aside = temp_name_for(final_path_);
    if (std::rename(final_path_.c_str(), aside.c_str()) != 0) {
      KDSEG_THROW(final_path_, ": cannot move it aside to replace it: ", std::strerror(errno));
    }
    if (std::rename(staging_path_.c_str(), final_path_.c_str()) != 0) {
      const int saved = errno;
      std::rename(aside.c_str(), final_path_.c_str());
      committed_ = true;  // keep the finished new content where the message says
      KDSEG_THROW(final_path_, ": cannot replace it (", std::strerror(saved), "); the new content is in ",
                  staging_path_);
    }
    fs::remove_all(aside, ec);
  } else {
    fs::remove_all(staging_path_, ec);  // now the previous content
  }
  committed_ = true;
  const fs::path parent = fs::path(final_path_).parent_path();
  fsync_path(parent.empty() ? "." : parent.string());
}

void append_to_file(const std::string& path, std::string_view content) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw_write_failure(path, "to the file", std::strerror(errno));
  const bool written = write_all(fd, content);
  const int saved = errno;
  ::close(fd);
  if (!written) throw_write_failure(path, "to the file", std::strerror(saved));
}

void write_file_atomic(const std::string& path, std::string_view content) {
  AtomicFile file(path);
  const int fd = ::open(file.temp_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_write_failure(path, "the file", std::strerror(errno));
  const bool written = write_all(fd, content);
  const int saved = errno;
  if (::close(fd) != 0 && written) throw_write_failure(path, "the file", std::strerror(errno));
  if (!written) throw_write_failure(path, byte_size(static_cast<double>(content.size())), std::strerror(saved));
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
