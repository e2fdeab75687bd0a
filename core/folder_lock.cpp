#include "core/folder_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/file_util.h"
#include "core/log.h"

namespace kdseg {
namespace {

std::string read_holder(int fd) {
  char text[512] = {};
  const ssize_t n = ::pread(fd, text, sizeof text - 1, 0);
  std::string holder = n > 0 ? std::string(text, static_cast<size_t>(n)) : std::string();
  while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\0')) holder.pop_back();
  return holder.empty() ? "another process" : holder;
}

// Opens the lock file without following a link: the existing one, else a new one made with
// O_EXCL (the other branch again when a concurrent run made it in between).
int open_lock_file(const std::string& path) {
  for (;;) {
    const int fd = ::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 || errno != ENOENT) {
      KDSEG_CHECK(fd >= 0 || errno != ELOOP, path,
                  ": the lock file is a symbolic link; kdseg never follows one there (another user who can write in "
                  "the folder may have placed it): remove it, or choose another output folder");
      return fd;
    }
    const int made = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (made >= 0 || errno != EEXIST) return made;
  }
}

// Refuses a lock file that kdseg could not have made: not a regular file, another user's, or
// one with other names (a hard link to a file elsewhere).
void check_lock_file(int fd, const std::string& path) {
  struct stat info {};
  std::string problem;
  if (::fstat(fd, &info) != 0) {
    problem = std::string("cannot examine it: ") + std::strerror(errno);
  } else if (!S_ISREG(info.st_mode)) {
    problem = "it is not a regular file";
  } else if (info.st_uid != ::geteuid()) {
    problem = "it belongs to user " + std::to_string(info.st_uid) + ", not to this process's user " +
              std::to_string(::geteuid()) + "; kdseg does not use a lock file another user could have placed";
  } else if (info.st_nlink != 1) {
    problem = "it has " + std::to_string(info.st_nlink) + " names (a hard link to another file?)";
  }
  if (problem.empty()) return;
  ::close(fd);
  KDSEG_THROW(path, ": refusing the folder's lock file: ", problem, "; remove it, or choose another output folder");
}

}  // namespace

FolderLock::FolderLock(const std::string& folder, const std::string& command, const std::string& kind)
    : path_((std::filesystem::path(folder) / ".kdseg.lock").string()) {
  refuse_symlink_output(folder);
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  KDSEG_CHECK(!ec && std::filesystem::is_directory(folder, ec), folder, ": cannot create the ", kind, ": ",
              ec ? ec.message() : "a file of that name exists");
  fd_ = open_lock_file(path_);
  KDSEG_CHECK(fd_ >= 0, path_, ": cannot open the folder's lock file: ", std::strerror(errno));
  check_lock_file(fd_, path_);
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int saved = errno;
    if (saved == ENOSYS || saved == EOPNOTSUPP || saved == ENOLCK) {
      // Some cluster file systems (Lustre without -o flock, some NFS and FUSE mounts) have no
      // locks: run unprotected rather than not at all.
      log::warn("{}: this file system does not support locks ({}); nothing stops a second run on {}", path_,
                std::strerror(saved), folder);
      return;
    }
    const std::string holder = saved == EWOULDBLOCK ? read_holder(fd_) : std::string();
    ::close(fd_);
    fd_ = -1;
    KDSEG_CHECK(saved != EWOULDBLOCK, folder, " is in use by ", holder,
                "; wait for it to end, or choose another output folder");
    KDSEG_THROW(path_, ": cannot lock: ", std::strerror(saved));
  }
  const std::string holder =
      command + " (pid " + std::to_string(::getpid()) + " on " + host_name() + ", since " + utc_now_iso8601() + ")\n";
  // The record is for messages only: a failure to write it does not make the lock less held.
  if (::ftruncate(fd_, 0) == 0) (void)!::pwrite(fd_, holder.data(), holder.size(), 0);
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

}  // namespace kdseg
