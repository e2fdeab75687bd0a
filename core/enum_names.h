// The names of enumerated options, one table per type: each value's name (what an option takes
// and what records such as config.json and the store's attributes write), other spellings it
// accepts, and a few words of help for --help texts. Parsing, naming, the list of choices and the
// error for an unknown name ("--labels: 'avg' is not one of hard, ls, majority, random, mean,
// weighted") come from the table alone.
//
// A type's table lives beside the type, where argument-dependent lookup finds it (in the type's
// namespace, or in kdseg for a type of another library such as c10::DeviceType):
//
//   inline constexpr EnumName<LossKind> kLossKindNames[] = {
//       {LossKind::kCe, "ce", "cross-entropy alone"}, ...};
//   constexpr EnumNames<LossKind> enum_names(EnumTag<LossKind>) { return kLossKindNames; }
//
// The first entry of a value is its name; entries whose help is kAlias are further spellings.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace kdseg {

template <typename E>
struct EnumName {
  E value;
  const char* name;
  const char* help;  // a few words for --help texts, "" for none; kAlias: another spelling
};

// The help of another spelling of a value: it is parsed, but never listed nor written.
inline constexpr const char* kAlias = nullptr;

// A view of a type's table.
template <typename E>
class EnumNames {
 public:
  template <size_t N>
  constexpr EnumNames(const EnumName<E> (&names)[N]) : begin_(names), end_(names + N) {}  // NOLINT: implicit
  constexpr const EnumName<E>* begin() const { return begin_; }
  constexpr const EnumName<E>* end() const { return end_; }

 private:
  const EnumName<E>* begin_;
  const EnumName<E>* end_;
};

// The argument by which a type's `enum_names` is found.
template <typename E>
struct EnumTag {};

namespace detail {
// "a, b, c" (or "a (help), b or c" with helps): the words of the list of choices and of --help.
std::string join_names(const std::vector<const char*>& names, const std::vector<const char*>& helps);
[[noreturn]] void throw_not_one_of(std::string_view option, std::string_view text,
                                   const std::vector<const char*>& names);

template <typename E>
bool is_listed(const EnumName<E>& entry, std::initializer_list<E> only) {
  if (entry.help == kAlias) return false;
  if (only.size() == 0) return true;
  for (E value : only) {
    if (value == entry.value) return true;
  }
  return false;
}

template <typename E>
std::vector<const char*> listed_names(std::initializer_list<E> only) {
  std::vector<const char*> names;
  for (const EnumName<E>& entry : enum_names(EnumTag<E>{})) {
    if (is_listed(entry, only)) names.push_back(entry.name);
  }
  return names;
}
}  // namespace detail

// The name of `value` ("?" for a value the table does not hold).
template <typename E>
const char* enum_name(E value) {
  for (const EnumName<E>& entry : enum_names(EnumTag<E>{})) {
    if (entry.value == value && entry.help != kAlias) return entry.name;
  }
  return "?";
}

// The value that `text` names (a name or another spelling), among `only` when given. Otherwise
// throws kdseg::Error "<option>: '<text>' is not one of <every name, of `only` when given>".
template <typename E>
E parse_enum(std::string_view option, std::string_view text, std::initializer_list<E> only = {}) {
  for (const EnumName<E>& entry : enum_names(EnumTag<E>{})) {
    if (text != entry.name) continue;
    if (only.size() == 0) return entry.value;
    for (E value : only) {
      if (value == entry.value) return entry.value;
    }
  }
  detail::throw_not_one_of(option, text, detail::listed_names<E>(only));
}

// "a, b, c": every name (of `only` when given).
template <typename E>
std::string enum_list(std::initializer_list<E> only = {}) {
  return detail::join_names(detail::listed_names<E>(only), {});
}

// "a (help), b (help) or c": every name (of `only` when given) with its help, for --help texts.
template <typename E>
std::string enum_help(std::initializer_list<E> only = {}) {
  std::vector<const char*> names, helps;
  for (const EnumName<E>& entry : enum_names(EnumTag<E>{})) {
    if (!detail::is_listed(entry, only)) continue;
    names.push_back(entry.name);
    helps.push_back(entry.help);
  }
  return detail::join_names(names, helps);
}

}  // namespace kdseg
