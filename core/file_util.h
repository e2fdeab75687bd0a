// Files that never look finished before they are: write to a temporary name in the same
// folder, fsync, rename over the final name, fsync the folder.
#pragma once

#include <string>
#include <string_view>

namespace kdseg {

// A file being written. Write to temp_path() (a hidden name in the same folder with the same
// extension; any API: fstream, HDF5, niftilib), then
// commit(). Until commit() the final path keeps its previous content (or stays absent);
// destroying an uncommitted AtomicFile removes the temporary file.
class AtomicFile {
 public:
  explicit AtomicFile(std::string final_path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& final_path() const { return final_path_; }
  const std::string& temp_path() const { return temp_path_; }

  // fsyncs the temporary file, renames it to the final path and fsyncs the folder.
  // Throws kdseg::Error naming the file when any step fails (full disk, permissions).
  void commit();

 private:
  std::string final_path_;
  std::string temp_path_;
  bool committed_ = false;
};

// A folder that is replaced whole or not at all: write into path() (a hidden sibling,
// "<parent>/.kdseg-tmp-<host>-<pid>-<n>-<name>"), then commit(), which swaps it in for the final
// folder in one rename (RENAME_EXCHANGE; two renames on file systems without it) and removes the
// previous content. Until then the final folder keeps its previous content; destroying an
// uncommitted StagedFolder removes the staging folder. Staging folders of dead processes of this
// host for the same final folder are removed when a new one is made.
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

// Appends `content` to `path` (made if missing) with one write. Throws kdseg::IoError naming the
// file and the free space when the system refuses it.
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
