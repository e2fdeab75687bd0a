#include "core/enum_names.h"

#include "core/error.h"

namespace kdseg::detail {

std::string join_names(const std::vector<const char*>& names, const std::vector<const char*>& helps) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += helps.empty() || i + 1 < names.size() ? ", " : " or ";
    out += names[i];
    if (i < helps.size() && helps[i] != nullptr && *helps[i] != '\0') out += std::string(" (") + helps[i] + ")";
  }
  return out;
}

void throw_not_one_of(std::string_view option, std::string_view text, const std::vector<const char*>& names) {
  KDSEG_THROW(option, ": '", text, "' is not one of ", join_names(names, {}));
}

}  // namespace kdseg::detail
