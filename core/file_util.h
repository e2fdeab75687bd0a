// Files that never look finished before they are: write to a temporary name in the same
// folder, fsync, rename over the final name, fsync the folder.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kdseg {

// A file being written. Write to temp_path() (a hidden name in the same folder with the same
// extension; any API: fstream, HDF5, niftilib), then
// commit(). Until commit() the final path keeps its previous content (or stays absent);
// destroying an uncommitted AtomicFile removes the temporary file.
//
// The constructor creates the temporary, empty, with O_CREAT|O_EXCL|O_NOFOLLOW under a random
// name (another one when the name is taken), so that no link or file another user placed in the
// folder is ever followed or truncated; writers then open that same path (HDF5's H5F_ACC_TRUNC,
// fopen "wb"). commit() refuses a temporary that is no longer the file it created. `mode` is the
// new file's permissions before the umask.
class AtomicFile {
 public:
  explicit AtomicFile(std::string final_path, unsigned mode = 0666);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& final_path() const { return final_path_; }
  const std::string& temp_path() const { return temp_path_; }

  // fsyncs the temporary file, renames it to the final path and fsyncs the folder.
  // Throws kdseg::Error naming the file when any step fails (full disk, permissions).
  void commit();

 private:
  friend void write_file_atomic(const std::string& path, std::string_view content);
  std::string final_path_;
  std::string temp_path_;
  int fd_ = -1;                 // the temporary, open for writing until commit() or destruction
  uint64_t dev_ = 0, ino_ = 0;  // the temporary's device and inode: the file this object made
  bool committed_ = false;
};

// A folder that is replaced whole or not at all: write into path() (a hidden sibling,
// "<parent>/.kdseg-tmp-<host>-<pid>-<n>-<name>", made new by this process), then commit(), which swaps it in for the
// final folder in one rename (RENAME_EXCHANGE; two renames on file systems without it) and removes the previous
// content. Until then the final folder keeps its previous content; destroying an uncommitted StagedFolder removes the
// staging folder. Staging folders of dead processes of this host for the same final folder are removed when a new one
// is made.
class StagedFolder {
 public:
  explicit StagedFolder(std::string final_path);
  ~StagedFolder();
  StagedFolder(const StagedFolder&) = delete;
  StagedFolder& operator=(const StagedFolder&) = delete;

  const std::string& final_path() const { return final_path_; }
  const std::string& path() const { return staging_path_; }
  void commit();

 private:
  std::string final_path_;
  std::string staging_path_;
  bool committed_ = false;
};

// Appends `content` to `path` (made if missing; never through a symbolic link) with one write. Throws kdseg::IoError
// naming the file and the free space when the system refuses it.
void append_to_file(const std::string& path, std::string_view content);

// Writes `content` to `path` atomically.
void write_file_atomic(const std::string& path, std::string_view content);

// For messages about a failed write of `path`: "3.2 MiB free of 40.0 GiB on the file system of
// <folder>", or "" when the folder cannot be examined.
std::string free_space_note(const std::string& path);

// For writers whose library hides the system's reason (niftilib): "File too large (...)" when
// `path` reached the process's file size limit, "No space left on device" when under 1 MiB is
// left on its file system, else "".
std::string likely_write_failure(const std::string& path);

// Throws kdseg::IoError "<path>: cannot write <what>: <reason> (<free space>)", the one form
// every failed write of a kdseg output takes.
[[noreturn]] void throw_write_failure(const std::string& path, const std::string& what, const std::string& reason);

// Throws kdseg::Error when `path`, an output a command writes into or replaces (its --output),
// is a symbolic link, naming it and its target. kdseg never follows a link another user could
// have placed, and replacing the link itself (a rename over it) would leave the folder the user
// meant stale; the user gives the target's own path instead. Links above it are the user's.
void refuse_symlink_output(const std::string& path);

// Creates `path` as a new, empty file with O_CREAT|O_EXCL|O_NOFOLLOW, for a library that then
// opens it by name (H5Fcreate with H5F_ACC_TRUNC): never a link or a file someone else placed.
// Throws kdseg::Error naming the file when the name is taken or the system refuses.
void create_new_file(const std::string& path, unsigned mode = 0666);

// Whether `path` is a regular file (not a symbolic link) owned by this process's user: a file
// kdseg may take for its own, where another user could also have placed files.
bool is_own_regular_file(const std::string& path);

// Makes a new private folder "<parent>/<prefix>XXXXXX" (mkdtemp: a random name no one else
// made, mode 0700) and checks that it is a folder of this process's user that no other user may
// enter. Returns its path; throws kdseg::Error naming it when it cannot be made or checked.
std::string make_private_dir(const std::string& parent, const std::string& prefix);

// Reads a whole file; throws kdseg::Error naming it when it cannot.
std::string read_file(const std::string& path);

// This machine's host name ("host" when the system will not say): in temporary names and lock
// records, so that a process judges only the temporaries and locks of its own machine.
std::string host_name();

// The current time in UTC as "2026-11-26T17:00:00Z" (the `created` attribute of kdseg's files).
std::string utc_now_iso8601();

// fsyncs a file or folder by path; throws kdseg::Error naming it on failure.
void fsync_path(const std::string& path);

}  // namespace kdseg
