// Errors and check macros, atomic files, RNG and the progress display.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "core/cpu_cores.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/parallel.h"
#include "core/progress.h"
#include "core/random.h"

namespace fs = std::filesystem;
namespace {

// A fresh folder under the system temp folder, removed with the fixture.
class TempDir {
 public:
  TempDir()
      : path_(fs::temp_directory_path() /
              ("kdseg-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

TEST(Error, CheckCarriesValuesAndLocation) {
  const int slices = 75, expected = 74;
  try {
    KDSEG_CHECK(slices == expected, "segmentation-12.nii: ", slices, " slices differ from volume-12.nii ", expected);
    FAIL() << "KDSEG_CHECK did not throw";
  } catch (const kdseg::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("segmentation-12.nii: 75 slices differ from volume-12.nii 74"), std::string::npos) << what;
    EXPECT_EQ(what.find("slices == expected"), std::string::npos) << "the caller's message replaces the condition";
    EXPECT_NE(what.find("utilities_test.cpp:"), std::string::npos) << what;
    EXPECT_GT(e.line(), 0);
    EXPECT_EQ(e.message().find("utilities_test.cpp"), std::string::npos) << "message() holds no location";
  }
}

TEST(Error, CheckWithoutMessageNamesTheCondition) {
  const int ranks = 3;
  try {
    KDSEG_CHECK(ranks % 2 == 0);
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_EQ(e.message(), "check failed: ranks % 2 == 0");
  }
}

TEST(Error, PassingCheckDoesNotEvaluateMessage) {
  int evaluated = 0;
  auto count = [&] { return ++evaluated; };
  KDSEG_CHECK(true, "never built ", count());
  EXPECT_EQ(evaluated, 0);
}

TEST(Error, RankAppearsOnceDistributionIsKnown) {
  kdseg::set_process_rank(3, 4);
  try {
    KDSEG_THROW("collective all_reduce timed out");
  } catch (const kdseg::Error& e) {
    EXPECT_EQ(e.rank(), 3);
    EXPECT_EQ(std::string(e.what()).rfind("[rank 3] collective all_reduce timed out", 0), 0u) << e.what();
  }
  kdseg::set_process_rank(-1, 0);
}

TEST(AtomicFile, CommitReplacesAndLeavesNoTemporary) {
  TempDir dir;
  const std::string path = dir.file("metrics.json");
  kdseg::write_file_atomic(path, "old");
  kdseg::write_file_atomic(path, "new content");
  EXPECT_EQ(kdseg::read_file(path), "new content");
  EXPECT_EQ(dir.names(), std::vector<std::string>{"metrics.json"});
}

TEST(AtomicFile, UncommittedWriteKeepsPreviousFile) {
  TempDir dir;
  const std::string path = dir.file("report.json");
  kdseg::write_file_atomic(path, "previous");
  {
    kdseg::AtomicFile file(path);
    std::ofstream(file.temp_path()) << "half written";
  }  // destroyed without commit, as when an exception unwinds
  EXPECT_EQ(kdseg::read_file(path), "previous");
  EXPECT_EQ(dir.names(), std::vector<std::string>{"report.json"});
}

TEST(AtomicFile, WriterKilledMidWriteLeavesPreviousFileIntact) {
  TempDir dir;
  const std::string path = dir.file("checkpoint.pt");
  kdseg::write_file_atomic(path, "previous checkpoint");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    kdseg::AtomicFile file(path);
    std::ofstream out(file.temp_path(), std::ios::binary);
    const std::string block(1 << 20, 'x');
    out.write(block.data(), static_cast<std::streamsize>(block.size()));
    out.flush();
    const char byte = 1;
    if (::write(ready[1], &byte, 1) != 1) ::_exit(3);
    for (;;) {
      out.write(block.data(), static_cast<std::streamsize>(block.size()));
      out.flush();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(kdseg::read_file(path), "previous checkpoint");
  // What the killed writer leaves is a temporary file that no reader mistakes for output.
  for (const auto& name : dir.names()) {
    EXPECT_TRUE(name == "checkpoint.pt" || (name.rfind(".kdseg-tmp-", 0) == 0 && name.size() > 13 &&
                                            name.substr(name.size() - 13) == "checkpoint.pt"))
        << name;
  }
  EXPECT_EQ(dir.names().size(), 2u) << "the final file and the killed writer's temporary";
  // The next write of the same file removes what the dead writer left.
  kdseg::write_file_atomic(path, "next checkpoint");
  EXPECT_EQ(dir.names(), std::vector<std::string>{"checkpoint.pt"});
  EXPECT_EQ(kdseg::read_file(path), "next checkpoint");
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST(AtomicFile, KilledFirstWriteLeavesNoFinalFile) {
  TempDir dir;
  const std::string path = dir.file("soft_labels.h5");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    kdseg::AtomicFile file(path);
    std::ofstream(file.temp_path()) << "partial";
    ::raise(SIGKILL);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_FALSE(fs::exists(path));
}

TEST(AtomicFile, MissingOrReadOnlyFolderIsAClearError) {
  try {
    kdseg::write_file_atomic("/nonexistent-folder/out.json", "x");
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("folder /nonexistent-folder does not exist"), std::string::npos) << e.what();
  }
  if (::geteuid() != 0) {  // root writes anywhere; the permission check needs a normal user
    TempDir dir;
    fs::permissions(dir.file(""), fs::perms::owner_read | fs::perms::owner_exec);
    EXPECT_THROW(kdseg::write_file_atomic(dir.file("x"), "x"), kdseg::Error);
    fs::permissions(dir.file(""), fs::perms::owner_all);
  }
}

// LibTorch 2.x wheels export a statically linked copy of parts of libstdc++. The build links
// libstdc++ ahead of LibTorch so that kdseg's std::filesystem calls bind to the system's copy,
// which matches the headers (bound to the wheel's, remove_all segfaulted).
TEST(Linking, StdFilesystemComesFromLibstdcxx) {
  const auto remove_all = static_cast<std::uintmax_t (*)(const fs::path&)>(&fs::remove_all);
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(remove_all), &info), 0);
  ASSERT_NE(info.dli_fname, nullptr);
  EXPECT_NE(std::string(info.dli_fname).find("libstdc++"), std::string::npos)
      << "std::filesystem::remove_all is bound to " << info.dli_fname;
}

TEST(Rng, DeterministicPerStreamAndIndependentOfOrder) {
  const uint64_t a = kdseg::derive_seed(7, {2, 15});
  EXPECT_EQ(a, kdseg::derive_seed(7, {2, 15}));
  EXPECT_NE(a, kdseg::derive_seed(7, {15, 2}));
  EXPECT_NE(a, kdseg::derive_seed(8, {2, 15}));
  kdseg::Rng r1(a), r2(a);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(r1.next_u64(), r2.next_u64());
}

TEST(Rng, DistributionsHaveTheirMoments) {
  kdseg::Rng rng(kdseg::derive_seed(1, {}));
  constexpr int kN = 200000;
  double sum = 0, sum_sq = 0, usum = 0;
  int64_t low = 0, high = 0;
  for (int i = 0; i < kN; ++i) {
    const double z = rng.normal();
    sum += z;
    sum_sq += z * z;
    const double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    usum += u;
    const int64_t k = rng.uniform_int(-2, 2);
    ASSERT_GE(k, -2);
    ASSERT_LE(k, 2);
    low += k == -2;
    high += k == 2;
  }
  // Standard errors: mean 1/sqrt(N) = 0.0022, variance sqrt(2/N) = 0.0032; 5 sigma bounds.
  EXPECT_NEAR(sum / kN, 0.0, 0.012);
  EXPECT_NEAR(sum_sq / kN, 1.0, 0.016);
  EXPECT_NEAR(usum / kN, 0.5, 0.004);
  EXPECT_NEAR(static_cast<double>(low) / kN, 0.2, 0.005);
  EXPECT_NEAR(static_cast<double>(high) / kN, 0.2, 0.005);
}

TEST(Progress, PlainLinesShowCountsAndStatus) {
  std::FILE* sink = std::tmpfile();
  ASSERT_NE(sink, nullptr);
  {
    kdseg::Progress progress("precompute", 10, true, 0.0, sink);
    for (int i = 0; i < 10; ++i) progress.advance(1, "slice " + std::to_string(i));
    progress.finish("done");
    EXPECT_NE(progress.line("x").find("[########################]  10/10"), std::string::npos);
  }
  std::rewind(sink);
  std::string text(4096, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), sink));
  std::fclose(sink);
  EXPECT_NE(text.find("precompute  [##"), std::string::npos) << text;
  EXPECT_NE(text.find("10/10"), std::string::npos) << text;
  EXPECT_NE(text.find("done\n"), std::string::npos) << text;
  EXPECT_EQ(text.find('\r'), std::string::npos) << "no live redraw when not on a terminal";
}

// Steps done before a resume show in the counters but not in the rate: right after resuming at
// 50 of 100 nothing has run in this process, so the rate is 0 and no time left is guessed.
TEST(Progress, ResumedItemsAreLeftOutOfTheRate) {
  std::FILE* sink = std::tmpfile();
  ASSERT_NE(sink, nullptr);
  kdseg::Progress progress("train", 100, false, 0.0, sink);
  progress.resume_at(50);
  const std::string line = progress.line("");
  EXPECT_NE(line.find("50/100  0.00 it/s"), std::string::npos) << line;
  EXPECT_EQ(line.find("eta"), std::string::npos) << line;
  std::fclose(sink);
}

// A process bound to one core (as mpirun --bind-to core binds each rank) gets one thread
// whatever the number of ranks; an unbound one shares its cores among the node's ranks.
TEST(CpuCores, BoundProcessesUseTheirCoresUnboundOnesShare) {
  cpu_set_t original;
  ASSERT_EQ(sched_getaffinity(0, sizeof original, &original), 0);
  const int cores = kdseg::available_cores();
  ASSERT_GE(cores, 1);
  EXPECT_LE(cores, CPU_COUNT(&original));
  if (CPU_COUNT(&original) == sysconf(_SC_NPROCESSORS_ONLN)) {
    EXPECT_EQ(kdseg::default_threads(1), cores);
    EXPECT_EQ(kdseg::default_threads(cores), 1);
    EXPECT_EQ(kdseg::default_threads(4 * cores), 1) << "never 0";
  }
  if (CPU_COUNT(&original) < 2) GTEST_SKIP() << "one core: binding cannot narrow it";
  // Bound to fewer cores than the machine has: to 2 where there are 3 or more, else to 1.
  const int keep = sysconf(_SC_NPROCESSORS_ONLN) >= 3 && CPU_COUNT(&original) >= 2 ? 2 : 1;
  cpu_set_t narrow;
  CPU_ZERO(&narrow);
  for (int cpu = 0, kept = 0; kept < keep; ++cpu) {
    if (CPU_ISSET(cpu, &original)) {
      CPU_SET(cpu, &narrow);
      ++kept;
    }
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof narrow, &narrow), 0);
  const int available = kdseg::available_cores();
  const int alone = kdseg::default_threads(1), shared = kdseg::default_threads(2);
  ASSERT_EQ(sched_setaffinity(0, sizeof original, &original), 0);
  EXPECT_EQ(available, std::min(keep, cores)) << "the affinity mask, not the machine's core count";
  EXPECT_EQ(alone, available);
  EXPECT_EQ(shared, available) << "a bound rank keeps its own cores";
}

TEST(ParallelFor, EveryIndexOnceOnEveryThreadCount) {
  for (const int64_t n : {0, 1, 7, 1000}) {
    for (const int threads : {1, 3, 8}) {
      std::vector<std::atomic<int>> calls(static_cast<size_t>(n));
      std::mutex mutex;
      std::set<std::thread::id> ran_on;
      kdseg::parallel_for(n, threads, [&](int64_t i) {
        calls[static_cast<size_t>(i)].fetch_add(1);
        const std::lock_guard<std::mutex> lock(mutex);
        ran_on.insert(std::this_thread::get_id());
      });
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(calls[static_cast<size_t>(i)].load(), 1) << n << " " << threads;
      EXPECT_LE(ran_on.size(), static_cast<size_t>(std::max<int64_t>(1, std::min<int64_t>(threads, n))));
      if (threads == 1 && n > 0) {
        EXPECT_EQ(*ran_on.begin(), std::this_thread::get_id()) << "no thread for one";
      }
    }
  }
}

TEST(ParallelFor, AFailureReachesTheCallerAndStopsTheLoop) {
  std::vector<int64_t> seen;
  try {
    kdseg::parallel_for(100, 1, [&](int64_t i) {
      seen.push_back(i);
      KDSEG_CHECK(i != 3, "index ", i, " failed");
    });
    ADD_FAILURE() << "no exception";
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("index 3 failed"), std::string::npos) << e.what();
  }
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2, 3})) << "no index after the failure";
  // On many threads: the exception arrives (std::terminate otherwise) and the loop stops early.
  // The later indices take 50 us each, so that the others cannot finish the whole loop while the
  // failing thread unwinds its exception (the first throw of a process can take a millisecond, more
  // on a loaded machine): without the stop, the loop would take over a second.
  std::atomic<int64_t> started{0};
  EXPECT_THROW(kdseg::parallel_for(100000, 4,
                                   [&](int64_t i) {
                                     started.fetch_add(1);
                                     if (i == 10) throw std::runtime_error("ten");
                                     if (i > 10) std::this_thread::sleep_for(std::chrono::microseconds(50));
                                   }),
               std::runtime_error);
  EXPECT_LT(started.load(), 100000);
}

TEST(StartThreads, StartsTheCountAsked) {
  std::atomic<int> ran{0};
  std::vector<std::thread> threads;
  kdseg::start_threads(threads, 5, [&] { ran.fetch_add(1); });
  EXPECT_EQ(threads.size(), 5u);
  for (auto& t : threads) t.join();
  EXPECT_EQ(ran.load(), 5);
}

}  // namespace
