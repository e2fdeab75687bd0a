// Whole-text parsing of numbers in options and specifications: "32abc" is not 32.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace kdseg {

// `text` as a decimal integer (std::stoll's syntax) when nothing is left over; nullopt for
// anything else, values out of int64's range included.
inline std::optional<int64_t> parse_integer(const std::string& text) {
  size_t used = 0;
  try {
    const long long value = std::stoll(text, &used);
    if (used == text.size()) return static_cast<int64_t>(value);
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

// `text` as a decimal number (std::stod's syntax) when nothing is left over; nullopt otherwise.
inline std::optional<double> parse_number(const std::string& text) {
  size_t used = 0;
  try {
    const double value = std::stod(text, &used);
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

}  // namespace kdseg
