// Document ingestion: plain-text files (one document per line), folders, globs, and JSONL with a
// named text field; streamed, one document at a time, so memory does not grow with the corpus.
//
//   for_each_document(expand_inputs({"corpus/*.jsonl", "extra.txt"}), {"text", InvalidUtf8::kRepair},
//                     [](std::string doc) { ... });
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace dsforge::data {

// Files named directly, every regular file under a folder (recursively, sorted), and glob matches
// (sorted). A spec matching nothing is an error naming it.
std::vector<std::string> expand_inputs(const std::vector<std::string>& specs);

enum class InvalidUtf8 { kRepair, kDrop };  // repair: invalid bytes -> U+FFFD; drop: skip the document

struct IngestOptions {
  std::string jsonl_field = "text";  // for *.jsonl / *.ndjson files
  InvalidUtf8 invalid_utf8 = InvalidUtf8::kRepair;
};

struct IngestCounts {
  int64_t files = 0;
  int64_t documents = 0;       // passed to the callback
  int64_t invalid_utf8 = 0;    // documents with invalid bytes (repaired or dropped)
  int64_t dropped_invalid = 0;
};

// Valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF)?
bool is_valid_utf8(std::string_view s);
// Invalid sequences replaced by U+FFFD, one per maximal invalid subpart.
std::string repair_utf8(std::string_view s);

IngestCounts for_each_document(const std::vector<std::string>& files, const IngestOptions& opts,
                               const std::function<void(std::string&&)>& fn);

}  // namespace dsforge::data
