// How cases and rater files are found by name: one case or annotation under two names, and
// numbers too large for a name, are errors that name the files, never a silent choice.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "data/layout.h"
#include "data/raters.h"
#include "tests/data/temp_dir.h"

namespace {
namespace D = kdseg::data;
namespace fs = std::filesystem;

// An empty file at `dir`/`name` (finding cases reads names only).
void touch(const std::string& dir, const std::string& name) {
  fs::create_directories(fs::path(dir + "/" + name).parent_path());
  std::ofstream(dir + "/" + name).put('\0');
}

// The message of the kdseg::Error that `f` throws; "no error" or "other error: ..." otherwise.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const kdseg::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("other error: ") + e.what();
  }
  return "no error";
}

bool names(const std::string& message, const std::string& a, const std::string& b = "") {
  return message.find(a) != std::string::npos && (b.empty() || message.find(b) != std::string::npos);
}

TEST(Layout, OneKitsCaseUnderTwoFolderNamesIsAnError) {
  kdseg::test::TempDir dir;
  for (const char* c : {"case_00003", "case_3", "case_00004"}) {
    touch(dir.path(), std::string(c) + "/imaging.nii.gz");
    touch(dir.path(), std::string(c) + "/segmentation.nii.gz");
  }
  const std::string e = error_of([&] { D::find_cases(dir.path(), D::Layout::kKits23); });
  EXPECT_TRUE(names(e, dir.file("case_00003"), dir.file("case_3"))) << e;
  EXPECT_TRUE(names(e, "two folders of one case number")) << e;
}

TEST(Layout, OneQubiqCaseUnderTwoFolderNamesIsAnError) {
  kdseg::test::TempDir dir;
  for (const char* c : {"kidney/case03", "kidney/case3", "prostate/case3"})
    touch(dir.path(), std::string(c) + "/image.nii.gz");
  const std::string e = error_of([&] { D::find_cases(dir.path(), D::Layout::kQubiq); });
  EXPECT_TRUE(names(e, dir.file("kidney/case03"), dir.file("kidney/case3"))) << e;
  // The same number in two datasets of one download is two cases.
  fs::remove_all(dir.file("kidney/case03"));
  EXPECT_EQ(D::find_cases(dir.path(), D::Layout::kQubiq).size(), 2u);
}

TEST(Layout, AFileAsBothNiiAndNiiGzIsAnError) {
  kdseg::test::TempDir dir;
  for (const char* f : {"imaging.nii.gz", "imaging.nii", "segmentation.nii.gz"})
    touch(dir.path(), std::string("case_00001/") + f);
  std::string e = error_of([&] { D::find_cases(dir.path(), D::Layout::kKits23); });
  EXPECT_TRUE(names(e, dir.file("case_00001/imaging.nii.gz"), dir.file("case_00001/imaging.nii"))) << e;
  touch(dir.path(), "q/case01/image.nii");
  touch(dir.path(), "q/case01/image.nii.gz");
  e = error_of([&] { D::find_cases(dir.file("q"), D::Layout::kQubiq); });
  EXPECT_TRUE(names(e, dir.file("q/case01/image.nii.gz"), dir.file("q/case01/image.nii"))) << e;
}

TEST(Layout, NumbersTooLargeNameTheFile) {
  kdseg::test::TempDir dir;
  touch(dir.path(), "kits/case_99999999999/imaging.nii.gz");
  std::string e = error_of([&] { D::find_cases(dir.file("kits"), D::Layout::kKits23); });
  EXPECT_TRUE(names(e, dir.file("kits/case_99999999999"), "number 99999999999 in its name is too large")) << e;
  touch(dir.path(), "lits/volume-99999999999999999999.nii");
  e = error_of([&] { D::find_cases(dir.file("lits"), D::Layout::kLits); });
  EXPECT_TRUE(names(e, dir.file("lits/volume-99999999999999999999.nii"), "too large")) << e;
  touch(dir.path(), "qubiq/case77777777777/image.nii.gz");
  e = error_of([&] { D::find_cases(dir.file("qubiq"), D::Layout::kQubiq); });
  EXPECT_TRUE(names(e, dir.file("qubiq/case77777777777"), "too large")) << e;

  // Instance, annotation, task and rater numbers.
  D::CaseFiles c;
  c.image = dir.file("k/case_00001/imaging.nii.gz");
  touch(dir.path(), "k/case_00001/instances/kidney_instance-1_annotation-88888888888.nii.gz");
  e = error_of([&] { D::find_rater_files(c, D::Layout::kKits23); });
  EXPECT_TRUE(names(e, "kidney_instance-1_annotation-88888888888.nii.gz: the number 88888888888")) << e;
  c.image = dir.file("q2/case01/image.nii.gz");
  touch(dir.path(), "q2/case01/task01_seg66666666666.nii.gz");
  e = error_of([&] { D::find_rater_files(c, D::Layout::kQubiq, 1); });
  EXPECT_TRUE(names(e, "task01_seg66666666666.nii.gz: the number 66666666666")) << e;
}

TEST(Raters, OneAnnotationUnderTwoFileNamesIsABadCase) {
  kdseg::test::TempDir dir;
  D::CaseFiles c;
  c.image = dir.file("case_00001/imaging.nii.gz");
  for (const char* f : {"kidney_instance-1_annotation-1.nii.gz", "kidney_instance-1_annotation-1.nii",
                        "kidney_instance-1_annotation-2.nii.gz"}) {
    touch(dir.path(), std::string("case_00001/instances/") + f);
  }
  D::RaterFiles r = D::find_rater_files(c, D::Layout::kKits23);
  EXPECT_TRUE(r.raters.empty());
  EXPECT_TRUE(names(r.problem, dir.file("case_00001/instances/kidney_instance-1_annotation-1.nii.gz"),
                    dir.file("case_00001/instances/kidney_instance-1_annotation-1.nii")))
      << r.problem;
  // Leading zeros: instance-01 is instance-1.
  fs::remove(dir.file("case_00001/instances/kidney_instance-1_annotation-1.nii"));
  touch(dir.path(), "case_00001/instances/kidney_instance-01_annotation-2.nii.gz");
  r = D::find_rater_files(c, D::Layout::kKits23);
  EXPECT_TRUE(names(r.problem, "kidney_instance-01_annotation-2.nii.gz", "kidney_instance-1_annotation-2.nii.gz"))
      << r.problem;

  c.image = dir.file("case01/image.nii.gz");
  for (const char* f : {"task01_seg01.nii.gz", "task01_seg02.nii.gz", "task01_seg2.nii.gz"}) {
    touch(dir.path(), std::string("case01/") + f);
  }
  r = D::find_rater_files(c, D::Layout::kQubiq, 1);
  EXPECT_TRUE(r.raters.empty());
  EXPECT_TRUE(names(r.problem, dir.file("case01/task01_seg02.nii.gz"), dir.file("case01/task01_seg2.nii.gz")))
      << r.problem;
}

}  // namespace
