#include "data/nifti.h"

#include <nifti1_io.h>
#include <torch/torch.h>
#include <zlib.h>
#include <znzlib.h>

#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <vector>

#include "core/error.h"
#include "core/file_util.h"
#include "core/parallel.h"
#include "data/deflate.h"

namespace kdseg::data {
namespace {

struct NiftiDeleter {
  void operator()(nifti_image* image) const { nifti_image_free(image); }
};
using NiftiPtr = std::unique_ptr<nifti_image, NiftiDeleter>;

struct TypeInfo {
  NiftiType type;
  const char* name;
  int code;
  at::ScalarType read_as;  // the tensor type holding the file's values exactly
};
const TypeInfo kTypes[] = {
    {NiftiType::kUint8, "uint8", DT_UINT8, at::kByte},         {NiftiType::kInt8, "int8", DT_INT8, at::kChar},
    {NiftiType::kInt16, "int16", DT_INT16, at::kShort},        {NiftiType::kUint16, "uint16", DT_UINT16, at::kInt},
    {NiftiType::kInt32, "int32", DT_INT32, at::kInt},          {NiftiType::kFloat32, "float32", DT_FLOAT32, at::kFloat},
    {NiftiType::kFloat64, "float64", DT_FLOAT64, at::kDouble},
};
const TypeInfo* type_by_code(int code) {
  for (const auto& t : kTypes) {
    if (t.code == code) return &t;
  }
  return nullptr;
}
const TypeInfo& info(NiftiType type) {
  for (const auto& t : kTypes) {
    if (t.type == type) return t;
  }
  KDSEG_THROW("unknown NiftiType ", static_cast<int>(type));
}

// The values of an integer type: stored values saturate instead of wrapping around.
std::pair<double, double> integer_range(int code) {
  static const std::map<int, std::pair<double, double>> kRange = {{DT_UINT8, {0, 255}},
                                                                  {DT_INT8, {-128, 127}},
                                                                  {DT_INT16, {-32768, 32767}},
                                                                  {DT_UINT16, {0, 65535}},
                                                                  {DT_INT32, {-2147483648.0, 2147483647.0}}};
  return kRange.at(code);
}

Affine from_mat44(const mat44& m) {
  Affine a{};
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) a[static_cast<size_t>(r * 4 + c)] = m.m[r][c];
  }
  return a;
}
mat44 to_mat44(const Affine& a) {
  mat44 m;
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) m.m[r][c] = static_cast<float>(a[static_cast<size_t>(r * 4 + c)]);
  }
  return m;
}

// The sform when sform_code > 0, else the qform.
Affine affine_of(const nifti_image& image) {
  return image.sform_code > 0 ? from_mat44(image.sto_xyz) : from_mat44(image.qto_xyz);
}

// The affine as both sform and qform (code 1), the voxel sizes and scl_slope/scl_inter.
void set_geometry(nifti_image& image, const Affine& affine, double slope, double inter) {
  const std::array<double, 3> spacing = voxel_spacing(affine);
  image.dx = image.pixdim[1] = static_cast<float>(spacing[0]);
  image.dy = image.pixdim[2] = static_cast<float>(spacing[1]);
  image.dz = image.pixdim[3] = static_cast<float>(spacing[2]);
  image.scl_slope = static_cast<float>(slope);
  image.scl_inter = static_cast<float>(inter);
  image.sform_code = NIFTI_XFORM_SCANNER_ANAT;
  image.sto_xyz = to_mat44(affine);
  image.sto_ijk = nifti_mat44_inverse(image.sto_xyz);
  image.qform_code = NIFTI_XFORM_SCANNER_ANAT;
  nifti_mat44_to_quatern(image.sto_xyz, &image.quatern_b, &image.quatern_c, &image.quatern_d, &image.qoffset_x,
                         &image.qoffset_y, &image.qoffset_z, nullptr, nullptr, nullptr, &image.qfac);
  image.qto_xyz = nifti_quatern_to_mat44(image.quatern_b, image.quatern_c, image.quatern_d, image.qoffset_x,
                                         image.qoffset_y, image.qoffset_z, image.dx, image.dy, image.dz, image.qfac);
  image.qto_ijk = nifti_mat44_inverse(image.qto_xyz);
}

// "" when the NIfTI file at `path` holds `expected` bytes (decompressed, for .gz) and reads to
// its end; otherwise what is wrong with it.
std::string written_nifti_problem(const std::string& path, int64_t expected) {
  if (path.size() < 3 || path.compare(path.size() - 3, 3, ".gz") != 0) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) return ec.message();
    return static_cast<int64_t>(size) == expected
               ? ""
               : "wrote " + std::to_string(size) + " of " + std::to_string(expected) + " bytes";
  }
  gzFile in = gzopen(path.c_str(), "rb");
  if (in == nullptr) return "cannot reopen it to check it";
  std::vector<char> buffer(1 << 20);
  int64_t total = 0;
  int n = 0;
  while ((n = gzread(in, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0) total += n;
  int code = Z_OK;
  const std::string error = n < 0 ? gzerror(in, &code) : "";
  const int closed = gzclose(in);
  if (n < 0) return "its compressed data is cut short or damaged (" + error + ")";
  if (closed != Z_OK) return "its compressed data is cut short or damaged";
  if (total != expected) return "holds " + std::to_string(total) + " of " + std::to_string(expected) + " bytes";
  return "";
}

// The voxel data of `image` as [K,J,I] (C order) in the file's type (uint16 as int16 bits). A
// .nii.gz is read whole and inflated into the tensor's own buffer, every member checked to its
// CRC-32 and length (gunzip_prefix): zlib's stream reader, which niftilib uses, stops at the last
// voxel and would take a damaged file's wrong voxels. A .nii is read through znzlib.
at::Tensor read_voxel_data(const nifti_image& image, const std::string& path) {
  const TypeInfo* type = type_by_code(image.datatype);
  const at::ScalarType stored = image.datatype == DT_UINT16 ? at::kShort : type->read_as;
  const int64_t ni = image.nx, nj = image.ny, nk = image.nz;
  const auto bytes = static_cast<size_t>(ni * nj * nk) * static_cast<size_t>(image.nbyper);
  const auto offset = static_cast<size_t>(image.iname_offset);
  const bool gz = nifti_is_gzfile(image.iname) != 0;
  if (gz) {
    std::vector<uint8_t> compressed;
    {
      std::ifstream in(image.iname, std::ios::binary);
      in.seekg(0, std::ios::end);
      const std::streamoff size = in.tellg();
      KDSEG_CHECK(in && size >= 0, path, ": cannot read the image data in ", image.iname);
      compressed.resize(static_cast<size_t>(size));
      in.seekg(0);
      in.read(reinterpret_cast<char*>(compressed.data()), size);
      KDSEG_CHECK(in || size == 0, path, ": cannot read the image data in ", image.iname);
    }
    // Header and voxels inflate into one buffer; the voxels are a view at their offset.
    at::Tensor whole = torch::empty({static_cast<int64_t>(offset + bytes)}, torch::kByte);
    const std::string problem =
        gunzip_prefix(compressed.data(), compressed.size(), whole.data_ptr<uint8_t>(), offset + bytes);
    KDSEG_CHECK(problem.empty(), path, ": ", problem);
    at::Tensor voxels = whole.narrow(0, static_cast<int64_t>(offset), static_cast<int64_t>(bytes));
    // A view as a wider type needs an aligned offset; an odd vox_offset costs a copy.
    if (offset % 8 != 0) voxels = voxels.clone();
    return voxels.view(stored).view({nk, nj, ni});
  }
  at::Tensor raw = torch::empty({nk, nj, ni}, stored);
  znzFile file = znzopen(image.iname, "rb", 0);
  KDSEG_CHECK(!znz_isnull(file), path, ": cannot open the image data in ", image.iname);
  // znzseek returns 0 (fseek) or the new offset (gzseek) on success, -1 on failure.
  const bool positioned = znzseek(file, static_cast<long>(offset), SEEK_SET) >= 0;
  const size_t got = positioned ? znzread(raw.data_ptr(), 1, bytes, file) : 0;
  znzclose(file);
  KDSEG_CHECK(got == bytes, path, ": truncated file: ", got, " of ", bytes, " bytes of image data could be read");
  return raw;
}

}  // namespace

const char* nifti_type_name(NiftiType type) { return info(type).name; }

Geometry read_nifti_geometry(const std::string& path) {
  std::error_code ec;
  KDSEG_CHECK(std::filesystem::is_regular_file(path, ec), path, ": no such file");
  nifti_set_debug_level(0);
  NiftiPtr image(nifti_image_read(path.c_str(), /*read_data=*/0));
  KDSEG_CHECK(image != nullptr, path, ": unreadable NIfTI file (niftilib could not read its header)");
  Geometry g;
  g.shape = {image->nx, image->ny, image->nz};
  g.affine = affine_of(*image);
  if (const TypeInfo* type = type_by_code(image->datatype)) g.datatype = type->type;
  g.scaled = image->scl_slope != 0.0f && std::isfinite(image->scl_slope) &&
             (image->scl_slope != 1.0f || image->scl_inter != 0.0f);
  const int dims = image->dim[0];
  if (dims < 3 || dims > 7) {
    g.not_a_volume = std::to_string(dims) + "-dimensional image; expected a 3D volume";
  } else {
    for (int d = 4; d <= dims; ++d) {
      if (image->dim[d] != 1) {
        g.not_a_volume = std::to_string(dims) + "D volume (" + std::to_string(image->dim[1]) + "x" +
                         std::to_string(image->dim[2]) + "x" + std::to_string(image->dim[3]) + "x" +
                         std::to_string(image->dim[4]) + "); expected a 3D volume";
        break;
      }
    }
  }
  return g;
}

Volume read_nifti(const std::string& path, bool require_finite, VoxelType voxel_type) {
  std::error_code ec;
  KDSEG_CHECK(std::filesystem::is_regular_file(path, ec), path, ": no such file");
  nifti_set_debug_level(0);
  // The header through niftilib; the data read here, because niftilib silently replaces
  // non-finite values with 0 and pads short reads, which would hide NaN and truncation.
  NiftiPtr image(nifti_image_read(path.c_str(), /*read_data=*/0));
  KDSEG_CHECK(image != nullptr, path, ": unreadable NIfTI file (niftilib could not read its header)");
  const int dims = image->dim[0];
  KDSEG_CHECK(dims >= 3 && dims <= 7, path, ": ", dims, "-dimensional image; expected a 3D volume");
  for (int d = 4; d <= dims; ++d) {
    KDSEG_CHECK(image->dim[d] == 1, path, ": 4D volume (", image->dim[1], "x", image->dim[2], "x", image->dim[3], "x",
                image->dim[4], "); expected a 3D volume");
  }
  const TypeInfo* type = type_by_code(image->datatype);
  KDSEG_CHECK(type != nullptr, path, ": unsupported NIfTI datatype ", nifti_datatype_string(image->datatype),
              " (use uint8, int8, int16, uint16, int32, float32 or float64)");
  // The file stores i fastest: as a C-order array that is [K,J,I].
  at::Tensor raw = read_voxel_data(*image, path);
  if (image->nbyper > 1 && image->byteorder != nifti_short_order()) {
    nifti_swap_Nbytes(static_cast<size_t>(raw.numel()), image->nbyper, raw.data_ptr());
  }
  if (image->datatype == DT_UINT16) raw = raw.to(torch::kInt).bitwise_and_(0xFFFF);  // read as int16 bits
  at::Tensor voxels = raw.permute({2, 1, 0});
  const bool scaled = image->scl_slope != 0.0f && std::isfinite(image->scl_slope) &&
                      (image->scl_slope != 1.0f || image->scl_inter != 0.0f);
  if (voxel_type == VoxelType::kFloat32 || scaled) {
    raw = raw.to(torch::kFloat);
    voxels = raw.permute({2, 1, 0});
    if (scaled) raw.mul_(image->scl_slope).add_(image->scl_inter);
    if (voxel_type == VoxelType::kFloat32) voxels = voxels.contiguous();
  }
  if (require_finite && voxels.is_floating_point()) {
    const int64_t bad = raw.isfinite().logical_not().sum().item<int64_t>();
    KDSEG_CHECK(bad == 0, path, ": ", bad, " voxels are NaN or Inf");
  }
  Volume volume;
  volume.voxels = voxels;
  volume.affine = affine_of(*image);
  volume.path = path;
  volume.datatype = type->type;
  return volume;
}

void write_nifti(const std::string& path, const at::Tensor& voxels, const Affine& affine, NiftiType datatype,
                 double slope, double inter) {
  KDSEG_CHECK(voxels.dim() == 3, path, ": write_nifti needs [I,J,K] voxels, got ", voxels.sizes());
  const TypeInfo* type = &info(datatype);
  KDSEG_CHECK(slope != 0.0, path, ": scl_slope must not be 0");
  const int dims[8] = {
      3, static_cast<int>(voxels.size(0)), static_cast<int>(voxels.size(1)), static_cast<int>(voxels.size(2)), 1, 1, 1,
      1};
  NiftiPtr image(nifti_make_new_nim(dims, type->code, /*data_fill=*/1));
  KDSEG_CHECK(image != nullptr, path, ": niftilib could not create an image");
  // Stored values: (value - inter) / slope, rounded for integer types, as [K,J,I] C-order.
  at::Tensor stored = voxels.to(torch::kDouble).sub(inter).div(slope).permute({2, 1, 0}).contiguous();
  if (type->code != DT_FLOAT32 && type->code != DT_FLOAT64) {
    // Integer types saturate instead of wrapping around.
    const auto range = integer_range(type->code);
    stored = stored.round().clamp(range.first, range.second);
  }
  const int64_t n = stored.numel();
  const double* in = stored.data_ptr<double>();
  switch (type->code) {
    case DT_UINT8:
      for (int64_t v = 0; v < n; ++v) static_cast<uint8_t*>(image->data)[v] = static_cast<uint8_t>(in[v]);
      break;
    case DT_INT8:
      for (int64_t v = 0; v < n; ++v) static_cast<int8_t*>(image->data)[v] = static_cast<int8_t>(in[v]);
      break;
    case DT_INT16:
      for (int64_t v = 0; v < n; ++v) static_cast<int16_t*>(image->data)[v] = static_cast<int16_t>(in[v]);
      break;
    case DT_UINT16:
      for (int64_t v = 0; v < n; ++v) static_cast<uint16_t*>(image->data)[v] = static_cast<uint16_t>(in[v]);
      break;
    case DT_INT32:
      for (int64_t v = 0; v < n; ++v) static_cast<int32_t*>(image->data)[v] = static_cast<int32_t>(in[v]);
      break;
    case DT_FLOAT32:
      for (int64_t v = 0; v < n; ++v) static_cast<float*>(image->data)[v] = static_cast<float>(in[v]);
      break;
    default: std::memcpy(image->data, in, static_cast<size_t>(n) * sizeof(double)); break;
  }
  set_geometry(*image, affine, slope, inter);

  AtomicFile file(path);
  KDSEG_CHECK(nifti_set_filenames(image.get(), file.temp_path().c_str(), /*check=*/0, /*set_byte_order=*/1) == 0, path,
              ": niftilib refused the file name (use .nii or .nii.gz)");
  nifti_image_write(image.get());
  std::error_code ec;
  KDSEG_CHECK(std::filesystem::exists(file.temp_path(), ec), path, ": niftilib could not write the file");
  // niftilib reports a failed write (a full disk) only on stderr: the file is checked instead.
  const int64_t expected =
      static_cast<int64_t>(image->iname_offset) + static_cast<int64_t>(image->nvox) * image->nbyper;
  const std::string problem = written_nifti_problem(file.temp_path(), expected);
  if (!problem.empty()) {
    const std::string cause = likely_write_failure(file.temp_path());
    throw_write_failure(path, "the NIfTI file", cause.empty() ? problem : cause + ": " + problem);
  }
  file.commit();
}

Volume to_canonical(const Volume& volume) {
  const auto sizes = volume.voxels.sizes();
  const Reorientation r = canonical_reorientation(volume.affine, {sizes[0], sizes[1], sizes[2]});
  Volume out = volume;
  out.affine = r.affine;
  out.voxels = to_canonical_voxels(volume.voxels, r);
  return out;
}

void check_same_grid(const Volume& volume, const Volume& image) {
  const auto name = [](const Volume& v) { return std::filesystem::path(v.path).filename().string(); };
  const auto dims = [](const at::Tensor& t) {
    std::string s;
    for (int64_t d = 0; d < t.dim(); ++d) s += (d ? "x" : "") + std::to_string(t.size(d));
    return s;
  };
  KDSEG_CHECK(volume.voxels.sizes() == image.voxels.sizes(), name(volume), ": shape ", dims(volume.voxels),
              " differs from ", name(image), " ", dims(image.voxels));
  for (size_t i = 0; i < 16; ++i) {
    const double a = image.affine[i], b = volume.affine[i];
    KDSEG_CHECK(std::abs(a - b) <= 1e-3 * std::max({1.0, std::abs(a), std::abs(b)}), name(volume),
                ": affine differs from ", name(image), " (element ", i / 4, ",", i % 4, ": ", b, " vs ", a, ")");
  }
}

// --- NiftiPlaneWriter -------------------------------------------------------------------------------

struct NiftiPlaneWriter::State {
  std::string path;
  std::unique_ptr<AtomicFile> file;
  std::FILE* out = nullptr;
  const TypeInfo* type = nullptr;
  std::array<int64_t, 3> shape{};
  int64_t planes = 0;
  bool gz = false;
  int threads = 1;
  std::vector<at::Tensor> pending;  // planes in the file's type and order, [J,I]

  ~State() {
    if (out != nullptr) std::fclose(out);  // before `file`, which then removes the temporary
  }

  void put(const void* data, size_t bytes) {
    if (bytes > 0 && std::fwrite(data, 1, bytes, out) != bytes) fail("a write failed");
  }
  [[noreturn]] void fail(const std::string& what) {
    const std::string cause = likely_write_failure(file->temp_path());
    throw_write_failure(path, "the NIfTI file", cause.empty() ? what : cause + ": " + what);
  }
  // Compresses the pending planes (one gzip member each, on every thread) and writes them in order.
  void flush() {
    std::vector<std::vector<uint8_t>> members(pending.size());
    if (gz) {
      parallel_for(static_cast<int64_t>(pending.size()), threads, [&](int64_t i) {
        const at::Tensor& p = pending[static_cast<size_t>(i)];
        members[static_cast<size_t>(i)] = gzip_member(p.data_ptr(), static_cast<size_t>(p.nbytes()), kLevel);
      });
      for (const auto& m : members) put(m.data(), m.size());
    } else {
      for (const auto& p : pending) put(p.data_ptr(), static_cast<size_t>(p.nbytes()));
    }
    pending.clear();
  }
  static constexpr int kLevel = 6;  // zlib's default, which niftilib and nibabel write
};

NiftiPlaneWriter::NiftiPlaneWriter(const std::string& path, const std::array<int64_t, 3>& shape, const Affine& affine,
                                   NiftiType datatype, int threads)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.path = path;
  s.shape = shape;
  s.threads = std::max(1, threads);
  s.type = &info(datatype);
  const bool gz = path.size() > 7 && path.compare(path.size() - 7, 7, ".nii.gz") == 0;
  KDSEG_CHECK(gz || (path.size() > 4 && path.compare(path.size() - 4, 4, ".nii") == 0), path,
              ": a NIfTI file name ends in .nii or .nii.gz");
  s.gz = gz;
  const int dims[8] = {3, static_cast<int>(shape[0]), static_cast<int>(shape[1]), static_cast<int>(shape[2]), 1, 1, 1,
                       1};
  NiftiPtr image(nifti_make_new_nim(dims, s.type->code, /*data_fill=*/0));
  KDSEG_CHECK(image != nullptr, path, ": niftilib could not create an image");
  set_geometry(*image, affine, 1.0, 0.0);
  image->nifti_type = NIFTI_FTYPE_NIFTI1_1;
  image->iname_offset = 352;
  nifti_1_header header = nifti_convert_nim2nhdr(image.get());
  std::memcpy(header.magic, "n+1\0", 4);
  header.vox_offset = 352;
  uint8_t bytes[352] = {0};  // the header and an empty extension flag
  std::memcpy(bytes, &header, sizeof header);
  s.file = std::make_unique<AtomicFile>(path);
  s.out = std::fopen(s.file->temp_path().c_str(), "wb");
  KDSEG_CHECK(s.out != nullptr, s.file->temp_path(), ": cannot create: ", std::strerror(errno));
  if (gz) {
    const std::vector<uint8_t> member = gzip_member(bytes, sizeof bytes, State::kLevel);
    s.put(member.data(), member.size());
  } else {
    s.put(bytes, sizeof bytes);
  }
}

NiftiPlaneWriter::~NiftiPlaneWriter() = default;

void NiftiPlaneWriter::write(const at::Tensor& plane) {
  State& s = *state_;
  KDSEG_CHECK(s.out != nullptr, s.path, ": written after close()");
  KDSEG_CHECK(plane.dim() == 2 && plane.size(0) == s.shape[0] && plane.size(1) == s.shape[1], s.path, ": plane ",
              s.planes, " has shape ", plane.sizes(), ", not [", s.shape[0], ",", s.shape[1], "]");
  KDSEG_CHECK(s.planes < s.shape[2], s.path, ": more than ", s.shape[2], " planes");
  at::Tensor values = plane.t();  // the file stores i fastest: [J,I]
  const int code = s.type->code;
  if (code != DT_FLOAT32 && code != DT_FLOAT64) {
    if (values.is_floating_point()) {
      const auto range = integer_range(code);
      values = values.to(torch::kDouble).round().clamp(range.first, range.second);
    }
  }
  if (code == DT_UINT16) {  // no uint16 tensors: the low bytes of int32
    const at::Tensor wide = values.to(torch::kInt).contiguous();
    at::Tensor narrow = torch::empty(wide.sizes(), torch::kShort);
    const int32_t* in = wide.data_ptr<int32_t>();
    auto* out = reinterpret_cast<uint16_t*>(narrow.data_ptr<int16_t>());
    for (int64_t v = 0; v < wide.numel(); ++v) out[v] = static_cast<uint16_t>(in[v]);
    values = narrow;
  } else {
    values = values.to(code == DT_UINT8 ? torch::kByte : s.type->read_as).contiguous();
  }
  s.pending.push_back(values);
  ++s.planes;
  if (static_cast<int>(s.pending.size()) >= 2 * s.threads) s.flush();
}

void NiftiPlaneWriter::close() {
  State& s = *state_;
  KDSEG_CHECK(s.planes == s.shape[2], s.path, ": closed after ", s.planes, " of ", s.shape[2], " planes");
  s.flush();
  const bool flushed = std::fflush(s.out) == 0 && ::fsync(fileno(s.out)) == 0;
  const bool closed = std::fclose(s.out) == 0;
  s.out = nullptr;
  if (!flushed || !closed) s.fail("writing its last bytes failed");
  s.file->commit();
}

}  // namespace kdseg::data
