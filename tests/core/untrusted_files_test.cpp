// Files another user could have placed where kdseg writes (a world-writable output folder on a
// shared node, where kdseg may run as root): links named like kdseg's temporaries or lock are
// never followed, files of another user are never taken for kdseg's own, and private folders are
// made new. Each attack aims at a victim file, which must stay as it was.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <string>

#include "core/error.h"
#include "core/file_util.h"
#include "core/folder_lock.h"

namespace {
namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "kdseg-untrusted-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (fs::path(path_) / name).string(); }

 private:
  std::string path_;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kdseg::Error& e) {
    return e.message();
  }
  return "no error";
}

constexpr uid_t kNobody = 65534;  // the uid of "nobody" on Debian and most Linux systems

// The temporaries a writer of `final_name` in `folder` would have used under the old counter
// names ".kdseg-tmp-<host>-<pid>-<n>-<name>", n = 0..count-1, each a link to `victim`.
void place_links(const std::string& folder, const std::string& final_name, const std::string& victim, int count) {
  const std::string prefix = ".kdseg-tmp-" + kdseg::host_name() + "-" + std::to_string(::getpid()) + "-";
  for (int n = 0; n < count; ++n)
    fs::create_symlink(victim, fs::path(folder) / (prefix + std::to_string(n) + "-" + final_name));
}

TEST(UntrustedFiles, TemporariesNeverFollowALinkNamedLikeThem) {
  TempDir dir;
  fs::create_directories(dir.file("root-only"));
  const std::string victim = dir.file("root-only/victim");
  kdseg::write_file_atomic(victim, "root's file");
  fs::create_directories(dir.file("shared"));
  place_links(dir.file("shared"), "config.json", victim, 64);
  place_links(dir.file("shared"), "store.h5", victim, 64);

  kdseg::write_file_atomic(dir.file("shared/config.json"), "{}");
  {  // a library that opens the temporary by name and truncates it (HDF5, niftilib)
    kdseg::AtomicFile file(dir.file("shared/store.h5"));
    std::ofstream(file.temp_path(), std::ios::binary | std::ios::trunc) << "store";
    file.commit();
  }
  EXPECT_EQ(kdseg::read_file(victim), "root's file");
  for (const char* name : {"config.json", "store.h5"}) {
    EXPECT_FALSE(fs::is_symlink(dir.file(std::string("shared/") + name))) << name;
  }
  EXPECT_EQ(kdseg::read_file(dir.file("shared/config.json")), "{}");
  EXPECT_EQ(kdseg::read_file(dir.file("shared/store.h5")), "store");
  int links = 0;
  for (const auto& entry : fs::directory_iterator(dir.file("shared"))) links += fs::is_symlink(entry.symlink_status());
  EXPECT_EQ(links, 128) << "the placed links are neither followed nor removed";
}

TEST(UntrustedFiles, TemporariesAreNewFilesUnderUnforeseeableNames) {
  TempDir dir;
  const std::string final_path = dir.file("last.pt");
  kdseg::AtomicFile a(final_path), b(final_path);
  const std::regex form("\\.kdseg-tmp-.+-" + std::to_string(::getpid()) + "-([0-9]{1,11})-last\\.pt");
  std::smatch match_a, match_b;
  const std::string name_a = fs::path(a.temp_path()).filename().string(), name_b = fs::path(b.temp_path()).filename();
  ASSERT_TRUE(std::regex_match(name_a, match_a, form)) << name_a;
  ASSERT_TRUE(std::regex_match(name_b, match_b, form)) << name_b;
  EXPECT_NE(match_a[1], match_b[1]);
  // Made by the constructor, empty, not a link: what a writer then opens is kdseg's own file.
  struct stat info {};
  ASSERT_EQ(::lstat(a.temp_path().c_str(), &info), 0);
  EXPECT_TRUE(S_ISREG(info.st_mode));
  EXPECT_EQ(info.st_uid, ::geteuid());
  EXPECT_EQ(info.st_size, 0);
}

TEST(UntrustedFiles, ATemporaryReplacedBeforeCommitIsNotRenamed) {
  TempDir dir;
  const std::string victim = dir.file("victim");
  kdseg::write_file_atomic(victim, "root's file");
  kdseg::AtomicFile file(dir.file("report.json"));
  fs::remove(file.temp_path());
  fs::create_symlink(victim, file.temp_path());  // swapped by someone who can write in the folder
  EXPECT_NE(error_of([&] { file.commit(); }).find("is no longer the file kdseg created"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir.file("report.json")));
  EXPECT_EQ(kdseg::read_file(victim), "root's file");
}

TEST(UntrustedFiles, AnotherUsersStaleTemporaryIsNeitherUsedNorRemoved) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a file to another user";
  TempDir dir;
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string prefix = ".kdseg-tmp-" + kdseg::host_name() + "-" + std::to_string(dead) + "-0-";
  const std::string theirs = dir.file(prefix + "out.json"), ours = dir.file(prefix + "1-out.json");
  std::ofstream(theirs) << "x";
  ASSERT_EQ(::chown(theirs.c_str(), kNobody, kNobody), 0);
  kdseg::write_file_atomic(dir.file("out.json"), "y");
  EXPECT_TRUE(fs::exists(theirs)) << "another user's file was removed";
  std::ofstream(ours) << "x";  // this user's, of a dead process: removed as before
  kdseg::write_file_atomic(dir.file("1-out.json"), "y");
  EXPECT_FALSE(fs::exists(ours));
}

TEST(UntrustedFiles, NewFilesAndAppendsNeverGoThroughALink) {
  TempDir dir;
  const std::string victim = dir.file("victim");
  kdseg::write_file_atomic(victim, "root's file");
  fs::create_symlink(victim, dir.file("metrics.jsonl"));
  EXPECT_THROW(kdseg::append_to_file(dir.file("metrics.jsonl"), "{}\n"), kdseg::IoError);
  fs::create_symlink(victim, dir.file("shard.partial"));
  EXPECT_NE(error_of([&] { kdseg::create_new_file(dir.file("shard.partial")); }).find("cannot create"),
            std::string::npos);
  EXPECT_EQ(kdseg::read_file(victim), "root's file");
  kdseg::create_new_file(dir.file("new"));
  EXPECT_TRUE(kdseg::is_own_regular_file(dir.file("new")));
  EXPECT_FALSE(kdseg::is_own_regular_file(dir.file("metrics.jsonl")));
  EXPECT_THROW(kdseg::create_new_file(dir.file("new")), kdseg::Error);
}

TEST(UntrustedFiles, ALockFileThatIsALinkIsRefused) {
  TempDir dir;
  const std::string victim = dir.file("victim");
  kdseg::write_file_atomic(victim, "root's file");
  fs::create_directories(dir.file("run"));
  fs::create_symlink(victim, dir.file("run/.kdseg.lock"));
  const std::string message = error_of([&] { kdseg::FolderLock lock(dir.file("run"), "kdseg train"); });
  EXPECT_NE(message.find(dir.file("run/.kdseg.lock") + ": the lock file is a symbolic link"), std::string::npos)
      << message;
  EXPECT_EQ(kdseg::read_file(victim), "root's file");
  // A link dangling into a folder the attacker cannot write: not created through it either.
  fs::remove(dir.file("run/.kdseg.lock"));
  fs::create_symlink(dir.file("made-through-the-link"), dir.file("run/.kdseg.lock"));
  EXPECT_NE(error_of([&] { kdseg::FolderLock lock(dir.file("run"), "kdseg train"); }).find("symbolic link"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir.file("made-through-the-link")));
}

TEST(UntrustedFiles, ALockFileOfAnotherKindOrWithOtherNamesIsRefused) {
  TempDir dir;
  const std::string victim = dir.file("victim");
  kdseg::write_file_atomic(victim, "root's file");
  fs::create_directories(dir.file("linked"));
  fs::create_hard_link(victim, dir.file("linked/.kdseg.lock"));
  EXPECT_NE(error_of([&] { kdseg::FolderLock lock(dir.file("linked"), "kdseg train"); }).find("has 2 names"),
            std::string::npos);
  EXPECT_EQ(kdseg::read_file(victim), "root's file");
  fs::create_directories(dir.file("fifo"));
  ASSERT_EQ(::mkfifo(dir.file("fifo/.kdseg.lock").c_str(), 0666), 0);
  EXPECT_NE(error_of([&] { kdseg::FolderLock lock(dir.file("fifo"), "kdseg train"); }).find("not a regular file"),
            std::string::npos);
}

TEST(UntrustedFiles, ALockFileOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a file to another user";
  TempDir dir;
  fs::create_directories(dir.file("run"));
  const std::string lock = dir.file("run/.kdseg.lock");
  std::ofstream(lock) << "placed";
  ASSERT_EQ(::chown(lock.c_str(), kNobody, kNobody), 0);
  const std::string message = error_of([&] { kdseg::FolderLock held(dir.file("run"), "kdseg train"); });
  EXPECT_NE(message.find(lock + ": refusing the folder's lock file: it belongs to user 65534"), std::string::npos)
      << message;
  EXPECT_EQ(kdseg::read_file(lock), "placed");
  // The user's own lock file, left by an earlier run, is taken as before.
  fs::remove(lock);
  std::ofstream(lock) << "kdseg train (pid 1 on host, since then)\n";
  EXPECT_EQ(error_of([&] { kdseg::FolderLock held(dir.file("run"), "kdseg train"); }), "no error");
}

TEST(UntrustedFiles, PrivateFoldersAreNewAndClosedToOthers) {
  TempDir dir;
  const std::string prefix = "kdseg-evaluate-" + std::to_string(::getpid()) + "-1-";
  // What another user placed under the old name does not matter.
  fs::create_directories(dir.file(prefix.substr(0, prefix.size() - 1)));
  std::set<std::string> made;
  for (int i = 0; i < 3; ++i) {
    const std::string folder = kdseg::make_private_dir(dir.file(""), prefix);
    EXPECT_EQ(fs::path(folder).filename().string().rfind(prefix, 0), 0u) << folder;
    struct stat info {};
    ASSERT_EQ(::lstat(folder.c_str(), &info), 0);
    EXPECT_TRUE(S_ISDIR(info.st_mode));
    EXPECT_EQ(info.st_uid, ::geteuid());
    EXPECT_EQ(info.st_mode & 0777, 0700u);
    made.insert(folder);
  }
  EXPECT_EQ(made.size(), 3u);
  EXPECT_NE(
      error_of([&] { kdseg::make_private_dir(dir.file("missing"), prefix); }).find("cannot make a private folder"),
      std::string::npos);
}

// An --output that is a symbolic link: --force once swapped the link out for the new folder and
// left the folder it named stale. Every way a command claims its output refuses it, naming the
// link, and leaves link and target as they were.
TEST(UntrustedFiles, AnOutputThatIsALinkIsRefused) {
  TempDir dir;
  fs::create_directories(dir.file("target"));
  kdseg::write_file_atomic(dir.file("target/report.json"), "old");
  fs::create_directory_symlink(dir.file("target"), dir.file("out"));
  const auto refused = [&](const std::function<void()>& claim) {
    const std::string message = error_of(claim);
    EXPECT_NE(message.find(dir.file("out") + ": is a symbolic link (to " + dir.file("target")), std::string::npos)
        << message;
    EXPECT_NE(message.find("--output"), std::string::npos) << message;
    EXPECT_TRUE(fs::is_symlink(dir.file("out")));
    EXPECT_EQ(kdseg::read_file(dir.file("target/report.json")), "old");
  };
  refused([&] { kdseg::StagedFolder staged(dir.file("out")); });             // evaluate
  refused([&] { kdseg::StagedFolder staged(dir.file("out") + "/"); });       // "out/" names the link too
  refused([&] { kdseg::FolderLock lock(dir.file("out"), "kdseg train"); });  // train, distill, precompute
  refused([&] { kdseg::refuse_symlink_output(dir.file("out")); });           // prepare, synth
  EXPECT_NO_THROW(kdseg::refuse_symlink_output(dir.file("target")));
  EXPECT_NO_THROW(kdseg::refuse_symlink_output(dir.file("missing")));
  fs::create_directory_symlink(dir.file("target"), dir.file("parent"));
  EXPECT_NO_THROW(kdseg::refuse_symlink_output(dir.file("parent/inside"))) << "links above the output are the user's";
}

}  // namespace
