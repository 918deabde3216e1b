#include "dsforge/embed/vectors.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace dsforge::embed {

int64_t WordVectors::find(const std::string& w) const {
  if (sorted_.size() != words.size()) {
    sorted_.clear();
    sorted_.reserve(words.size());
    for (size_t i = 0; i < words.size(); ++i) sorted_.emplace_back(words[i], static_cast<int64_t>(i));
    std::stable_sort(sorted_.begin(), sorted_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  }
  auto it = std::lower_bound(sorted_.begin(), sorted_.end(), w, [](const auto& a, const std::string& k) { return a.first < k; });
  return it != sorted_.end() && it->first == w ? it->second : -1;
}

namespace {

// A file written next to its destination and renamed over it once complete and synced.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp") {
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (!f_) throw IoError(fmt(tmp_, ": cannot create (", std::strerror(errno), ")"));
    std::setvbuf(f_, nullptr, _IOFBF, 1 << 20);
  }
  ~AtomicFile() {
    if (f_) {
      std::fclose(f_);
      std::remove(tmp_.c_str());
    }
  }
  std::FILE* get() { return f_; }
  void commit() {
    if (std::fflush(f_) != 0 || ::fsync(fileno(f_)) != 0 || std::fclose(f_) != 0) {
      f_ = nullptr;
      throw IoError(fmt(path_, ": write failed (disk full?)"));
    }
    f_ = nullptr;
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) throw IoError(fmt(path_, ": cannot rename into place"));
    const auto slash = path_.rfind('/');
    fsync_dir(slash == std::string::npos ? "." : path_.substr(0, slash));
  }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
};

void check_words(const WordVectors& v) {
  if (v.data.size() != v.size() * static_cast<size_t>(v.dim)) throw Error("word vectors: data size does not match words x dim");
  for (const auto& w : v.words)
    if (w.empty() || w.find_first_of(" \t\n\r") != std::string::npos)
      throw DataError(fmt("word vectors: word '", w, "' is empty or contains whitespace; the word2vec formats cannot hold it"));
}

[[noreturn]] void bad(const std::string& path, int64_t line, const std::string& what) {
  throw DataError(fmt(path, ":", line, ": ", what));
}

}  // namespace

void save_word2vec_text(const std::string& path, const WordVectors& v) {
  check_words(v);
  AtomicFile f(path);
  std::fprintf(f.get(), "%zu %d\n", v.size(), v.dim);
  for (size_t i = 0; i < v.size(); ++i) {
    std::fputs(v.words[i].c_str(), f.get());
    const float* r = v.row(i);
    for (int k = 0; k < v.dim; ++k) std::fprintf(f.get(), " %.9g", static_cast<double>(r[k]));  // exact float round trip
    std::fputc('\n', f.get());
  }
  f.commit();
}

void save_word2vec_binary(const std::string& path, const WordVectors& v) {
  check_words(v);
  AtomicFile f(path);
  std::fprintf(f.get(), "%zu %d\n", v.size(), v.dim);
  for (size_t i = 0; i < v.size(); ++i) {
    std::fputs(v.words[i].c_str(), f.get());
    std::fputc(' ', f.get());
    std::fwrite(v.row(i), sizeof(float), static_cast<size_t>(v.dim), f.get());  // little-endian float32
    std::fputc('\n', f.get());
  }
  f.commit();
}

void save_safetensors_vectors(const std::string& dir, const WordVectors& v, const std::string& method) {
  check_words(v);
  const uint64_t nbytes = v.data.size() * sizeof(float);
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "dsforge-word-vectors"},
                            {"method", method},
                            {"vocab", "vocab.txt"},
                            {"dsforge.crc32c", std::to_string(crc32c(v.data.data(), nbytes))}};
  header["embeddings"] = {{"dtype", "F32"}, {"shape", {v.size(), v.dim}}, {"data_offsets", {0, nbytes}}};
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');
  {
    AtomicFile f(path_join(dir, "embeddings.safetensors"));
    const uint64_t hlen = h.size();
    std::fwrite(&hlen, 8, 1, f.get());
    std::fwrite(h.data(), 1, h.size(), f.get());
    std::fwrite(v.data.data(), 1, nbytes, f.get());
    f.commit();
  }
  AtomicFile f(path_join(dir, "vocab.txt"));
  for (size_t i = 0; i < v.size(); ++i)
    std::fprintf(f.get(), "%s\t%lld\n", v.words[i].c_str(), static_cast<long long>(v.counts.empty() ? 0 : v.counts[i]));
  f.commit();
}

namespace {

WordVectors load_safetensors_vectors(const std::string& path) {
  const std::string bytes = read_file(path);
  uint64_t hlen = 0;
  if (bytes.size() >= 8) std::memcpy(&hlen, bytes.data(), 8);
  if (bytes.size() < 8 || hlen > bytes.size() - 8) throw DataError(fmt(path, ": truncated or not a safetensors file"));
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(bytes.substr(8, hlen));
  } catch (const std::exception& e) {
    throw DataError(fmt(path, ": bad safetensors header (", e.what(), ")"));
  }
  if (!h.contains("embeddings") || h["embeddings"].value("dtype", "") != "F32" || h["embeddings"]["shape"].size() != 2)
    throw DataError(fmt(path, ": expected an F32 tensor 'embeddings' of shape (V, D)"));
  WordVectors v;
  const auto V = h["embeddings"]["shape"][0].get<uint64_t>();
  v.dim = h["embeddings"]["shape"][1].get<int>();
  const auto off = h["embeddings"]["data_offsets"];
  const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
  if (e - b != V * static_cast<uint64_t>(v.dim) * 4 || 8 + hlen + e > bytes.size())
    throw DataError(fmt(path, ": tensor 'embeddings' does not fit the file (truncated?)"));
  v.data.resize(V * static_cast<uint64_t>(v.dim));
  std::memcpy(v.data.data(), bytes.data() + 8 + hlen + b, e - b);
  const auto slash = path.rfind('/');
  const std::string vocab = path_join(slash == std::string::npos ? "." : path.substr(0, slash), "vocab.txt");
  if (!file_exists(vocab)) throw DataError(fmt(path, ": no vocab.txt beside it (one word per row)"));
  const std::string text = read_file(vocab);
  size_t pos = 0;
  int64_t line = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string l = text.substr(pos, end - pos);
    ++line;
    const auto tab = l.find('\t');
    v.words.push_back(l.substr(0, tab));
    v.counts.push_back(tab == std::string::npos ? 0 : std::atoll(l.c_str() + tab + 1));
    pos = end + 1;
  }
  if (v.words.size() != V) throw DataError(fmt(vocab, ": ", v.words.size(), " words but ", path, " has ", V, " rows"));
  return v;
}

}  // namespace

WordVectors load_vectors(const std::string& path) {
  if (!file_exists(path)) throw DataError(fmt(path, ": no such file"));
  if (path.size() > 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0) return load_safetensors_vectors(path);
  const std::string bytes = read_file(path);
  size_t nl = bytes.find('\n');
  const std::string head = bytes.substr(0, nl == std::string::npos ? std::min<size_t>(bytes.size(), 80) : std::min<size_t>(nl, 80));
  long long V = -1, D = -1;
  char extra = 0;
  if (nl == std::string::npos || std::sscanf(head.c_str(), "%lld %lld %c", &V, &D, &extra) != 2 || V < 0 || D < 1)
    bad(path, 1, fmt("expected a word2vec header 'VOCAB_SIZE DIM', got '", head, "'"));
  WordVectors v;
  v.dim = static_cast<int>(D);
  v.words.reserve(static_cast<size_t>(V));
  v.data.reserve(static_cast<size_t>(V * D));
  size_t pos = nl + 1;
  // Binary when the first row does not read as a word followed by DIM numbers on one line.
  bool binary = false;
  {
    const size_t end = bytes.find('\n', pos);
    const std::string first = bytes.substr(pos, (end == std::string::npos ? bytes.size() : end) - pos);
    int numbers = 0;
    const char* p = first.c_str();
    const char* sp = std::strchr(p, ' ');
    if (sp) {
      p = sp;
      char* q = nullptr;
      for (;;) {
        const float x = std::strtof(p, &q);
        (void)x;
        if (q == p) break;
        ++numbers;
        p = q;
      }
      while (*p == ' ' || *p == '\r' || *p == '\t') ++p;
    }
    binary = V > 0 && (numbers != D || *p != '\0');
  }
  for (long long r = 0; r < V; ++r) {
    const int64_t line = r + 2;
    if (binary) {
      while (pos < bytes.size() && bytes[pos] == '\n') ++pos;
      const size_t sp = bytes.find(' ', pos);
      if (sp == std::string::npos || sp - pos > 10000) bad(path, line, fmt("row ", r + 1, ": expected 'word ' then ", D, " float32 values"));
      v.words.push_back(bytes.substr(pos, sp - pos));
      pos = sp + 1;
      if (bytes.size() - pos < static_cast<size_t>(D) * 4)
        bad(path, line, fmt("row ", r + 1, " of ", V, ": file ends inside the vector (truncated binary file)"));
      const size_t at = v.data.size();
      v.data.resize(at + static_cast<size_t>(D));
      std::memcpy(v.data.data() + at, bytes.data() + pos, static_cast<size_t>(D) * 4);
      pos += static_cast<size_t>(D) * 4;
    } else {
      if (pos >= bytes.size()) bad(path, line, fmt("file ends after ", r, " of ", V, " rows"));
      size_t end = bytes.find('\n', pos);
      if (end == std::string::npos) end = bytes.size();
      std::string l = bytes.substr(pos, end - pos);
      pos = end + 1;
      if (!l.empty() && l.back() == '\r') l.pop_back();
      const size_t sp = l.find(' ');
      if (sp == std::string::npos || sp == 0) bad(path, line, fmt("expected 'word v1 ... v", D, "', got '", l.substr(0, 60), "'"));
      v.words.push_back(l.substr(0, sp));
      const char* p = l.c_str() + sp;
      for (long long k = 0; k < D; ++k) {
        char* q = nullptr;
        const float x = std::strtof(p, &q);
        if (q == p) bad(path, line, fmt("expected ", D, " numbers after '", v.words.back(), "', got ", k));
        v.data.push_back(x);
        p = q;
      }
      while (*p == ' ' || *p == '\t') ++p;
      if (*p != '\0') bad(path, line, fmt("more than ", D, " numbers after '", v.words.back(), "'"));
    }
  }
  return v;
}

std::vector<float> unit_rows(const WordVectors& v) {
  std::vector<float> u(v.data);
  const size_t D = static_cast<size_t>(v.dim);
  for (size_t i = 0; i < v.size(); ++i) {
    double n = 0;
    for (size_t k = 0; k < D; ++k) n += static_cast<double>(u[i * D + k]) * u[i * D + k];
    if (n > 0) {
      const auto s = static_cast<float>(1.0 / std::sqrt(n));
      for (size_t k = 0; k < D; ++k) u[i * D + k] *= s;
    }
  }
  return u;
}

std::vector<std::pair<std::string, float>> nearest(const WordVectors& v, int64_t query, int k) {
  const std::vector<float> u = unit_rows(v);
  const size_t D = static_cast<size_t>(v.dim);
  std::vector<std::pair<float, size_t>> sims;
  sims.reserve(v.size());
  const float* q = u.data() + static_cast<size_t>(query) * D;
  for (size_t i = 0; i < v.size(); ++i) {
    if (static_cast<int64_t>(i) == query) continue;
    float s = 0;
    for (size_t d = 0; d < D; ++d) s += q[d] * u[i * D + d];
    sims.emplace_back(s, i);
  }
  const size_t top = std::min(sims.size(), static_cast<size_t>(std::max(k, 0)));
  std::partial_sort(sims.begin(), sims.begin() + static_cast<long>(top), sims.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  std::vector<std::pair<std::string, float>> out;
  for (size_t i = 0; i < top; ++i) out.emplace_back(v.words[sims[i].second], sims[i].first);
  return out;
}

}  // namespace dsforge::embed
