#include "core/file_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
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

// New names tried before giving up when each is taken.
constexpr int kNameTries = 100;

// A random number of at most 11 digits: another user cannot foresee a temporary's name, and the
// name keeps the form "<pid>-<n>-" that the removal of stale temporaries reads.
uint64_t random_name_number() {
  uint64_t value = 0;
  if (::getrandom(&value, sizeof value, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof value)) {
    static std::atomic<uint64_t> fallback{0};
    value = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) *
                uint64_t{0x9E3779B97F4A7C15} ^
            fallback++;
  }
  return value % uint64_t{100000000000};
}

// A hidden name in the same folder that keeps the final name's extension (libraries such as
// niftilib choose the format from it): "dir/.kdseg-tmp-<host>-<pid>-<n>-name.nii.gz", n random.
std::string temp_name_for(const std::string& final_path) {
  const fs::path path(final_path);
  const std::string prefix =
      temp_prefix() + std::to_string(::getpid()) + "-" + std::to_string(random_name_number()) + "-";
  return (path.parent_path() / (prefix + path.filename().string())).string();
}

// Whether `path` (not followed if a link) is the file of device `dev` and inode `ino`.
bool is_file(const std::string& path, uint64_t dev, uint64_t ino) {
  struct stat info {};
  return ::lstat(path.c_str(), &info) == 0 && static_cast<uint64_t>(info.st_dev) == dev &&
         static_cast<uint64_t>(info.st_ino) == ino;
}

// fsyncs an open file; some file systems refuse fsync on folders, which is no data-loss error.
void fsync_fd(int fd, const std::string& path) {
  if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    KDSEG_THROW(path, ": fsync failed: ", std::strerror(errno));
  }
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
    struct stat info {};
    if (::lstat(it->path().c_str(), &info) != 0 || info.st_uid != ::geteuid()) continue;  // another user's
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
  try {
    fsync_fd(fd, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

AtomicFile::AtomicFile(std::string final_path, unsigned mode) : final_path_(std::move(final_path)) {
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
  for (int attempt = 0; fd_ < 0; ++attempt) {
    temp_path_ = temp_name_for(final_path_);
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, static_cast<mode_t>(mode));
    if (fd_ < 0 && (errno != EEXIST || attempt + 1 == kNameTries)) {
      const int saved = errno;
      throw_write_failure(final_path_, "the file",
                          "cannot create the temporary file " + temp_path_ + ": " + std::strerror(saved));
    }
  }
  struct stat info {};
  if (::fstat(fd_, &info) == 0) {
    dev_ = static_cast<uint64_t>(info.st_dev);
    ino_ = static_cast<uint64_t>(info.st_ino);
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  // Only the file this object created: a name another user took over stays theirs.
  if (!committed_ && is_file(temp_path_, dev_, ino_)) {
    std::error_code ec;
    fs::remove(temp_path_, ec);
  }
}

void AtomicFile::commit() {
  KDSEG_CHECK(!committed_, final_path_, ": committed twice");
  struct stat named {};
  if (::lstat(temp_path_.c_str(), &named) != 0) {
    KDSEG_THROW(final_path_, ": nothing was written to the temporary file ", temp_path_);
  }
  KDSEG_CHECK(is_file(temp_path_, dev_, ino_), final_path_, ": the temporary file ", temp_path_,
              " is no longer the file kdseg created (replaced by another user who can write in its folder?); "
              "nothing was renamed");
  try {
    fsync_fd(fd_, temp_path_);  // a full disk can surface here, when delayed allocation finds no room
  } catch (const Error& e) {
    throw_write_failure(final_path_, "the file", e.message());
  }
  const int closed = ::close(fd_);
  fd_ = -1;
  if (closed != 0) throw_write_failure(final_path_, "the file", std::strerror(errno));
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
  refuse_symlink_output(final_path_);  // commit() would swap the link out and leave its target stale
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
  // mkdir neither follows a link nor takes a folder someone placed: a taken name gets another.
  for (int attempt = 0;; ++attempt) {
    staging_path_ = temp_name_for(final_path_);
    if (::mkdir(staging_path_.c_str(), 0777) == 0) break;
    if (errno != EEXIST || attempt + 1 == kNameTries) {
      const int saved = errno;
      staging_path_.clear();
      KDSEG_THROW(final_path_, ": cannot write in ", folder.string(), ": ", std::strerror(saved));
    }
  }
}

StagedFolder::~StagedFolder() {
  if (committed_ || staging_path_.empty()) return;
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
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) throw_write_failure(path, "to the file", std::strerror(errno));
  const bool written = write_all(fd, content);
  const int saved = errno;
  ::close(fd);
  if (!written) throw_write_failure(path, "to the file", std::strerror(saved));
}

void write_file_atomic(const std::string& path, std::string_view content) {
  AtomicFile file(path, 0644);
  if (!write_all(file.fd_, content)) {
    throw_write_failure(path, byte_size(static_cast<double>(content.size())), std::strerror(errno));
  }
  file.commit();
}

void refuse_symlink_output(const std::string& path) {
  std::string name = path;
  while (name.size() > 1 && name.back() == '/') name.pop_back();  // "link/" names the target
  std::error_code ec;
  if (!fs::is_symlink(fs::symlink_status(name, ec))) return;
  const fs::path target = fs::read_symlink(name, ec);
  KDSEG_THROW(name, ": is a symbolic link (to ", ec ? std::string("?") : target.string(),
              "); kdseg neither writes through nor replaces a link as an output (another user could have placed ",
              "it): give --output the path it points to, or remove the link");
}

void create_new_file(const std::string& path, unsigned mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, static_cast<mode_t>(mode));
  if (fd < 0) {
    const int saved = errno;
    KDSEG_THROW(path, ": cannot create: ", std::strerror(saved),
                saved == EEXIST ? " (a file or link of that name appeared; kdseg does not write through it)" : "");
  }
  ::close(fd);
}

bool is_own_regular_file(const std::string& path) {
  struct stat info {};
  return ::lstat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode) && info.st_uid == ::geteuid();
}

std::string make_private_dir(const std::string& parent, const std::string& prefix) {
  std::string pattern = (fs::path(parent) / (prefix + "XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    KDSEG_THROW(pattern, ": cannot make a private folder in ", parent, ": ", std::strerror(errno));
  }
  struct stat info {};
  const bool own = ::lstat(pattern.c_str(), &info) == 0 && S_ISDIR(info.st_mode) && info.st_uid == ::geteuid();
  KDSEG_CHECK(own && (info.st_mode & 077) == 0, pattern,
              ": the private folder just made is not a folder of this user closed to others; not used");
  return pattern;
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
