// Integrity of LibTorch's archives (checkpoints, TorchScript modules). Both are zip files whose
// every record carries a CRC-32 of its bytes, but LibTorch's reader does not check them: a
// flipped bit in a stored weight loads silently and changes every prediction. kdseg checks them
// itself before it trusts such a file.
#pragma once

#include <string>

namespace kdseg {

// What is damaged in the zip archive at `path`: the first stored record whose bytes do not match
// their CRC-32 (LibTorch stores every record uncompressed; compressed ones are not checked), or a
// record or central directory that runs past the end of the file (a copy cut short). Empty when
// every record checks, and also when the file is not a zip archive at all: the caller's reader
// then says what the file is not (`is_zip`, when given, tells which). Throws kdseg::Error naming
// the file only when it cannot be read.
std::string zip_damage(const std::string& path, bool* is_zip = nullptr);

// Throws kdseg::Error naming the file and its damage (zip_damage) when there is any; `what` names
// the file's kind for the advice ("checkpoint": "use an intact copy of the checkpoint").
void check_zip_intact(const std::string& path, const char* what);

}  // namespace kdseg
