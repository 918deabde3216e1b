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

// A large file written in pieces with the same guarantee: bytes go to a temporary file beside `path`,
// commit() makes them durable and renames; a writer destroyed without commit() removes its temporary.
//
//   AtomicFileWriter out("model.gguf");
//   out.write(header); out.write(tensor_bytes); out.commit();
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  void write(const void* data, size_t n);
  void write(std::string_view data) { write(data.data(), data.size()); }
  uint64_t size() const { return written_; }
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
};
// Makes a rename or file creation inside `path` durable.
void fsync_dir(const std::string& path);
void make_dirs(const std::string& path);
void remove_all(const std::string& path);
// Moves a finished staging folder `stage` to `dir` so that the whole folder appears at once: `dir`
// must be absent or empty; the rename is made durable. IoError naming `dir` and `what` otherwise.
void publish_dir(const std::string& stage, const std::string& dir, const std::string& what);
// Replaces the folder `dir` by the finished staging folder `stage` in one step where the file system
// allows (readers see the old folder or the new one); `stage` is gone afterwards.
void replace_dir(const std::string& stage, const std::string& dir, const std::string& what);
std::string path_join(const std::string& a, const std::string& b);

// CRC-32C (Castagnoli), as used by TFRecord framing and our checksums. crc32c("123456789") = 0xE3069283.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
// 64-bit FNV-1a, for config hashes; hex string form.
uint64_t fnv1a64(std::string_view s);
std::string hex64(uint64_t v);

}  // namespace dsforge
