// NIfTI reading and writing through niftilib, and the canonical reorientation, checked against
// world coordinates computed in the test.
#include <gtest/gtest.h>
#include <nifti1_io.h>
#include <torch/torch.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <vector>

#include "core/error.h"
#include "data/nifti.h"
#include "tests/data/temp_dir.h"

namespace {
namespace D = kdseg::data;
using torch::Tensor;

D::Affine diagonal(double sx, double sy, double sz) { return {sx, 0, 0, 10, 0, sy, 0, -20, 0, 0, sz, 30, 0, 0, 0, 1}; }

TEST(Nifti, RoundTripEveryDatatypeAndCompression) {
  kdseg::test::TempDir dir;
  const Tensor values = torch::arange(0, 4 * 5 * 6, torch::kDouble).reshape({4, 5, 6});
  for (const D::NiftiType type :
       {D::NiftiType::kUint8, D::NiftiType::kInt8, D::NiftiType::kInt16, D::NiftiType::kUint16, D::NiftiType::kInt32,
        D::NiftiType::kFloat32, D::NiftiType::kFloat64}) {
    for (const char* ext : {".nii", ".nii.gz"}) {
      const std::string path = dir.file(std::string("v_") + D::nifti_type_name(type) + ext);
      const Tensor data = type == D::NiftiType::kInt8 ? values - 60 : values;
      D::write_nifti(path, data, diagonal(0.7, 0.8, 2.5), type);
      const D::Volume v = D::read_nifti(path);
      EXPECT_EQ(v.datatype, type);
      EXPECT_TRUE(v.voxels.to(torch::kDouble).equal(data)) << D::nifti_type_name(type) << ext;
      EXPECT_NEAR(v.affine[0], 0.7, 1e-6);
      EXPECT_NEAR(v.affine[10], 2.5, 1e-6);
      EXPECT_NEAR(v.affine[7], -20, 1e-6);
    }
  }
  // uint16 above the int16 range is read exactly.
  D::write_nifti(dir.file("big.nii"), torch::full({2, 2, 2}, 60000.0), diagonal(1, 1, 1), D::NiftiType::kUint16);
  EXPECT_EQ(D::read_nifti(dir.file("big.nii")).voxels.max().item<float>(), 60000.0f);
}

TEST(Nifti, ScaleSlopeAndInterceptAreApplied) {
  kdseg::test::TempDir dir;
  const Tensor hu = torch::tensor({-1024.0, -100.0, 0.0, 40.5, 200.0, 3000.0, 12.0, 7.5}).reshape({2, 2, 2});
  D::write_nifti(dir.file("scaled.nii.gz"), hu, diagonal(1, 1, 1), D::NiftiType::kInt16, 0.5, -1024);
  const D::Volume v = D::read_nifti(dir.file("scaled.nii.gz"));
  EXPECT_TRUE(v.voxels.to(torch::kDouble).equal(hu.to(torch::kDouble))) << v.voxels;
}

// Written with niftilib directly: sform_code 0, so the qform must be used.
TEST(Nifti, QformWhenThereIsNoSform) {
  kdseg::test::TempDir dir;
  const int dims[8] = {3, 3, 4, 5, 1, 1, 1, 1};
  nifti_image* image = nifti_make_new_nim(dims, DT_FLOAT32, 1);
  image->sform_code = 0;
  image->qform_code = 1;
  image->quatern_b = 0;
  image->quatern_c = 0;
  image->quatern_d = 1;  // 180 degrees about z: x and y flipped
  image->qfac = 1;
  image->dx = image->pixdim[1] = 2;
  image->dy = image->pixdim[2] = 3;
  image->dz = image->pixdim[3] = 4;
  image->qoffset_x = 5;
  const std::string path = dir.file("qform.nii");
  nifti_set_filenames(image, path.c_str(), 0, 1);
  nifti_image_write(image);
  nifti_image_free(image);
  const D::Volume v = D::read_nifti(path);
  EXPECT_NEAR(v.affine[0], -2, 1e-6);
  EXPECT_NEAR(v.affine[5], -3, 1e-6);
  EXPECT_NEAR(v.affine[10], 4, 1e-6);
  EXPECT_NEAR(v.affine[3], 5, 1e-6);
}

// Every canonical voxel keeps its world position, and the canonical axes run along +R, +A, +S.
TEST(Nifti, CanonicalReorientationKeepsWorldPositions) {
  const std::vector<std::array<int, 3>> permutations = {{0, 1, 2}, {1, 0, 2}, {2, 0, 1},
                                                        {0, 2, 1}, {1, 2, 0}, {2, 1, 0}};
  const Tensor values = torch::arange(0, 5 * 6 * 7, torch::kFloat).reshape({5, 6, 7});  // value = 42 i + 7 j + k
  int checked = 0;
  for (const auto& perm : permutations) {
    for (int signs = 0; signs < 8; ++signs) {
      // Voxel axis v runs along world axis perm[v], negative when bit v of signs is set.
      D::Affine a{};
      const double spacing[3] = {0.7, 1.3, 2.9};
      for (int v = 0; v < 3; ++v)
        a[static_cast<size_t>(perm[static_cast<size_t>(v)] * 4 + v)] = ((signs >> v) & 1 ? -1 : 1) * spacing[v];
      a[3] = 11, a[7] = -7, a[11] = 3, a[15] = 1;
      // A slight obliquity must not change the answer.
      a[static_cast<size_t>(((perm[0] + 1) % 3) * 4 + 0)] += 0.05;
      D::Volume volume{values, a, "test", D::NiftiType::kFloat32};
      const D::Volume c = D::to_canonical(volume);
      for (int w = 0; w < 3; ++w) {
        EXPECT_GT(c.affine[static_cast<size_t>(w * 4 + w)], 0.5)
            << "axis " << w << " perm " << perm[0] << perm[1] << perm[2] << " signs " << signs;
      }
      for (int64_t x = 0; x < c.voxels.size(0); ++x) {
        for (int64_t y = 0; y < c.voxels.size(1); ++y) {
          for (int64_t z = 0; z < c.voxels.size(2); ++z) {
            const int64_t value = static_cast<int64_t>(c.voxels[x][y][z].item<float>());
            const int64_t i = value / 42, j = (value / 7) % 6, k = value % 7;
            for (int r = 0; r < 3; ++r) {
              const double before = a[r * 4] * i + a[r * 4 + 1] * j + a[r * 4 + 2] * k + a[r * 4 + 3];
              const double after =
                  c.affine[r * 4] * x + c.affine[r * 4 + 1] * y + c.affine[r * 4 + 2] * z + c.affine[r * 4 + 3];
              ASSERT_NEAR(before, after, 1e-9);
            }
          }
        }
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 48);
}

TEST(Nifti, LpsVolumeBecomesRasLikeNibabel) {
  // diag(-1,-1,1): nibabel's as_closest_canonical flips the first two axes.
  const Tensor values = torch::arange(0, 8, torch::kFloat).reshape({2, 2, 2});
  const D::Volume c = D::to_canonical(
      D::Volume{values, D::Affine{-1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}, "", D::NiftiType::kFloat32});
  EXPECT_TRUE(c.voxels.equal(values.flip({0, 1})));
  EXPECT_EQ(c.affine[0], 1);
  EXPECT_EQ(c.affine[3], -1);  // the flipped axis starts at the other end
}

TEST(Nifti, StoredVoxelsAndCanonicalSlicesOfEveryOrientation) {
  kdseg::test::TempDir dir;
  const Tensor values = torch::arange(0, 5 * 6 * 7, torch::kFloat).reshape({5, 6, 7}) - 100;
  const std::vector<std::array<int, 3>> permutations = {{0, 1, 2}, {1, 0, 2}, {2, 0, 1}, {0, 2, 1}, {2, 1, 0}};
  for (const auto& perm : permutations) {
    for (int signs = 0; signs < 8; signs += 3) {
      D::Affine a{};
      for (int v = 0; v < 3; ++v)
        a[static_cast<size_t>(perm[static_cast<size_t>(v)] * 4 + v)] = ((signs >> v) & 1 ? -1 : 1) * (v + 0.5);
      a[15] = 1;
      const std::string path = dir.file("o.nii.gz");
      D::write_nifti(path, values, a, D::NiftiType::kInt16);
      const D::Volume stored = D::read_nifti(path, true, D::VoxelType::kAsStored);
      EXPECT_EQ(stored.voxels.scalar_type(), torch::kShort);
      EXPECT_TRUE(stored.voxels.to(torch::kFloat).equal(values));
      const D::Volume canonical = D::to_canonical(D::read_nifti(path));
      const D::Reorientation r = D::canonical_reorientation(stored.affine, {5, 6, 7});
      for (size_t i = 0; i < 16; ++i) EXPECT_NEAR(r.affine[i], canonical.affine[i], 1e-12);
      for (int64_t k = 0; k < canonical.voxels.size(2); ++k) {
        EXPECT_TRUE(D::canonical_slice(stored.voxels, r, k).to(torch::kFloat).equal(canonical.voxels.select(2, k)))
            << "perm " << perm[0] << perm[1] << perm[2] << " signs " << signs << " slice " << k;
      }
    }
  }
}

TEST(Nifti, PlaneWriterMatchesWriteNiftiAndIsAtomic) {
  kdseg::test::TempDir dir;
  const Tensor values = (torch::randn({9, 8, 5}) * 300).round();
  const D::Affine a = diagonal(-0.8, 0.8, 2.5);
  for (const D::NiftiType type :
       {D::NiftiType::kInt16, D::NiftiType::kUint8, D::NiftiType::kUint16, D::NiftiType::kFloat32}) {
    const std::string type_name = D::nifti_type_name(type);
    for (const std::string& name : {type_name + ".nii", type_name + ".nii.gz"}) {
      const Tensor v = type == D::NiftiType::kUint8    ? values.abs().clamp_max(255)
                       : type == D::NiftiType::kUint16 ? values.abs() * 50
                                                       : values;
      {
        D::NiftiPlaneWriter writer(dir.file(name), {9, 8, 5}, a, type, /*threads=*/3);
        for (int64_t k = 0; k < 5; ++k) writer.write(v.select(2, k));
        EXPECT_FALSE(std::filesystem::exists(dir.file(name))) << "visible before close()";
        writer.close();
      }
      const D::Volume back = D::read_nifti(dir.file(name));
      EXPECT_TRUE(back.voxels.equal(v)) << name;
      EXPECT_EQ(back.datatype, type);
      for (size_t i = 0; i < 16; ++i) EXPECT_NEAR(back.affine[i], a[i], 1e-6);
    }
  }
  {  // An unfinished file never appears.
    D::NiftiPlaneWriter writer(dir.file("unfinished.nii.gz"), {9, 8, 5}, a, D::NiftiType::kInt16);
    writer.write(values.select(2, 0));
    EXPECT_THROW(writer.close(), kdseg::Error);
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("unfinished.nii.gz")));
}

TEST(Nifti, BadFilesAreClearErrors) {
  kdseg::test::TempDir dir;
  const auto error_of = [](const std::string& path) {
    try {
      D::read_nifti(path);
    } catch (const kdseg::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of(dir.file("missing.nii")).find("missing.nii: no such file"), std::string::npos);
  // Truncated: the header promises more data than the file has.
  D::write_nifti(dir.file("full.nii"), torch::zeros({16, 16, 16}), diagonal(1, 1, 1), D::NiftiType::kInt16);
  std::filesystem::resize_file(dir.file("full.nii"), 352 + 1000);
  EXPECT_NE(error_of(dir.file("full.nii")).find("full.nii: truncated file: 1000 of 8192 bytes"), std::string::npos)
      << error_of(dir.file("full.nii"));
  D::write_nifti(dir.file("full.nii.gz"), torch::randn({16, 16, 16}) * 100, diagonal(1, 1, 1), D::NiftiType::kInt16);
  std::filesystem::resize_file(dir.file("full.nii.gz"), std::filesystem::file_size(dir.file("full.nii.gz")) / 2);
  EXPECT_NE(error_of(dir.file("full.nii.gz")).find("truncated file"), std::string::npos)
      << error_of(dir.file("full.nii.gz"));
  std::ofstream(dir.file("garbage.nii")) << "not a nifti file at all";
  EXPECT_NE(error_of(dir.file("garbage.nii")).find("garbage.nii: unreadable NIfTI file"), std::string::npos);
  // NaN intensities.
  Tensor nan = torch::zeros({3, 3, 3});
  nan[1][1][1] = std::nan("");
  D::write_nifti(dir.file("nan.nii"), nan, diagonal(1, 1, 1), D::NiftiType::kFloat32);
  EXPECT_NE(error_of(dir.file("nan.nii")).find("1 voxels are NaN or Inf"), std::string::npos);
  // 4D, written with niftilib directly.
  const int dims[8] = {4, 3, 3, 3, 2, 1, 1, 1};
  nifti_image* image = nifti_make_new_nim(dims, DT_INT16, 1);
  const std::string path = dir.file("4d.nii");
  nifti_set_filenames(image, path.c_str(), 0, 1);
  nifti_image_write(image);
  nifti_image_free(image);
  EXPECT_NE(error_of(path).find("4D volume (3x3x3x2)"), std::string::npos) << error_of(path);
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}
void put_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// `bytes` as one gzip member of stored (uncompressed) DEFLATE blocks, through zlib: a changed
// payload byte then still inflates without a DEFLATE error, and only the CRC-32 can tell.
std::vector<uint8_t> gzip_stored(const std::vector<uint8_t>& bytes) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_NO_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<uint8_t> out(deflateBound(&z, bytes.size()));
  z.next_in = const_cast<Bytef*>(bytes.data());
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string read_error(const std::string& path) {
  try {
    D::read_nifti(path, true, D::VoxelType::kAsStored);
  } catch (const kdseg::Error& e) {
    return e.what();
  }
  return "no error";
}

// A label map in a .nii.gz whose voxels or trailer were changed: zlib's stream reader stops at the
// last voxel, before the trailer, so niftilib's reading took such files with wrong voxels (the
// libdeflate path refused them, then fell back to it). Every
// one must be an error that names the file.
TEST(Nifti, GzipCrcAndLengthErrorsNameTheFile) {
  kdseg::test::TempDir dir;
  // More than the 16 KiB zlib inflates ahead when niftilib reads the header, which would reach a
  // small file's trailer.
  const Tensor labels = torch::randint(0, 3, {32, 32, 32}, torch::kUInt8);
  D::write_nifti(dir.file("labels.nii"), labels, diagonal(1, 1, 1), D::NiftiType::kUint8);
  const std::vector<uint8_t> plain = file_bytes(dir.file("labels.nii"));
  ASSERT_EQ(plain.size(), 352u + 32 * 32 * 32);

  // A voxel changed inside a stored block (10 bytes of gzip header, 5 of the block's header):
  // 0-2 becomes 1-3, still a label, so nothing but the CRC-32 shows it.
  std::vector<uint8_t> voxel = gzip_stored(plain);
  ASSERT_EQ(std::vector<uint8_t>(voxel.begin() + 15, voxel.begin() + 15 + 352),
            std::vector<uint8_t>(plain.begin(), plain.begin() + 352));
  voxel[15 + 352 + 100] ^= 1;
  put_bytes(dir.file("voxel.nii.gz"), voxel);
  const std::string voxel_error = read_error(dir.file("voxel.nii.gz"));
  EXPECT_NE(voxel_error.find("voxel.nii.gz: damaged gzip data: the CRC-32 does not match"), std::string::npos)
      << voxel_error;
  // The same with the trailer at a multiple of zlib's 8 KiB input reads (a file name in the gzip
  // header moves it): zlib's stream reader fills the last voxel and never reads the trailer, so
  // the file was read without an error, one voxel wrong.
  std::vector<uint8_t> aligned = voxel;
  const size_t name = (8192 - (aligned.size() - 8) % 8192) % 8192;
  if (name > 0) {
    aligned[3] |= 0x08;  // FNAME: a NUL-terminated name after the 10-byte header
    std::vector<uint8_t> field(name, 'n');
    field.back() = 0;
    aligned.insert(aligned.begin() + 10, field.begin(), field.end());
  }
  ASSERT_EQ((aligned.size() - 8) % 8192, 0u);
  put_bytes(dir.file("aligned.nii.gz"), aligned);
  const std::string aligned_error = read_error(dir.file("aligned.nii.gz"));
  EXPECT_NE(aligned_error.find("aligned.nii.gz: damaged gzip data: the CRC-32 does not match"), std::string::npos)
      << aligned_error;

  // The trailer of kdseg's own writer (one member per plane): its last CRC-32, then its length.
  D::write_nifti(dir.file("written.nii.gz"), labels, diagonal(1, 1, 1), D::NiftiType::kUint8);
  const std::vector<uint8_t> written = file_bytes(dir.file("written.nii.gz"));
  std::vector<uint8_t> crc = written, length = written;
  crc[crc.size() - 8] ^= 0x40;
  length[length.size() - 4] ^= 0x01;
  put_bytes(dir.file("crc.nii.gz"), crc);
  put_bytes(dir.file("length.nii.gz"), length);
  const std::string crc_error = read_error(dir.file("crc.nii.gz"));
  EXPECT_NE(crc_error.find("crc.nii.gz: damaged gzip data: the CRC-32 does not match"), std::string::npos) << crc_error;
  const std::string length_error = read_error(dir.file("length.nii.gz"));
  EXPECT_NE(length_error.find("length.nii.gz: damaged gzip data: the length in the trailer does not match"),
            std::string::npos)
      << length_error;
  // Bytes after the last member that are neither a member nor padding.
  std::vector<uint8_t> junk = written;
  junk.insert(junk.end(), {'j', 'u', 'n', 'k'});
  put_bytes(dir.file("junk.nii.gz"), junk);
  EXPECT_NE(read_error(dir.file("junk.nii.gz")).find("junk.nii.gz: 4 bytes after the end of its gzip data"),
            std::string::npos)
      << read_error(dir.file("junk.nii.gz"));
}

// What zlib's reader accepted for good reasons is still read: an uncompressed file named .nii.gz,
// zeros after the last member, a stream longer than the voxels, stored blocks.
TEST(Nifti, GzipShapesNiftilibAcceptsAreRead) {
  kdseg::test::TempDir dir;
  const Tensor labels = torch::randint(0, 3, {16, 16, 8}, torch::kUInt8);
  D::write_nifti(dir.file("labels.nii"), labels, diagonal(1, 1, 1), D::NiftiType::kUint8);
  const std::vector<uint8_t> plain = file_bytes(dir.file("labels.nii"));
  std::vector<uint8_t> longer = plain;
  longer.insert(longer.end(), 100, 7);
  std::vector<uint8_t> padded = gzip_stored(plain);
  padded.insert(padded.end(), 512, 0);
  const std::map<std::string, std::vector<uint8_t>> files = {
      {"plain.nii.gz", plain}, {"padded.nii.gz", padded}, {"longer.nii.gz", gzip_stored(longer)}};
  for (const auto& [name, bytes] : files) {
    put_bytes(dir.file(name), bytes);
    const D::Volume v = D::read_nifti(dir.file(name), true, D::VoxelType::kAsStored);
    EXPECT_TRUE(torch::equal(v.voxels.to(torch::kUInt8), labels)) << name;
  }
}

}  // namespace
