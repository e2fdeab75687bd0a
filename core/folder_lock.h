// Ownership of an output folder. A run holds an advisory lock (flock) on FOLDER/.kdseg.lock for
// as long as it writes there; a second run on the same folder is refused with the holder's
// command, PID and host. The kernel releases the lock when the holder ends, however it ends, so
// a crashed or killed run never blocks the `--resume` that continues it.
#pragma once

#include <string>

namespace kdseg {

class FolderLock {
 public:
  // Creates `folder` if needed and takes its lock for `command` (e.g. "kdseg train"). Throws
  // kdseg::Error naming the folder and the holder when another process holds it; `kind` names
  // the folder in the error when it cannot be created ("cannot create the <kind>").
  FolderLock(const std::string& folder, const std::string& command, const std::string& kind = "output folder");
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace kdseg
