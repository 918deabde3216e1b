#include "dsforge/tokenizer/bpe.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <array>
#include <queue>
#include <unordered_set>

#include "dsforge/core/error.h"
#include "dsforge/tokenizer/added_tokens.h"
#include "dsforge/tokenizer/pair_map.h"
#include "dsforge/tokenizer/pretokenize.h"

namespace dsforge::tok {
namespace {

std::string utf8_of(uint32_t cp) {
  std::string s;
  if (cp < 0x80) s.push_back(static_cast<char>(cp));
  else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::unordered_map<uint32_t, uint8_t> from_cp;
  std::vector<uint8_t> order;  // printable bytes first, then the rest (GPT-2's `bs` list)
  ByteMap() {
    // Printable Latin-1 bytes map to themselves; the rest to 256, 257, ... in byte order.
    uint32_t next = 256;
    std::vector<uint8_t> rest;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      uint32_t cp = printable ? b : next++;
      to_unicode[b] = utf8_of(cp);
      from_cp[cp] = static_cast<uint8_t>(b);
      (printable ? order : rest).push_back(static_cast<uint8_t>(b));
    }
    order.insert(order.end(), rest.begin(), rest.end());
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

const std::string& byte_to_unicode(uint8_t b) { return byte_map().to_unicode[b]; }

const std::vector<uint8_t>& gpt2_byte_order() { return byte_map().order; }

bool unicode_to_bytes(const std::string& s, std::string& out) {
  const auto& m = byte_map().from_cp;
  out.clear();
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    int len;
    if (c < 0x80) cp = c, len = 1;
    else if ((c & 0xE0) == 0xC0) cp = c & 0x1F, len = 2;
    else if ((c & 0xF0) == 0xE0) cp = c & 0x0F, len = 3;
    else return false;
    if (i + len > s.size()) return false;
    for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    auto it = m.find(cp);
    if (it == m.end()) return false;
    out.push_back(static_cast<char>(it->second));
    i += len;
  }
  return true;
}

namespace {
std::atomic<uint64_t> g_next_tokenizer_id{1};
using PieceCache = std::unordered_map<std::string, std::vector<int32_t>>;
PieceCache& thread_cache(uint64_t id) {
  thread_local std::unordered_map<uint64_t, PieceCache> caches;
  auto it = caches.find(id);
  if (it != caches.end()) return it->second;
  if (caches.size() >= 4) caches.clear();  // a thread rarely serves more than a few tokenizers
  return caches[id];
}
}  // namespace

BpeTokenizer::BpeTokenizer()
    : pre_(std::shared_ptr<const PreTokenizer>(&gpt2_pretokenizer(), [](const PreTokenizer*) {})),
      matcher_(std::make_shared<const AddedTokenMatcher>()),
      id_(g_next_tokenizer_id++) {}

const std::vector<std::string>& BpeTokenizer::pretokenizer_patterns() const { return pre_->patterns(); }

void BpeTokenizer::set_pretokenizer(const std::vector<std::string>& patterns) {
  for (const char* name : {"gpt2", "deepseek-v3"})
    if (patterns == tok::pretokenizer_patterns(name)) {
      pre_ = std::shared_ptr<const PreTokenizer>(&named_pretokenizer(name), [](const PreTokenizer*) {});  // static
      id_ = g_next_tokenizer_id++;
      return;
    }
  pre_ = std::make_shared<const PreTokenizer>(patterns);
  id_ = g_next_tokenizer_id++;
}

BpeTokenizer::BpeTokenizer(const BpeTokenizer& o)
    : pre_(o.pre_), bytes_(o.bytes_), added_(o.added_), added_ids_(o.added_ids_), special_tokens_(o.special_tokens_),
      special_ids_(o.special_ids_), added_tokens_(o.added_tokens_), matcher_(o.matcher_),
      newline_tokens_(o.newline_tokens_), byte_ids_(o.byte_ids_), merges_(o.merges_), merge_result_(o.merge_result_), merge_rank_(o.merge_rank_), id_(g_next_tokenizer_id++) {}

BpeTokenizer& BpeTokenizer::operator=(const BpeTokenizer& o) {
  if (this != &o) {
    pre_ = o.pre_;
    bytes_ = o.bytes_;
    added_ = o.added_;
    added_ids_ = o.added_ids_;
    special_tokens_ = o.special_tokens_;
    special_ids_ = o.special_ids_;
    added_tokens_ = o.added_tokens_;
    matcher_ = o.matcher_;
    newline_tokens_ = o.newline_tokens_;
    byte_ids_ = o.byte_ids_;
    merges_ = o.merges_;
    merge_result_ = o.merge_result_;
    merge_rank_ = o.merge_rank_;
    id_ = g_next_tokenizer_id++;
  }
  return *this;
}

int32_t BpeTokenizer::special_id(const std::string& token) const {
  auto it = special_ids_.find(token);
  if (it == special_ids_.end()) throw DataError(fmt("tokenizer: no special token '", token, "'"));
  return it->second;
}

int32_t BpeTokenizer::added_token_id(const std::string& content) const {
  for (size_t i = 0; i < added_.size(); ++i)
    if (added_[i].content == content) return added_ids_[i];
  return -1;
}

// Derives everything else from bytes_, merges_, added_ and added_ids_.
void BpeTokenizer::build_index(const Source* source) {
  special_tokens_.clear();
  special_ids_.clear();
  added_tokens_.clear();
  newline_tokens_.clear();
  auto matcher = std::make_shared<AddedTokenMatcher>();
  std::unordered_set<int32_t> added_set;
  for (size_t i = 0; i < added_.size(); ++i) {
    const AddedToken& a = added_[i];
    if (a.special) {
      special_tokens_.push_back(a.content);
      special_ids_[a.content] = added_ids_[i];
    } else {
      added_tokens_.push_back(a.content);
    }
    matcher->add(a.content, added_ids_[i], a.special, a.normalized);
    if (a.content.find('\n') != std::string::npos) newline_tokens_.push_back(a.content);
    added_set.insert(added_ids_[i]);
  }
  matcher_ = std::move(matcher);

  // Byte and merge tokens by their bytes; an added token's bytes are its content, which BPE never
  // produces from text (the matcher takes it out first), so it stays out of this index.
  merge_rank_ = PairMap<int32_t>(1 << 10);
  merge_result_.clear();
  std::unordered_map<std::string, int32_t> by_bytes;
  for (size_t i = 0; i < bytes_.size(); ++i)
    if (!added_set.count(static_cast<int32_t>(i))) by_bytes.emplace(bytes_[i], static_cast<int32_t>(i));
  for (int b = 0; b < 256; ++b) {
    auto it = by_bytes.find(std::string(1, static_cast<char>(b)));
    byte_ids_[b] = it == by_bytes.end() ? -1 : it->second;
  }
  for (size_t r = 0; r < merges_.size(); ++r) {
    const auto [a, b] = merges_[r];
    auto it = by_bytes.find(bytes_[a] + bytes_[b]);
    if (it == by_bytes.end()) {
      const std::string where = !source ? fmt("tokenizer: merge ", r)
                                : source->merge_lines.empty() ? fmt(source->merges, "[", r, "]")
                                                              : fmt(source->merges, ":", source->merge_lines[r]);
      throw DataError(fmt(where, ": merge '", token_bytes(a), "' + '", token_bytes(b),
                          "' produces a token that is not in the vocabulary"));
    }
    merge_rank_[pair_key(a, b)] = static_cast<int32_t>(r);
    merge_result_.push_back(it->second);
  }
}

BpeTokenizer::PieceCounter::PieceCounter(const TrainOptions& opts) : pre_(&named_pretokenizer(opts.pretokenizer)) {
  auto m = std::make_shared<AddedTokenMatcher>();
  for (size_t i = 0; i < opts.special_tokens.size(); ++i)
    m->add(opts.special_tokens[i], static_cast<int32_t>(i), true, false);
  specials_ = std::move(m);
}

void BpeTokenizer::PieceCounter::add(std::string_view doc) {
  specials_->split(doc, true, [&](std::string_view seg, int32_t special) {
    if (special >= 0) return;  // no merge crosses a special token
    pieces_.clear();
    pre_->split(seg, pieces_);
    for (auto p : pieces_) ++counts_[std::string(p)];
  });
}

BpeTokenizer BpeTokenizer::train(const std::vector<std::string>& docs, const TrainOptions& opts) {
  PieceCounter counter(opts);
  for (const auto& d : docs) counter.add(d);
  return train_from_counts(counter.counts(), opts);
}

BpeTokenizer BpeTokenizer::train_from_counts(const std::unordered_map<std::string, int64_t>& piece_counts,
                                             const TrainOptions& opts) {
  BpeTokenizer t;
  t.set_pretokenizer(tok::pretokenizer_patterns(opts.pretokenizer));
  for (const auto& s : opts.special_tokens) {
    if (s.empty()) throw DataError("tokenizer: a special token is empty");
    for (const auto& a : t.added_)
      if (a.content == s) throw DataError(fmt("tokenizer: special token '", s, "' listed twice"));
    t.added_.push_back({s, true, false});
    t.added_ids_.push_back(static_cast<int32_t>(t.bytes_.size()));
    t.bytes_.push_back(s);
  }
  std::array<int32_t, 256> byte_id{};
  for (uint8_t b : gpt2_byte_order()) {
    byte_id[b] = static_cast<int32_t>(t.bytes_.size());
    t.bytes_.push_back(std::string(1, static_cast<char>(b)));
  }
  if (opts.vocab_size < static_cast<int64_t>(t.bytes_.size()))
    throw DataError(fmt("tokenizer: vocab_size ", opts.vocab_size, " is below 256 bytes + ",
                        opts.special_tokens.size(), " special tokens"));

  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> freq;
  words.reserve(piece_counts.size());
  for (const auto& [p, c] : piece_counts) {
    std::vector<int32_t> w;
    for (unsigned char ch : p) w.push_back(byte_id[ch]);
    words.push_back(std::move(w));
    freq.push_back(c);
  }

  // 2. Pair counts and, for each pair, the words that contain it (may hold stale entries).
  PairMap<int64_t> counts;                // zero = absent
  PairMap<std::vector<int32_t>> where;
  for (size_t w = 0; w < words.size(); ++w)
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      uint64_t k = pair_key(words[w][i], words[w][i + 1]);
      counts[k] += freq[w];
      auto& v = where[k];
      if (v.empty() || v.back() != static_cast<int32_t>(w)) v.push_back(static_cast<int32_t>(w));
    }

  // 3. Max-heap on (count, pair bytes), lazily invalidated: an entry is live when its count is
  //    still the pair's current count.
  struct Item {
    int64_t count;
    int32_t a, b;
  };
  const auto& bytes = t.bytes_;
  auto less = [&bytes](const Item& x, const Item& y) {
    if (x.count != y.count) return x.count < y.count;
    int c = bytes[x.a].compare(bytes[y.a]);
    if (c != 0) return c < 0;
    return bytes[x.b].compare(bytes[y.b]) < 0;
  };
  std::priority_queue<Item, std::vector<Item>, decltype(less)> heap(less);
  counts.for_each([&](uint64_t k, int64_t c) {
    if (c > 0) heap.push({c, static_cast<int32_t>(k >> 32), static_cast<int32_t>(k & 0xFFFFFFFF)});
  });

  std::vector<uint64_t> changed;  // pairs whose count moved this merge (deduplicated before use)
  while (static_cast<int64_t>(t.bytes_.size()) < opts.vocab_size && !heap.empty()) {
    Item top = heap.top();
    heap.pop();
    const uint64_t key = pair_key(top.a, top.b);
    const int64_t* current = counts.find(key);
    if (!current || *current != top.count) continue;  // stale
    if (top.count <= 0) break;
    const int32_t new_id = static_cast<int32_t>(t.bytes_.size());
    t.bytes_.push_back(t.bytes_[top.a] + t.bytes_[top.b]);
    t.merges_.emplace_back(top.a, top.b);

    changed.clear();
    std::vector<int32_t> affected = std::move(where[key]);
    where[key].clear();
    // Only the pairs touching a merge site change: (prev, a) -> (prev, new) and (b, next) -> (new, next).
    // One left-to-right pass rewrites each word in place (r reads, j writes); s[j-1] is final output,
    // so a merge right after another sees the new symbol as its left neighbour.
    auto bump = [&](int32_t x, int32_t y, int64_t delta, int32_t w) {
      const uint64_t k = pair_key(x, y);
      counts[k] += delta;
      changed.push_back(k);
      if (delta > 0) {
        auto& v = where[k];
        if (v.empty() || v.back() != w) v.push_back(w);
      }
    };
    int32_t last = -1;
    for (int32_t w : affected) {
      if (w == last) continue;
      last = w;
      auto& sym = words[w];
      const int64_t f = freq[w];
      const size_t n = sym.size();
      size_t j = 0;
      for (size_t r = 0; r < n;) {
        if (r + 1 < n && sym[r] == top.a && sym[r + 1] == top.b) {
          if (j > 0) {
            bump(sym[j - 1], top.a, -f, w);
            bump(sym[j - 1], new_id, f, w);
          }
          if (r + 2 < n) {
            bump(top.b, sym[r + 2], -f, w);
            bump(new_id, sym[r + 2], f, w);
          }
          sym[j++] = new_id;
          r += 2;
        } else {
          sym[j++] = sym[r++];
        }
      }
      sym.resize(j);
    }
    counts[key] = 0;
    std::sort(changed.begin(), changed.end());
    changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
    for (uint64_t k : changed) {
      if (k == key) continue;
      const int64_t c = *counts.find(k);
      if (c > 0) heap.push({c, static_cast<int32_t>(k >> 32), static_cast<int32_t>(k & 0xFFFFFFFF)});
    }
  }
  t.build_index();
  return t;
}

BpeTokenizer BpeTokenizer::from_vocab_and_merges(const std::map<std::string, int32_t>& vocab,
                                                 const std::vector<std::pair<std::string, std::string>>& merges,
                                                 const std::vector<std::string>& special_tokens) {
  std::vector<AddedToken> added;
  for (const auto& s : special_tokens) added.push_back({s, true, false});
  return from_vocab_and_merges(vocab, merges, added, Source{});
}

BpeTokenizer BpeTokenizer::from_vocab_and_merges(const std::map<std::string, int32_t>& vocab,
                                                 const std::vector<std::pair<std::string, std::string>>& merges,
                                                 const std::vector<AddedToken>& added, const Source& src) {
  BpeTokenizer t;
  // Ids must be exactly 0..n-1: sized by the entry count, never by the largest id (which a damaged
  // file could make huge).
  const size_t n = vocab.size();
  t.bytes_.assign(n, std::string());
  std::vector<const std::string*> owner(n, nullptr);
  int64_t largest = -1;
  std::unordered_set<std::string> added_contents;
  for (const auto& a : added) added_contents.insert(a.content);
  for (const auto& [s, id] : vocab) {
    if (id < 0) throw DataError(fmt(src.vocab, ": token '", s, "' has negative id ", id));
    largest = std::max<int64_t>(largest, id);
    if (static_cast<size_t>(id) >= n) continue;  // reported below as a gap
    if (owner[id]) throw DataError(fmt(src.vocab, ": id ", id, " is given to both '", *owner[id], "' and '", s, "'"));
    owner[id] = &s;
    if (added_contents.count(s)) {
      t.bytes_[id] = s;
      continue;
    }
    std::string raw;
    if (!unicode_to_bytes(s, raw))
      throw DataError(fmt(src.vocab, ": token '", s, "' (id ", id, ") is not in byte-level form"));
    t.bytes_[id] = raw;
  }
  for (size_t i = 0; i < n; ++i)
    if (!owner[i])
      throw DataError(fmt(src.vocab, ": no token with id ", i, " (ids must be dense: ", n, " tokens, largest id ",
                          largest, ")"));
  for (const auto& a : added) {
    auto it = vocab.find(a.content);
    if (it == vocab.end())
      throw DataError(fmt(src.vocab, ": ", a.special ? "special" : "added", " token '", a.content,
                          "' is not in the vocabulary"));
    t.added_.push_back(a);
    t.added_ids_.push_back(it->second);
  }
  for (size_t r = 0; r < merges.size(); ++r) {
    auto a = vocab.find(merges[r].first), b = vocab.find(merges[r].second);
    if (a == vocab.end() || b == vocab.end()) {
      const std::string where =
          src.merge_lines.empty() ? fmt(src.merges, "[", r, "]") : fmt(src.merges, ":", src.merge_lines[r]);
      throw DataError(fmt(where, ": merge '", merges[r].first, " ", merges[r].second, "' names '",
                          a == vocab.end() ? merges[r].first : merges[r].second, "', which is not in the vocabulary"));
    }
    t.merges_.emplace_back(a->second, b->second);
  }
  t.build_index(&src);
  return t;
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  PieceCache& cache = thread_cache(id_);
  {
    auto it = cache.find(std::string(piece));
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> sym;
  sym.reserve(piece.size());
  for (unsigned char c : piece) {
    if (byte_ids_[c] < 0) throw DataError(fmt("tokenizer: byte 0x", std::hex, int(c), " has no token"));
    sym.push_back(byte_ids_[c]);
  }
  while (sym.size() > 1) {
    int32_t best = INT32_MAX;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      const int32_t* r = merge_rank_.find(pair_key(sym[i], sym[i + 1]));
      if (r && *r < best) best = *r;
    }
    if (best == INT32_MAX) break;
    const auto [a, b] = merges_[best];
    size_t j = 0;
    for (size_t i = 0; i < sym.size(); ++i, ++j) {
      if (i + 1 < sym.size() && sym[i] == a && sym[i + 1] == b) {
        sym[j] = merge_result_[best];
        ++i;
      } else {
        sym[j] = sym[i];
      }
    }
    sym.resize(j);
  }
  out.insert(out.end(), sym.begin(), sym.end());
  if (cache.size() > (1u << 20)) cache.clear();  // bounded memory on endless streams
  cache.emplace(std::string(piece), std::move(sym));
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool allow_special) const {
  std::vector<int32_t> out;
  std::vector<std::string_view> pieces;
  auto plain = [&](std::string_view seg) {
    pieces.clear();
    pre_->split(seg, pieces);
    for (auto p : pieces) encode_piece(p, out);
  };
  if (!matcher_->active(allow_special)) {  // no token can match: skip the scan
    plain(text);
    return out;
  }
  matcher_->split(text, allow_special, [&](std::string_view seg, int32_t id) {
    if (id >= 0) out.push_back(id);
    else plain(seg);
  });
  return out;
}

size_t BpeTokenizer::last_safe_split(std::string_view text) const { return tok::last_safe_split(text, newline_tokens_); }

std::vector<std::vector<int32_t>> BpeTokenizer::encode_batch(const std::vector<std::string>& texts, bool allow_special,
                                                             int threads) const {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::vector<int32_t>> out(texts.size());
  std::atomic<size_t> next{0};
  auto work = [&]() {
    constexpr size_t kChunk = 256;  // documents per grab: small enough to balance, large enough to be cheap
    for (size_t start; (start = next.fetch_add(kChunk)) < texts.size();)
      for (size_t i = start; i < std::min(texts.size(), start + kChunk); ++i) out[i] = encode(texts[i], allow_special);
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size())
      throw DataError(fmt("tokenizer: id ", id, " is outside the vocabulary [0, ", vocab_size(), ")"));
    out += bytes_[id];
  }
  return out;
}

}  // namespace dsforge::tok
