// What protects outputs on a shared machine: folder locks, staged folders, failed writes as one
// clear error, and the graceful-stop flag, with real files, real processes and real signals.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "core/error.h"
#include "core/file_util.h"
#include "core/folder_lock.h"
#include "core/stop_request.h"

namespace {
namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "kdseg-outputs-XXXXXX").string();
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

// Runs `child` in a forked process and returns its exit status (or 128 + the signal).
int in_child(const std::function<int()>& child) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(child());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(FolderLock, ASecondHolderIsRefusedNamingTheFirst) {
  TempDir dir;
  const std::string run = dir.file("run");
  {
    const kdseg::FolderLock first(run, "kdseg train");
    EXPECT_TRUE(fs::is_directory(run));
    const std::string message = error_of([&] { kdseg::FolderLock second(run, "kdseg distill"); });
    EXPECT_NE(message.find(run + " is in use by kdseg train (pid " + std::to_string(::getpid())), std::string::npos)
        << message;
    // Another process is refused too.
    EXPECT_EQ(in_child([&] { return error_of([&] { kdseg::FolderLock other(run, "x"); }) == "no error" ? 0 : 3; }), 3);
  }
  // Released with its holder, and when a holding process dies.
  EXPECT_EQ(error_of([&] { kdseg::FolderLock again(run, "kdseg train"); }), "no error");
  EXPECT_EQ(in_child([&] {
              static kdseg::FolderLock held(run, "kdseg train");
              ::_exit(0);  // no destructor runs: the kernel releases the lock
              return 0;
            }),
            0);
  EXPECT_EQ(error_of([&] { kdseg::FolderLock after_crash(run, "kdseg train"); }), "no error");
  EXPECT_NE(error_of([&] { kdseg::FolderLock file(dir.file("run/.kdseg.lock/x"), "y"); }).find("cannot create"),
            std::string::npos);
}

TEST(StagedFolder, ReplacesWholeOrNotAtAll) {
  TempDir dir;
  const std::string report = dir.file("report");
  fs::create_directories(report);
  kdseg::write_file_atomic(report + "/old.txt", "old");
  {
    kdseg::StagedFolder staged(report);
    kdseg::write_file_atomic(staged.path() + "/new.txt", "new");
    EXPECT_TRUE(fs::exists(report + "/old.txt"));  // untouched until the commit ...
  }
  EXPECT_TRUE(fs::exists(report + "/old.txt"));  // ... and after an uncommitted staging
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.file("")), fs::directory_iterator()), 1) << "staging left";
  kdseg::StagedFolder staged(report);
  kdseg::write_file_atomic(staged.path() + "/new.txt", "new");
  staged.commit();
  EXPECT_FALSE(fs::exists(report + "/old.txt"));
  EXPECT_EQ(kdseg::read_file(report + "/new.txt"), "new");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.file("")), fs::directory_iterator()), 1) << "old content left";
  // A new folder appears whole too.
  kdseg::StagedFolder fresh(dir.file("fresh"));
  kdseg::write_file_atomic(fresh.path() + "/a", "a");
  fresh.commit();
  EXPECT_EQ(kdseg::read_file(dir.file("fresh/a")), "a");
}

TEST(StagedFolder, StagingOfADeadProcessIsRemovedOfALiveOneKept) {
  TempDir dir;
  const std::string report = dir.file("report");
  // A staging folder left by a process that was killed: its PID no longer exists.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  std::string staged_dead, staged_live;
  {
    kdseg::StagedFolder probe(report);  // learns the host's temporary prefix
    const std::string name = fs::path(probe.path()).filename().string();
    const std::string prefix = name.substr(0, name.find(std::to_string(::getpid()) + "-"));
    staged_dead = dir.file(prefix + std::to_string(dead) + "-0-report");
    staged_live = dir.file(prefix + "1-0-report");  // PID 1 is alive
  }
  fs::create_directories(staged_dead + "/predictions");
  fs::create_directories(staged_live);
  kdseg::StagedFolder next(report);
  EXPECT_FALSE(fs::exists(staged_dead));
  EXPECT_TRUE(fs::exists(staged_live));
}

TEST(WriteFailure, NamesTheFileAndTheFreeSpace) {
  TempDir dir;
  const std::string path = dir.file("big.bin");
  // A file size limit stands in for a full disk: the write fails with EFBIG.
  const int status = in_child([&] {
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit limit{4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    std::string message;
    try {
      kdseg::write_file_atomic(path, std::string(1 << 20, 'x'));
    } catch (const kdseg::IoError& e) {
      message = e.message();
    }
    const bool named = message.find(path + ": cannot write 1.0 MiB: File too large") != std::string::npos &&
                       message.find("free of") != std::string::npos;
    const bool appended = [&] {
      try {
        kdseg::append_to_file(dir.file("log"), std::string(1 << 20, 'y'));
      } catch (const kdseg::IoError& e) {
        return e.message().find("File too large") != std::string::npos;
      }
      return false;
    }();
    return named && appended ? 0 : 1;
  });
  EXPECT_EQ(status, 0);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.file("")), fs::directory_iterator()), 1) << "temporary left";
}

TEST(StopRequest, TheFirstSignalAsksARepeatCountsOnceALaterOneEnds) {
  const int status = in_child([] {
    kdseg::install_stop_handlers();
    if (kdseg::stop_requested()) return 1;
    ::raise(SIGUSR1);
    if (!kdseg::stop_requested() || kdseg::stop_signal_name() != "SIGUSR1") return 2;
    ::raise(SIGTERM);  // the same request delivered again (SLURM, then mpirun): still stopping
    if (kdseg::stop_signal_name() != "SIGUSR1") return 3;
    ::usleep(2'100'000);
    ::raise(SIGTERM);  // asked again later: the default action ends the process
    return 4;
  });
  EXPECT_EQ(status, 128 + SIGTERM);
}

}  // namespace
