// Filesystem helpers: whole-file reads, atomic writes (temp file, fsync, rename, fsync dir), and the
// checksums the file formats use.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace dsforge {

std::string read_file(const std::string& path);  // throws IoError naming the path
// Writes `data` to `path` so that a crash leaves either the old file or the new one, never a mix.
void write_file_atomic(const std::string& path, std::string_view data);
bool file_exists(const std::string& path);
// Makes a rename or file creation inside `path` durable.
void fsync_dir(const std::string& path);
void make_dirs(const std::string& path);
void remove_all(const std::string& path);
std::string path_join(const std::string& a, const std::string& b);

// CRC-32C (Castagnoli), as used by TFRecord framing and our checksums. crc32c("123456789") = 0xE3069283.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
// 64-bit FNV-1a, for config hashes; hex string form.
uint64_t fnv1a64(std::string_view s);
std::string hex64(uint64_t v);

}  // namespace dsforge
