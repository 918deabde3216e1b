#include "dsforge/tokenizer/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "dsforge/core/error.h"

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

PreTokenizer::PreTokenizer() {
  int err = 0;
  PCRE2_SIZE off = 0;
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED,
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    throw Error(fmt("pre-tokenizer: cannot compile pattern at offset ", off, ": ", reinterpret_cast<char*>(buf)));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
  code_ = code;
}

PreTokenizer::~PreTokenizer() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  thread_local MatchData tl;
  auto* code = static_cast<pcre2_code*>(code_);
  if (!tl.md) tl.md = pcre2_match_data_create(4, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    int rc = pcre2_match(code, subject, text.size(), pos, 0, tl.md, nullptr);
    if (rc < 0) {  // no further match: the rest is invalid UTF-8 bytes
      out.push_back(text.substr(pos));
      return;
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(tl.md);
    if (ov[0] > pos) out.push_back(text.substr(pos, ov[0] - pos));  // unmatched (invalid) bytes
    if (ov[1] == ov[0]) {  // cannot happen with this pattern; guard against an endless loop
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

const PreTokenizer& gpt2_pretokenizer() {
  static const PreTokenizer instance;
  return instance;
}

}  // namespace dsforge::tok
