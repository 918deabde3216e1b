// Token shards and the streaming loader.
//
// Shard file (little-endian), 32-byte header then the tokens:
//   char magic[8] = "DSFTOKS\0" | u32 version = 1 | u32 bytes_per_token (2 or 4) | u64 n_tokens | u64 n_docs
// Each document is followed by the end-of-text token. `manifest.json` beside the shards records
// the tokenizer hash, vocabulary size, end-of-text id and, per split ("train", "val", and "test"
// when the run has a test set), files, tokens and documents. Encoding text into shards lives in
// tokenizer/encode_corpus.h: this layer knows the format, not the tokenizer.
//
// The loader memory-maps a shard and cuts it into windows of `window` tokens that start every
// `stride` tokens; an epoch visits every window once in a seeded permutation. Its cursor (epoch,
// position) is all a checkpoint needs to resume the exact batch sequence.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace dsforge::data {

struct ShardHeader {
  uint32_t version = 1;
  uint32_t bytes_per_token = 2;
  uint64_t n_tokens = 0;
  uint64_t n_docs = 0;
};
constexpr size_t kShardHeaderBytes = 32;

void write_shard(const std::string& path, const std::vector<int32_t>& tokens, uint64_t n_docs, int64_t vocab_size);

// Streams tokens into a shard: a temporary file whose header is written last, then renamed.
class ShardWriter {
 public:
  ShardWriter(const std::string& path, int64_t vocab_size);
  void append(const std::vector<int32_t>& tokens);
  void finish(uint64_t n_docs);
  uint64_t tokens() const { return n_; }

 private:
  std::string path_, tmp_;
  int64_t vocab_size_;
  uint32_t bytes_per_token_;
  std::ofstream out_;
  std::vector<char> buf_;
  uint64_t n_ = 0;
};

// A read-only, memory-mapped shard. Throws DataError on a wrong magic, version or size.
class TokenShard {
 public:
  explicit TokenShard(const std::string& path);
  ~TokenShard();
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const ShardHeader& header() const { return header_; }
  uint64_t size() const { return header_.n_tokens; }
  int64_t at(uint64_t i) const;
  // Copies tokens [start, start + n) into `dst` as int64.
  void copy(uint64_t start, uint64_t n, int64_t* dst) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  ShardHeader header_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* tokens_ = nullptr;
};

struct Manifest {
  std::string tokenizer_hash;
  int64_t vocab_size = 0;
  int64_t eot_id = 0;
  struct Split {
    std::vector<std::string> files;  // relative to the manifest's folder
    int64_t tokens = 0;
    int64_t documents = 0;
    int64_t augmented_documents = 0;  // of `documents`, how many are augmented copies (train only)
  };
  Split train, val;
  Split test;  // empty (no files) when the run has no test set; manifests before it have no entry
  bool has_test() const { return !test.files.empty(); }
};
// Throws DataError naming the file on a missing or malformed manifest.
Manifest read_manifest(const std::string& path);
// Atomic write; the "test" split is written only when it has files (older readers ignore it).
void write_manifest(const std::string& path, const Manifest& m);

struct LoaderCursor {
  int64_t epoch = 0;
  int64_t position = 0;  // windows already served in this epoch
};

class TokenLoader {
 public:
  // shuffle=false serves windows in file order (evaluation).
  TokenLoader(const std::string& shard_path, int64_t window, int64_t stride, uint64_t seed, bool shuffle = true);

  int64_t windows_per_epoch() const { return n_windows_; }
  // [batch, window] int64 tokens; advances the cursor (wrapping into the next epoch).
  at::Tensor next_batch(int64_t batch);
  // Rows [first, first + count) of the next `batch` windows; the cursor moves past all `batch`
  // (data parallelism: each rank reads its own disjoint rows of the same global batch).
  at::Tensor next_batch(int64_t batch, int64_t first, int64_t count);
  const LoaderCursor& cursor() const { return cursor_; }
  void set_cursor(const LoaderCursor& c);

 private:
  void shuffle_epoch();

  TokenShard shard_;
  int64_t window_, stride_, n_windows_;
  uint64_t seed_;
  bool shuffle_;
  LoaderCursor cursor_;
  std::vector<int64_t> order_;
};

}  // namespace dsforge::data
