// The table behind every enumerated option (core/enum_names.h): names, other spellings, the list
// of choices, --help text and the one error wording.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "core/enum_names.h"
#include "core/error.h"

namespace test_enum {

enum class Fruit { kApple, kPear, kPlum };
inline constexpr kdseg::EnumName<Fruit> kFruitNames[] = {
    {Fruit::kApple, "apple", "red or green"},
    {Fruit::kPear, "pear", ""},
    {Fruit::kPear, "poire", kdseg::kAlias},
    {Fruit::kPlum, "plum", "a stone fruit"},
};
constexpr kdseg::EnumNames<Fruit> enum_names(kdseg::EnumTag<Fruit>) { return kFruitNames; }

}  // namespace test_enum

namespace {
using kdseg::enum_help;
using kdseg::enum_list;
using kdseg::enum_name;
using kdseg::parse_enum;
using test_enum::Fruit;

std::string error_of(const std::function<void()>& parse) {
  try {
    parse();
  } catch (const kdseg::Error& e) {
    return e.message();
  }
  return "accepted";
}

TEST(EnumNames, NamesAndOtherSpellingsParse) {
  EXPECT_EQ(parse_enum<Fruit>("--fruit", "apple"), Fruit::kApple);
  EXPECT_EQ(parse_enum<Fruit>("--fruit", "pear"), Fruit::kPear);
  EXPECT_EQ(parse_enum<Fruit>("--fruit", "poire"), Fruit::kPear) << "another spelling";
  EXPECT_STREQ(enum_name(Fruit::kPear), "pear") << "the first spelling is the name";
  EXPECT_STREQ(enum_name(Fruit::kPlum), "plum");
  EXPECT_STREQ(enum_name(static_cast<Fruit>(7)), "?");
}

TEST(EnumNames, AnUnknownNameListsEveryName) {
  EXPECT_EQ(error_of([] { parse_enum<Fruit>("--fruit", "fig"); }), "--fruit: 'fig' is not one of apple, pear, plum");
  EXPECT_EQ(error_of([] { parse_enum<Fruit>("--fruit", "Apple"); }), "--fruit: 'Apple' is not one of apple, pear, plum")
      << "names are case-sensitive";
  EXPECT_EQ(error_of([] { parse_enum<Fruit>("--fruit", ""); }), "--fruit: '' is not one of apple, pear, plum");
}

TEST(EnumNames, ASubsetOfTheChoices) {
  EXPECT_EQ(parse_enum<Fruit>("--fruit", "poire", {Fruit::kPear, Fruit::kPlum}), Fruit::kPear);
  EXPECT_EQ(error_of([] {
              parse_enum<Fruit>("--fruit", "apple", {Fruit::kPear, Fruit::kPlum});
            }),
            "--fruit: 'apple' is not one of pear, plum");
  EXPECT_EQ(enum_list<Fruit>({Fruit::kPlum, Fruit::kApple}), "apple, plum") << "in the table's order";
  EXPECT_EQ(enum_help<Fruit>({Fruit::kPear}), "pear");
}

TEST(EnumNames, ListAndHelpText) {
  EXPECT_EQ(enum_list<Fruit>(), "apple, pear, plum");
  EXPECT_EQ(enum_help<Fruit>(), "apple (red or green), pear or plum (a stone fruit)");
}

}  // namespace
