// Integrity of LibTorch's archives (checkpoints, TorchScript modules). Both are zip files whose
// every record carries a CRC-32 of its bytes, but LibTorch's reader does not check them: a
// flipped bit in a stored weight loads silently and changes every prediction. kdseg checks them
// itself before it trusts such a file.
#pragma once

#include <cstdint>
#include <string>

namespace kdseg {

struct ZipCheck {
  bool is_zip = false;    // it starts or ends as a zip archive
  int64_t records = 0;    // in its central directory
  int64_t unchecked = 0;  // records compressed otherwise than stored or deflated: not checked
  // The first damage found: a record whose content (stored, or deflated as LibTorch saves the
  // TorchScript code) does not match its CRC-32 or does not inflate; a record, central
  // directory or end record that is missing, cut short or inconsistent. Empty when every record
  // checks, and when the file is not a zip archive at all (its reader then says what it is not).
  std::string damage;
};

// Reads the zip archive at `path` through. Throws kdseg::Error naming the file only when it
// cannot be read.
ZipCheck check_zip(const std::string& path);

// Throws kdseg::Error naming the file and its damage when check_zip finds any; `what` names the
// file's kind for the advice ("checkpoint": "use an intact copy of the checkpoint").
void check_zip_intact(const std::string& path, const char* what);

}  // namespace kdseg
