// The soft-label cache: quantisation, shards and master, resuming, verification.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "core/error.h"
#include "core/losses/dml.h"
#include "data/hdf5_util.h"
#include "data/prepared_store.h"
#include "data/soft_label_cache.h"
#include "tests/data/temp_dir.h"

namespace kdseg::data {
namespace {
namespace fs = std::filesystem;
using torch::Tensor;

TEST(Quantisation, SumsTo255AndStaysWithinTheBound) {
  torch::manual_seed(0);
  for (int64_t classes : {2, 3, 5}) {
    const Tensor p = torch::softmax(torch::randn({4, classes, 16, 16}) * 4, 1);
    const Tensor q = quantise_probabilities(p);
    ASSERT_EQ(q.scalar_type(), torch::kByte);
    EXPECT_TRUE((q.to(torch::kInt).sum(1) == 255).all().item<bool>()) << classes << " classes";
    const double error = (dequantise_probabilities(q) - p).abs().max().item<double>();
    EXPECT_LT(error, 1.0 / 255.0) << classes << " classes";
    if (classes == 2) {
      EXPECT_LE(error, 1.0 / 510.0 + 1e-7);
    }
  }
  // Exact values stay exact; ties go to the lower class.
  const Tensor half = torch::full({1, 2, 1, 1}, 0.5);
  const Tensor q = quantise_probabilities(half);
  EXPECT_EQ(q[0][0][0][0].item<int>(), 128);
  EXPECT_EQ(q[0][1][0][0].item<int>(), 127);
  EXPECT_EQ(quantise_probabilities(torch::tensor({1.0f, 0.0f}).view({1, 2, 1, 1}))[0][0][0][0].item<int>(), 255);
}

TEST(Quantisation, DmlAgainstQuantisedTeacherIsWithin1e3) {
  // The effect of probs-u8 on the loss the student optimises, for a confident teacher and an
  // uncertain student.
  torch::manual_seed(1);
  const Tensor teacher = torch::softmax(torch::randn({4, 2, 64, 64}) * 3, 1);
  const Tensor student = torch::randn({4, 2, 64, 64});
  const Tensor quantised = dequantise_probabilities(quantise_probabilities(teacher));
  const double exact = losses::dml_loss(student, teacher).item<double>();
  const double approx = losses::dml_loss(student, quantised).item<double>();
  EXPECT_LT(std::abs(exact - approx), 1e-3) << exact << " vs " << approx;
}

CacheProvenance sample_provenance(const std::string& format) {
  CacheProvenance p;
  p.format = format;
  p.temperature = format == "probs-u8" ? "1" : "applied when read";
  p.teacher_file = "/teachers/t.pt";
  p.teacher_hash = "0123456789abcdef";
  p.store_file = "/data/store.h5";
  p.store_hash = "fedcba9876543210";
  p.folds = "all";
  p.classes = "2";
  p.tool_version = "kdseg test";
  p.created = "2026-11-26T00:00:00Z";
  return p;
}

// Logits of slice `store_row` (a function of the row, so any split can be checked).
Tensor logits_of(int64_t store_row, int64_t h, int64_t w) {
  return torch::linspace(-8, 8, 2 * h * w).view({1, 2, h, w}) + static_cast<double>(store_row) * 0.25;
}

// Writes a cache over store rows `rows` with `world` shards, the way the pass splits them.
void write_cache(const std::string& dir, const std::vector<int64_t>& rows, int world, int64_t h, int64_t w,
                 int compression = 4) {
  fs::create_directories(dir);
  const int64_t n = static_cast<int64_t>(rows.size());
  for (int r = 0; r < world; ++r) {
    CacheShardWriter::ShardSpec g;
    g.rank = r;
    g.world = world;
    g.first_row = n * r / world;
    for (int64_t i = n * r / world; i < n * (r + 1) / world; ++i) g.store_rows.push_back(rows[static_cast<size_t>(i)]);
    g.height = h;
    g.width = w;
    g.compression = compression;
    CacheShardWriter shard(dir, g, sample_provenance("logits-f16"));
    for (int64_t i = 0; i < shard.rows(); ++i) {
      shard.write(i, logits_of(g.store_rows[static_cast<size_t>(i)], h, w).to(torch::kHalf));
    }
    shard.finish();
  }
  write_cache_master(dir, world);
}

TEST(SoftLabelCache, MasterReadsAsOneArrayThroughTheDocumentedNames) {
  test::TempDir tmp;
  const std::vector<int64_t> rows = {0, 2, 3, 5, 8, 9, 11};
  write_cache(tmp.file("cache"), rows, 3, 6, 5);
  // From another working folder: the shards are found next to the master.
  const fs::path here = fs::current_path();
  fs::current_path("/");
  auto file =
      std::make_unique<h5::Handle>(H5Fopen(tmp.file("cache/soft_labels.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  ASSERT_GE(file->get(), 0);
  auto set = std::make_unique<h5::Handle>(H5Dopen2(*file, "/soft_labels", H5P_DEFAULT));
  ASSERT_GE(set->get(), 0);
  const h5::Handle space(H5Dget_space(*set));
  hsize_t dims[4];
  ASSERT_EQ(H5Sget_simple_extent_dims(space, dims, nullptr), 4);
  EXPECT_EQ(dims[0], rows.size());
  EXPECT_EQ(dims[1], 2u);
  std::vector<float> values(dims[0] * dims[1] * dims[2] * dims[3]);
  ASSERT_GE(H5Dread(*set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
  std::vector<int64_t> slice(rows.size());
  {
    const h5::Handle slice_set(H5Dopen2(*file, "/slice", H5P_DEFAULT));
    ASSERT_GE(H5Dread(slice_set, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, slice.data()), 0);
  }
  set.reset();  // the master closed before the working folder changes back
  file.reset();
  fs::current_path(here);
  EXPECT_EQ(slice, rows);
  const Tensor all = torch::from_blob(values.data(), {7, 2, 6, 5});
  for (size_t i = 0; i < rows.size(); ++i) {
    const Tensor expected = logits_of(rows[i], 6, 5).to(torch::kHalf).to(torch::kFloat)[0];
    EXPECT_TRUE(torch::equal(all[static_cast<int64_t>(i)], expected)) << "row " << i;
  }
}

TEST(SoftLabelCache, ReaderGivesProbabilitiesAtTheTemperature) {
  test::TempDir tmp;
  write_cache(tmp.file("cache"), {1, 4, 6}, 2, 4, 4);
  const SoftLabelCache cache(tmp.file("cache"));
  EXPECT_EQ(cache.rows(), 3);
  EXPECT_EQ(cache.cache_row(4), 1);
  EXPECT_EQ(cache.cache_row(5), -1);
  EXPECT_EQ(cache.missing({1, 2, 6, 7}), (std::vector<int64_t>{2, 7}));
  const Tensor logits = logits_of(6, 4, 4).to(torch::kHalf).to(torch::kFloat)[0];
  EXPECT_TRUE(torch::allclose(cache.probabilities(6, 2.0), torch::softmax(logits / 2.0, 0)));
  EXPECT_THROW(cache.probabilities(5, 1.0), Error);
  EXPECT_TRUE(verify_cache(tmp.file("cache")).empty());
}

TEST(SoftLabelCache, PartialShardResumesWithItsDoneSlices) {
  test::TempDir tmp;
  CacheShardWriter::ShardSpec g;
  g.store_rows = {0, 1, 2, 3};
  g.height = 4;
  g.width = 4;
  {
    CacheShardWriter shard(tmp.path(), g, sample_provenance("logits-f16"));
    shard.write(0, logits_of(0, 4, 4).to(torch::kHalf));
    shard.write(2, logits_of(2, 4, 4).to(torch::kHalf));
  }  // gone without finish(): what a killed run leaves
  EXPECT_FALSE(fs::exists(tmp.file(shard_file_name(0, 1))));
  EXPECT_TRUE(fs::exists(tmp.file(shard_file_name(0, 1) + ".partial")));
  {
    CacheShardWriter shard(tmp.path(), g, sample_provenance("logits-f16"));
    EXPECT_EQ(shard.done_count(), 2);
    EXPECT_TRUE(shard.done(0) && !shard.done(1) && shard.done(2) && !shard.done(3));
    EXPECT_THROW(shard.finish(), Error);
  }
  // Another teacher: the partial shard is started over.
  CacheProvenance other = sample_provenance("logits-f16");
  other.teacher_hash = "1111111111111111";
  CacheShardWriter shard(tmp.path(), g, other);
  EXPECT_EQ(shard.done_count(), 0);
}

// Uncompressed, so that no decompression error can catch the damage first: only the checksums.
TEST(SoftLabelCache, VerifyAndReadsFindACorruptedShard) {
  test::TempDir tmp;
  write_cache(tmp.file("cache"), {0, 1, 2, 3}, 2, 16, 16, /*compression=*/0);
  ASSERT_TRUE(verify_cache(tmp.file("cache")).empty());
  // Overwrite bytes inside slice 1's chunk of shard 0, found through HDF5's chunk index.
  const std::string shard = tmp.file("cache/" + shard_file_name(0, 2));
  haddr_t address = 0;
  hsize_t size = 0;
  {
    const h5::Handle file(H5Fopen(shard.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    const h5::Handle set(H5Dopen2(file, "soft_labels", H5P_DEFAULT));
    const hsize_t offset[4] = {1, 0, 0, 0};
    unsigned mask = 0;
    ASSERT_GE(H5Dget_chunk_info_by_coord(set, offset, &mask, &address, &size), 0);
  }
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(address + size / 2));
    const char garbage[8] = {'k', 'd', 's', 'e', 'g', '!', '!', '!'};
    f.write(garbage, sizeof garbage);
  }
  const auto problems = verify_cache(tmp.file("cache"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find(shard_file_name(0, 2) + ": slice 1 (prepared-store row 1)"), std::string::npos)
      << problems[0];
  // distill reads through the same checks: the damaged slice is an error, the others read.
  const SoftLabelCache cache(tmp.file("cache"));
  try {
    cache.probabilities(1, 1.0);
    FAIL() << "read a corrupt slice";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(shard_file_name(0, 2) +
                                         ": slice 1 (prepared-store row 1) does not match its checksum"),
              std::string::npos)
        << e.what();
  }
  for (int64_t row : {0, 2, 3}) EXPECT_NO_THROW(cache.probabilities(row, 1.0)) << row;
}

TEST(SoftLabelCache, ProvenanceIsCheckedAgainstTheFiles) {
  test::TempDir tmp;
  test::write_small_dataset(tmp.file("raw"), 2, 16, 6);
  PrepareOptions po;
  po.input = tmp.file("raw");
  po.output = tmp.file("store.h5");
  po.size = 16;
  po.folds = 2;
  prepare_store(po);
  { std::ofstream(tmp.file("teacher.pt")) << "weights"; }
  write_cache(tmp.file("cache"), {0, 1}, 1, 4, 4);
  const SoftLabelCache cache(tmp.file("cache"));
  try {
    cache.check_provenance(tmp.file("store.h5"), tmp.file("teacher.pt"));
    FAIL() << "a cache of other files was accepted";
  } catch (const Error& e) {
    const std::string text = e.message();
    EXPECT_NE(text.find("prepared store: the cache was made from /data/store.h5 (content hash fedcba9876543210)"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("teacher: the cache was made by /teachers/t.pt"), std::string::npos) << text;
  }
  const auto problems = verify_cache(tmp.file("cache"), tmp.file("store.h5"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].rfind("prepared store:", 0), 0u);
}

TEST(SoftLabelCache, MissingMasterOrShardIsNamed) {
  test::TempDir tmp;
  try {
    SoftLabelCache cache(tmp.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("soft_labels.h5: missing"), std::string::npos) << e.message();
  }
  write_cache(tmp.file("cache"), {0, 1, 2}, 2, 4, 4);
  fs::remove(tmp.file("cache/" + shard_file_name(1, 2)));
  try {
    SoftLabelCache cache(tmp.file("cache"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find(shard_file_name(1, 2) + ": missing"), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace kdseg::data
