#include "dsforge/core/io.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "dsforge/core/error.h"

namespace dsforge {
namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt(path, ": cannot open for reading (", std::strerror(errno), ")"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {
void fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}
}  // namespace

void fsync_dir(const std::string& path) { fsync_path(path, O_RDONLY | O_DIRECTORY); }

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  fs::path target(path_);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  tmp_ = path_ + ".tmp." + std::to_string(::getpid());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd_ < 0) throw IoError(fmt(tmp_, ": cannot create (", std::strerror(errno), ")"));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFileWriter::write(const void* data, size_t n) {
  if (fd_ < 0) throw IoError(fmt(path_, ": write after commit"));
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw IoError(fmt(tmp_, ": write failed (", std::strerror(errno), ")"));
    }
    p += w;
    n -= static_cast<size_t>(w);
    written_ += static_cast<uint64_t>(w);
  }
}

void AtomicFileWriter::commit() {
  const int fd = fd_;
  fd_ = -1;
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw IoError(fmt(tmp_, ": fsync/close failed (", std::strerror(err), ")"));
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw IoError(fmt(path_, ": rename from temporary file failed (", std::strerror(err), ")"));
  }
  fs::path target(path_);
  fsync_path(target.has_parent_path() ? target.parent_path().string() : ".", O_RDONLY | O_DIRECTORY);
}

void write_file_atomic(const std::string& path, std::string_view data) {
  AtomicFileWriter out(path);
  out.write(data);
  out.commit();
}

bool file_exists(const std::string& path) { return fs::exists(path); }

void make_dirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) throw IoError(fmt(path, ": cannot create directory (", ec.message(), ")"));
}

void remove_all(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

void publish_dir(const std::string& stage, const std::string& dir, const std::string& what) {
  std::error_code ec;
  if (fs::exists(dir)) fs::remove(dir, ec);  // empty (callers refuse a folder with contents)
  if (!ec) fs::rename(stage, dir, ec);
  if (ec) throw IoError(dir + ": cannot move the " + what + " into place (" + ec.message() + ")");
  const fs::path parent = fs::path(dir).parent_path();
  fsync_dir(parent.empty() ? "." : parent.string());
}

void replace_dir(const std::string& stage, const std::string& dir, const std::string& what) {
  if (!fs::exists(dir) || fs::is_empty(dir)) return publish_dir(stage, dir, what);
  // Linux swaps the two names in one step (renameat2 RENAME_EXCHANGE); a file system that cannot
  // falls back to remove-then-rename, with a moment where `dir` is absent.
  if (::renameat2(AT_FDCWD, stage.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    const fs::path parent = fs::path(dir).parent_path();
    fsync_dir(parent.empty() ? "." : parent.string());
    remove_all(stage);  // the previous contents
    return;
  }
  remove_all(dir);
  publish_dir(stage, dir, what);
}

std::string path_join(const std::string& a, const std::string& b) { return (fs::path(a) / b).string(); }

namespace {
std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc32c_table();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace dsforge
