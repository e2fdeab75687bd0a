// The ordered pipeline of prepare and the batch loader: order, bounded window, errors, early stop.
#include "core/ordered_pipeline.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

using kdseg::OrderedPipeline;

TEST(OrderedPipeline, ItemsComeInIndexOrderOnEveryThreadCount) {
  for (const int64_t n : {0, 1, 7, 200}) {
    for (const int threads : {1, 3, 8}) {
      for (const int64_t window : {1, 2, 16}) {
        std::atomic<int> calls{0};
        OrderedPipeline<int64_t> pipeline(n, threads, window, [&](int64_t i) {
          calls.fetch_add(1);
          // Later items finish first now and then: the order is the pipeline's, not the threads'.
          if (i % 3 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
          return i * i;
        });
        for (int64_t i = 0; i < n; ++i) {
          const std::optional<int64_t> item = pipeline.next();
          ASSERT_TRUE(item.has_value()) << n << " " << threads << " " << window;
          EXPECT_EQ(*item, i * i);
        }
        EXPECT_FALSE(pipeline.next().has_value()) << "nothing after the last item";
        EXPECT_EQ(calls.load(), n) << "each index made once";
      }
    }
  }
}

TEST(OrderedPipeline, NoMoreThanTheWindowIsInFlight) {
  std::atomic<int64_t> made{0};
  OrderedPipeline<int64_t> pipeline(100, 4, 5, [&](int64_t i) {
    made.fetch_add(1);
    return i;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_LE(made.load(), 5) << "made ahead of a consumer that took nothing";
  for (int64_t taken = 1; taken <= 10; ++taken) {
    ASSERT_EQ(*pipeline.next(), taken - 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_LE(made.load(), taken + 5);
  }
}

TEST(OrderedPipeline, AnExceptionReachesTheConsumer) {
  for (const int threads : {1, 4}) {
    std::atomic<int64_t> started{0};
    OrderedPipeline<std::string> pipeline(100000, threads, 8, [&](int64_t i) {
      started.fetch_add(1);
      if (i == 10) throw std::runtime_error("item ten failed");
      return std::to_string(i);
    });
    int64_t taken = 0;
    try {
      while (pipeline.next()) ++taken;
      ADD_FAILURE() << "no exception";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "item ten failed");
    }
    EXPECT_LE(taken, 10) << "no item after the failed one";
    EXPECT_THROW(pipeline.next(), std::runtime_error) << "the failure stays";
    EXPECT_LT(started.load(), 100000) << "the workers stop after a failure";
  }
}

TEST(OrderedPipeline, DestroyingItEarlyStopsTheWorkers) {
  // Taken nothing, taken some, and with workers blocked on a full window: none hangs.
  for (const int64_t take : {0, 3}) {
    std::atomic<int64_t> made{0};
    {
      OrderedPipeline<std::unique_ptr<int64_t>> pipeline(1000000, 3, 4, [&](int64_t i) {
        made.fetch_add(1);
        return std::make_unique<int64_t>(i);
      });
      for (int64_t i = 0; i < take; ++i) EXPECT_EQ(**pipeline.next(), i);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_LE(made.load(), take + 4 + 3);
  }
}

}  // namespace
