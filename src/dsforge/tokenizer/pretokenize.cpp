#include "dsforge/tokenizer/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "dsforge/core/error.h"
#include <algorithm>
#include <string>
#include <vector>

namespace dsforge::tok {
namespace {
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Match data is per thread: pcre2 match data cannot be shared between concurrent matches.
struct MatchData {
  pcre2_match_data* md = nullptr;
  ~MatchData() { if (md) pcre2_match_data_free(md); }
};
}  // namespace

const std::vector<std::string>& pretokenizer_patterns(const std::string& name) {
  static const std::vector<std::string> gpt2 = {kGpt2Pattern};
  static const std::vector<std::string> deepseek_v3 = {
      R"(\p{N}{1,3})", "[一-龥぀-ゟ゠-ヿ]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|"
      "\\s*[\r\n]+|\\s+(?!\\S)|\\s+"};
  if (name == "gpt2") return gpt2;
  if (name == "deepseek-v3") return deepseek_v3;
  throw ConfigError(fmt("pre-tokenizer '", name, "' is unknown (gpt2, deepseek-v3)"));
}

PreTokenizer::PreTokenizer() : PreTokenizer(std::vector<std::string>{kGpt2Pattern}) {}

PreTokenizer::PreTokenizer(std::vector<std::string> patterns) : patterns_(std::move(patterns)) {
  for (const auto& p : patterns_) {
    int err = 0;
    PCRE2_SIZE off = 0;
    auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.c_str()), p.size(),
                               PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
    if (!code) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(err, buf, sizeof buf);
      for (void* c : code_) pcre2_code_free(static_cast<pcre2_code*>(c));
      throw DataError(fmt("pre-tokenizer: cannot compile pattern '", p, "' at offset ", off, ": ",
                          reinterpret_cast<char*>(buf)));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
    code_.push_back(code);
  }
}

PreTokenizer::~PreTokenizer() {
  for (void* c : code_) pcre2_code_free(static_cast<pcre2_code*>(c));
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  if (code_.size() == 1) {
    split_one(0, text, out);
    return;
  }
  std::vector<std::string_view> cur{text}, next;
  for (size_t k = 0; k < code_.size(); ++k) {
    next.clear();
    for (auto piece : cur) split_one(k, piece, next);
    std::swap(cur, next);
  }
  out.insert(out.end(), cur.begin(), cur.end());
}

void PreTokenizer::split_one(size_t k, std::string_view text, std::vector<std::string_view>& out) const {
  thread_local MatchData tl;
  auto* code = static_cast<pcre2_code*>(code_[k]);
  if (!tl.md) tl.md = pcre2_match_data_create(4, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    int rc = pcre2_match(code, subject, text.size(), pos, 0, tl.md, nullptr);
    if (rc < 0) {  // no further match: the rest is one gap piece
      out.push_back(text.substr(pos));
      return;
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(tl.md);
    if (ov[0] > pos) out.push_back(text.substr(pos, ov[0] - pos));  // the gap before the match
    if (ov[1] == ov[0]) {  // an empty match: step one byte to guarantee progress
      out.push_back(text.substr(ov[0], 1));
      pos = ov[0] + 1;
      continue;
    }
    out.push_back(text.substr(ov[0], ov[1] - ov[0]));
    pos = ov[1];
  }
}

size_t last_safe_split(std::string_view text) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  for (size_t p = text.size(); p >= 2; --p)
    if (text[p - 1] == '\n' && !space(text[p - 2]) && p < text.size() && !space(text[p])) return p;
  return 0;
}

size_t last_safe_split(std::string_view text, const std::vector<std::string>& atomic) {
  // A token straddles cut p when it starts before p and ends after it; text[p - 1] is '\n', so
  // the token has a '\n' at some offset k with k + 1 < size, starting at p - 1 - k.
  auto straddles = [&](size_t p) {
    for (const auto& t : atomic)
      for (size_t k = t.find('\n'); k != std::string::npos && k + 1 < t.size(); k = t.find('\n', k + 1)) {
        if (p < k + 1) break;
        const size_t start = p - 1 - k;
        const size_t len = std::min(t.size(), text.size() - start);  // a prefix at the end may complete later
        if (text.compare(start, len, t, 0, len) == 0) return true;
      }
    return false;
  };
  for (size_t end = text.size();;) {
    const size_t p = last_safe_split(text.substr(0, end));
    if (p == 0 || !straddles(p)) return p;
    end = p - 1;  // the next candidate lies before this one's newline
  }
}

const PreTokenizer& gpt2_pretokenizer() {
  static const PreTokenizer instance;
  return instance;
}

const PreTokenizer& named_pretokenizer(const std::string& name) {
  if (name == "gpt2") return gpt2_pretokenizer();
  static const PreTokenizer deepseek_v3(pretokenizer_patterns("deepseek-v3"));
  if (name == "deepseek-v3") return deepseek_v3;
  pretokenizer_patterns(name);  // throws with the list of names
  return gpt2_pretokenizer();
}

}  // namespace dsforge::tok
