#include "dsforge/data/dedup.h"

#include <algorithm>
#include <random>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace dsforge::data {
std::vector<uint64_t> shingle_hashes(std::string_view doc, const std::string& kind, int64_t n) {
  std::vector<uint64_t> out;
  if (kind == "word") {
    std::vector<std::string_view> words;
    size_t i = 0;
    while (i < doc.size()) {
      // Any ASCII whitespace separates words: documents keep their newlines and tabs.
      auto space = [&](size_t k) { return doc[k] == ' ' || doc[k] == '\n' || doc[k] == '\t' || doc[k] == '\r'; };
      while (i < doc.size() && space(i)) ++i;
      size_t j = i;
      while (j < doc.size() && !space(j)) ++j;
      if (j > i) words.push_back(doc.substr(i, j - i));
      i = j;
    }
    if (static_cast<int64_t>(words.size()) < n) {
      std::string all;
      for (auto w : words) all += std::string(w) + " ";
      if (!all.empty()) out.push_back(fnv1a64(all));
    } else {
      for (size_t k = 0; k + n <= words.size(); ++k) {
        std::string g;
        for (int64_t m = 0; m < n; ++m) g += std::string(words[k + m]) + " ";
        out.push_back(fnv1a64(g));
      }
    }
  } else {  // characters = code points
    std::vector<size_t> starts;
    for (size_t i = 0; i < doc.size(); ++i)
      if ((static_cast<unsigned char>(doc[i]) & 0xC0) != 0x80) starts.push_back(i);
    starts.push_back(doc.size());
    const int64_t chars = static_cast<int64_t>(starts.size()) - 1;
    if (chars < n) {
      if (!doc.empty()) out.push_back(fnv1a64(doc));
    } else {
      for (int64_t k = 0; k + n <= chars; ++k) out.push_back(fnv1a64(doc.substr(starts[k], starts[k + n] - starts[k])));
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

double jaccard(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b) {
  size_t i = 0, j = 0, inter = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i] == b[j]) ++inter, ++i, ++j;
    else if (a[i] < b[j]) ++i;
    else ++j;
  }
  const size_t uni = a.size() + b.size() - inter;
  return uni ? static_cast<double>(inter) / static_cast<double>(uni) : 1.0;
}

NearDedup::NearDedup(const NearDedupOptions& opts) : opts_(opts) {
  if (opts.shingle != "char" && opts.shingle != "word")
    throw ConfigError(fmt("near-dedup: shingle must be \"char\" or \"word\", got '", opts.shingle, "'"));
  if (opts.n < 1) throw ConfigError("near-dedup: shingle size must be >= 1");
  if (opts.num_perm < 1 || opts.bands < 1 || opts.num_perm % opts.bands != 0)
    throw ConfigError(fmt("near-dedup: bands (", opts.bands, ") must divide num_perm (", opts.num_perm, ")"));
  std::mt19937_64 rng(opts.seed);
  for (int64_t i = 0; i < opts.num_perm; ++i) {
    a_.push_back(rng() | 1);  // odd multipliers
    b_.push_back(rng());
  }
  buckets_.resize(static_cast<size_t>(opts.bands));
}

std::vector<uint32_t> NearDedup::signature(std::string_view doc) const {
  // Multiply-shift hashing (Dietzfelbinger et al. 1997): h_i(x) = (a_i x + b_i) mod 2^64, top 32 bits;
  // one multiply per permutation instead of a 128-bit reduction, and the loop vectorises.
  std::vector<uint32_t> sig(static_cast<size_t>(opts_.num_perm), UINT32_MAX);
  const uint64_t* a = a_.data();
  const uint64_t* b = b_.data();
  uint32_t* m = sig.data();
  const size_t np = sig.size();
  for (uint64_t x : shingle_hashes(doc, opts_.shingle, opts_.n))
    for (size_t i = 0; i < np; ++i) {
      const auto h = static_cast<uint32_t>((a[i] * x + b[i]) >> 32);
      m[i] = h < m[i] ? h : m[i];
    }
  return sig;
}

double NearDedup::estimate(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  size_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  return a.empty() ? 0.0 : static_cast<double>(same) / static_cast<double>(a.size());
}

std::vector<uint64_t> NearDedup::band_hashes(const std::vector<uint32_t>& sig) const {
  const int64_t rows = opts_.num_perm / opts_.bands;
  std::vector<uint64_t> band_hash(static_cast<size_t>(opts_.bands));
  for (int64_t b = 0; b < opts_.bands; ++b)
    band_hash[b] = fnv1a64(std::string_view(reinterpret_cast<const char*>(sig.data() + b * rows), rows * 4)) ^
                   static_cast<uint64_t>(b);
  return band_hash;
}

bool NearDedup::near_any(const std::vector<uint32_t>& sig, const std::vector<uint64_t>& bands) const {
  for (int64_t b = 0; b < opts_.bands; ++b) {
    auto range = buckets_[b].equal_range(bands[b]);
    for (auto it = range.first; it != range.second; ++it)
      if (estimate(sig, signatures_[it->second]) >= opts_.threshold) return true;
  }
  return false;
}

void NearDedup::remember(std::vector<uint32_t> sig, const std::vector<uint64_t>& bands) {
  const auto id = static_cast<uint32_t>(signatures_.size());
  signatures_.push_back(std::move(sig));
  for (int64_t b = 0; b < opts_.bands; ++b) buckets_[b].emplace(bands[b], id);
}

bool NearDedup::insert(std::string_view doc) {
  std::vector<uint32_t> sig = signature(doc);
  const std::vector<uint64_t> bands = band_hashes(sig);
  if (near_any(sig, bands)) return false;
  remember(std::move(sig), bands);
  return true;
}

bool NearDedup::contains(std::string_view doc) const {
  const std::vector<uint32_t> sig = signature(doc);
  return near_any(sig, band_hashes(sig));
}

void NearDedup::add(std::string_view doc) {
  std::vector<uint32_t> sig = signature(doc);
  const std::vector<uint64_t> bands = band_hashes(sig);
  remember(std::move(sig), bands);
}

}  // namespace dsforge::data
