// UTF-8 helpers for text produced piece by piece (a byte-level BPE token may end inside a character).
//
//   std::string pending;                          // bytes sampled so far, not yet printed
//   pending += token_bytes;
//   size_t n = complete_utf8_prefix(pending);     // print pending[0, n), keep the rest
#pragma once
#include <cstddef>
#include <string_view>

namespace dsforge {

// Length of the longest prefix of `s` that does not end inside a UTF-8 sequence that could still be
// completed by more bytes. Bytes that can never become valid (a stray continuation byte, 0xC0, 0xFF)
// count as complete: they are for the caller's repair (U+FFFD), not worth waiting for.
inline size_t complete_utf8_prefix(std::string_view s) {
  const size_t n = s.size();
  // A sequence is at most 4 bytes: only the last 3 bytes can start an unfinished one.
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto b = static_cast<unsigned char>(s[n - back]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: its lead byte is further back
    size_t need = 0;
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b >= 0xE0 && b <= 0xEF) need = 3;
    else if (b >= 0xF0 && b <= 0xF4) need = 4;
    return need > back ? n - back : n;  // a lead byte with too few bytes after it waits for more
  }
  return n;
}

}  // namespace dsforge
