#include "core/folder_lock.h"

#include <fcntl.h>
#include <sys/file.h>
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

}  // namespace

FolderLock::FolderLock(const std::string& folder, const std::string& command, const std::string& kind)
    : path_((std::filesystem::path(folder) / ".kdseg.lock").string()) {
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  KDSEG_CHECK(!ec && std::filesystem::is_directory(folder, ec), folder, ": cannot create the ", kind, ": ",
              ec ? ec.message() : "a file of that name exists");
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  KDSEG_CHECK(fd_ >= 0, path_, ": cannot open the folder's lock file: ", std::strerror(errno));
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
