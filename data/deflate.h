// Whole-buffer DEFLATE through libdeflate: the chunks of HDF5's shuffle + deflate filter pipeline,
// made and read outside HDF5 (so that `prepare` compresses slices on every thread and writes them
// with H5Dwrite_chunk), and whole .gz files inflated in one call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kdseg::data {

// `bytes` of elements of `element_size` bytes as HDF5's filters store them: byte-shuffled (for
// elements wider than a byte) then deflated into a zlib stream at `level` (1-12); level 0 applies
// neither filter and returns the bytes as they are. Deterministic: equal input, equal output.
std::vector<uint8_t> encode_chunk(const void* data, size_t bytes, size_t element_size, int level);

// `bytes` as one gzip member at `level` (1-12). Members written one after another are one gzip
// file (RFC 1952), which lets a file be compressed in pieces on several threads.
std::vector<uint8_t> gzip_member(const void* data, size_t bytes, int level);

// Inflates a whole gzip file held in memory (one or more members) into exactly `out_bytes`.
// Returns false when the data are damaged, cut short or inflate to another size (the fast path:
// gunzip_prefix below then says why, or reads the file's legitimate other shapes).
bool gunzip_exact(const uint8_t* in, size_t in_bytes, uint8_t* out, size_t out_bytes);

// The first `out_bytes` of a whole .gz file held in memory, into `out`; "" on success, else what
// is wrong, worded to follow the file's name in a message. Every member is inflated to its end
// and checked against its CRC-32 and length, also past `out_bytes`: a damaged member is an error
// even where its first bytes are all that is needed (zlib's stream reader, which niftilib uses,
// stops there and never sees the check). Accepted as niftilib and gzip(1) accept them: data that
// inflate to more than `out_bytes` (bytes after a NIfTI's voxels), zeros after the last member
// (block padding), and a file without gzip's magic bytes, taken as it is (zlib reads such files
// transparently). Errors: damaged data, a CRC-32 or length mismatch, data cut short ("truncated
// file"), fewer than `out_bytes` bytes, other bytes after the last member.
std::string gunzip_prefix(const uint8_t* in, size_t in_bytes, uint8_t* out, size_t out_bytes);

}  // namespace kdseg::data
