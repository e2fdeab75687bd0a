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

// Writes `content` to `path` atomically.
void write_file_atomic(const std::string& path, std::string_view content);

// Reads a whole file; throws kdseg::Error naming it when it cannot.
std::string read_file(const std::string& path);

// The current time in UTC as "2026-11-26T17:00:00Z" (the `created` attribute of kdseg's files).
std::string utc_now_iso8601();

// fsyncs a file or folder by path; throws kdseg::Error naming it on failure.
void fsync_path(const std::string& path);

}  // namespace kdseg
