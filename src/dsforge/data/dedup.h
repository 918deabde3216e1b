// Near-duplicate detection with MinHash signatures and LSH banding (Broder 1997; Leskovec et al.,
// Mining of Massive Datasets ch. 3).
//
// A document's shingles (character or word n-grams) are hashed to 64 bits; num_perm multiply-shift
// hash functions h_i(x) = ((a_i x + b_i) mod 2^64) >> 32 give the signature (the minimum of each over the shingles),
// whose agreement rate estimates Jaccard similarity. Signatures are cut into `bands` of
// num_perm/bands rows; documents sharing a band are candidates, kept as duplicates when their
// estimated Jaccard similarity reaches `threshold`. Deterministic for a seed.
//
//   NearDedup d({.shingle = "char", .n = 5, .num_perm = 128, .bands = 16, .threshold = 0.8, .seed = 1});
//   if (!d.insert(doc)) { /* near-duplicate of an earlier document */ }
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dsforge::data {

struct NearDedupOptions {
  std::string shingle = "char";  // "char" or "word" n-grams
  int64_t n = 5;
  int64_t num_perm = 128;
  int64_t bands = 16;            // must divide num_perm
  double threshold = 0.8;        // estimated Jaccard similarity to call a duplicate
  uint64_t seed = 1;
};

std::vector<uint64_t> shingle_hashes(std::string_view doc, const std::string& kind, int64_t n);
double jaccard(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b);  // of two hash sets

class NearDedup {
 public:
  explicit NearDedup(const NearDedupOptions& opts);
  std::vector<uint32_t> signature(std::string_view doc) const;
  static double estimate(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b);
  // Returns true when `doc` is new (and remembers it), false when it is a near-duplicate of a
  // remembered document. Memory: num_perm * 4 bytes per kept document plus the band tables.
  bool insert(std::string_view doc);
  // Whether `doc` is a near-duplicate of a remembered document; remembers nothing.
  bool contains(std::string_view doc) const;
  // Remembers `doc` whether or not it is near a remembered one (held-out sets: every document counts).
  void add(std::string_view doc);
  int64_t kept() const { return static_cast<int64_t>(signatures_.size()); }

 private:
  std::vector<uint64_t> band_hashes(const std::vector<uint32_t>& sig) const;
  bool near_any(const std::vector<uint32_t>& sig, const std::vector<uint64_t>& bands) const;
  void remember(std::vector<uint32_t> sig, const std::vector<uint64_t>& bands);

  NearDedupOptions opts_;
  std::vector<uint64_t> a_, b_;
  std::vector<std::vector<uint32_t>> signatures_;
  std::vector<std::unordered_multimap<uint64_t, uint32_t>> buckets_;  // per band: band hash -> document
};

}  // namespace dsforge::data
