#include "dsforge/data/ingest.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/log.h"
#include "dsforge/core/run_config.h"

namespace dsforge::data {
namespace fs = std::filesystem;

std::vector<std::string> expand_inputs(const std::vector<std::string>& specs) {
  std::vector<std::string> out;
  for (const auto& spec : specs) {
    std::vector<std::string> found;
    if (spec.find_first_of("*?[") != std::string::npos) {
      glob_t g{};
      if (::glob(spec.c_str(), 0, nullptr, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; ++i)
          if (fs::is_regular_file(g.gl_pathv[i])) found.emplace_back(g.gl_pathv[i]);
      ::globfree(&g);
    } else if (fs::is_directory(spec)) {
      for (const auto& e : fs::recursive_directory_iterator(spec))
        if (e.is_regular_file()) found.push_back(e.path().string());
    } else if (fs::is_regular_file(spec)) {
      found.push_back(spec);
    }
    if (found.empty()) throw DataError(fmt(spec, ": no input files (not a file, a folder with files, or a matching glob)"));
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;      // continuation bytes
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) n = 1, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) n = 2, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) n = 3, cp = c & 0x07;
    else return false;  // continuation byte, overlong lead (C0/C1) or > U+10FFFF lead
    if (i + n >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;  // overlong, out of range, or a surrogate
    i += n + 1;
  }
  return true;
}

std::string repair_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    // Find the longest valid sequence starting at i (1-4 bytes).
    size_t len = 0;
    for (size_t n = 1; n <= 4 && i + n <= s.size(); ++n)
      if (is_valid_utf8(s.substr(i, n))) { len = n; break; }
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
      // Skip continuation bytes of the same broken sequence.
      while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) ++i;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  return out;
}

TxtDocuments parse_txt_documents(const std::string& name) {
  if (name == "line") return TxtDocuments::kLine;
  if (name == "paragraph") return TxtDocuments::kParagraph;
  if (name == "file") return TxtDocuments::kFile;
  throw ConfigError(fmt("key 'data.txt_documents' must be \"line\", \"paragraph\" or \"file\", got '", name, "'"));
}

bool looks_binary(std::string_view head) {
  if (head.find('\0') != std::string_view::npos) return true;
  size_t bad = 0, i = 0;
  while (i < head.size()) {
    const auto c = static_cast<unsigned char>(head[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    const size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (i + len > head.size()) break;  // a character cut by the end of the sample is not evidence
    if (len > 1 && is_valid_utf8(head.substr(i, len))) {
      i += len;
    } else {
      ++bad;
      ++i;
    }
  }
  return bad * 10 > head.size() * 3;
}

namespace {
bool is_blank(std::string_view s) { return s.find_first_not_of(" \t\r\n\v\f") == std::string_view::npos; }

// One file's documents, cut per `mode`; each is passed with the line it starts on (for messages).
// Lines keep their bytes; only the line terminator ("\n" or "\r\n") between documents is dropped.
void for_each_text_document(std::istream& in, TxtDocuments mode,
                            const std::function<void(std::string&&, int64_t)>& emit) {
  if (mode == TxtDocuments::kFile) {
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!is_blank(all)) emit(std::move(all), 1);
    return;
  }
  std::string line, para;
  int64_t lineno = 0, para_line = 0;
  auto flush = [&]() {
    if (!para.empty() && para.back() == '\r') para.pop_back();
    if (!para.empty()) emit(std::move(para), para_line);
    para.clear();
  };
  while (std::getline(in, line)) {
    ++lineno;
    if (is_blank(line)) {  // blank lines are never documents, and they end a paragraph
      flush();
      continue;
    }
    if (mode == TxtDocuments::kLine) {
      if (line.back() == '\r') line.pop_back();
      emit(std::move(line), lineno);
      continue;
    }
    if (para.empty()) para_line = lineno;
    else para.push_back('\n');
    para += line;  // a "\r" of "\r\n" stays inside the paragraph: the bytes as they were
  }
  flush();
}
}  // namespace

IngestCounts for_each_document(const std::vector<std::string>& files, const IngestOptions& opts,
                               const std::function<void(std::string&&)>& fn) {
  IngestCounts counts;
  std::vector<std::string> binary;
  auto deliver = [&](std::string&& doc) {
    if (!is_valid_utf8(doc)) {
      ++counts.invalid_utf8;
      if (opts.invalid_utf8 == InvalidUtf8::kDrop) {
        ++counts.dropped_invalid;
        return;
      }
      doc = repair_utf8(doc);
    }
    ++counts.documents;
    fn(std::move(doc));
  };
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw DataError(fmt(path, ": cannot open"));
    const std::string ext = fs::path(path).extension().string();
    const bool jsonl = ext == ".jsonl" || ext == ".ndjson";
    if (!jsonl && opts.skip_binary) {  // JSONL is parsed strictly instead: a bad record is an error
      std::string head(8192, '\0');
      in.read(head.data(), static_cast<std::streamsize>(head.size()));
      head.resize(static_cast<size_t>(in.gcount()));
      if (looks_binary(head)) {
        ++counts.binary_files_skipped;
        binary.push_back(path);
        continue;
      }
      in.clear();
      in.seekg(0);
    }
    ++counts.files;
    if (!jsonl) {
      for_each_text_document(in, opts.txt_documents, [&](std::string&& doc, int64_t) { deliver(std::move(doc)); });
      continue;
    }
    std::string line;
    int64_t lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (is_blank(line)) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        // nlohmann rejects invalid UTF-8 too: say which, with the line.
        throw DataError(fmt(path, ":", lineno, ": not a valid JSON object",
                            is_valid_utf8(line) ? "" : " (the line is not valid UTF-8)", " (", e.what(), ")"));
      }
      if (!j.is_object() || !j.contains(opts.jsonl_field) || !j[opts.jsonl_field].is_string())
        throw DataError(fmt(path, ":", lineno, ": expected an object with a string field '", opts.jsonl_field, "'"));
      std::string doc = j[opts.jsonl_field].get<std::string>();
      if (!is_blank(doc)) deliver(std::move(doc));  // the text keeps its newlines
    }
  }
  if (!binary.empty())
    log_info("data: skipped ", binary.size(), " file(s) that are not text (NUL bytes or mostly invalid UTF-8), e.g. ",
             binary.front());
  return counts;
}

IngestOptions ingest_options(const RunConfig& cfg) {
  IngestOptions io;
  io.jsonl_field = cfg.data.jsonl_field;
  io.invalid_utf8 = cfg.data.invalid_utf8 == "drop" ? InvalidUtf8::kDrop : InvalidUtf8::kRepair;
  io.txt_documents = parse_txt_documents(cfg.data.txt_documents);
  return io;
}

}  // namespace dsforge::data
