// Document ingestion: text files, folders, globs, and JSONL with a named text field; streamed, one
// document at a time, so memory does not grow with the corpus (a "file" document is held whole).
//
// A JSONL record's text field is one document, newlines and all. Any other file is text, cut into
// documents per TxtDocuments: one per line, one per blank-line separated paragraph, or the whole
// file (source trees: .py, .cpp, .md ...). Lines and paragraphs are passed byte for byte (a line's
// "\r\n" ending excepted); documents that are only whitespace are not documents and are skipped.
// Files that are not text (NUL bytes, or mostly invalid UTF-8, in their first 8 KiB: archives,
// images) are skipped and counted rather than "repaired" into garbage.
//
//   for_each_document(expand_inputs({"corpus/*.jsonl", "extra.txt"}), {"text", InvalidUtf8::kRepair},
//                     [](std::string doc) { ... });
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace dsforge {
struct RunConfig;
}

namespace dsforge::data {

// Files named directly, every regular file under a folder (recursively, sorted), and glob matches
// (sorted). A spec matching nothing is an error naming it.
std::vector<std::string> expand_inputs(const std::vector<std::string>& specs);

enum class InvalidUtf8 { kRepair, kDrop };  // repair: invalid bytes -> U+FFFD; drop: skip the document

enum class TxtDocuments { kLine, kParagraph, kFile };
// "line" | "paragraph" | "file" (data.txt_documents); throws ConfigError naming the key otherwise.
TxtDocuments parse_txt_documents(const std::string& name);

struct IngestOptions {
  std::string jsonl_field = "text";  // for *.jsonl / *.ndjson files
  InvalidUtf8 invalid_utf8 = InvalidUtf8::kRepair;
  TxtDocuments txt_documents = TxtDocuments::kLine;  // for every other file
  bool skip_binary = true;           // skip (and count) text files whose content is not text
};
// The options data.jsonl_field, data.invalid_utf8 and data.txt_documents give.
IngestOptions ingest_options(const RunConfig& cfg);

struct IngestCounts {
  int64_t files = 0;           // files read (binary ones not included)
  int64_t documents = 0;       // passed to the callback
  int64_t invalid_utf8 = 0;    // documents with invalid bytes (repaired or dropped)
  int64_t dropped_invalid = 0;
  int64_t binary_files_skipped = 0;
};

// Whether `head` (the first bytes of a file) looks like binary data: a NUL byte, or more than 30%
// of its bytes in invalid UTF-8 sequences (Latin-1 text stays text; gzip, PNG, ELF do not).
bool looks_binary(std::string_view head);

// Valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF)?
bool is_valid_utf8(std::string_view s);
// Invalid sequences replaced by U+FFFD, one per maximal invalid subpart.
std::string repair_utf8(std::string_view s);

// Calls `fn` with each document of `files`, in order. Throws DataError naming file:line on a bad
// JSONL record, and a file that cannot be opened.
IngestCounts for_each_document(const std::vector<std::string>& files, const IngestOptions& opts,
                               const std::function<void(std::string&&)>& fn);

}  // namespace dsforge::data
