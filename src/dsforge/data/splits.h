// The prepared splits of a run: `<run>/data/{train,val,test}.jsonl` (and train_augmented.jsonl),
// one JSON object {"text": "..."} per line. JSON escapes newlines, tabs and quotes, so a document of
// any shape (a paragraph, a whole source file) fits on one line and the files still stream.
//
//   JsonlWriter w(split_path(run_dir, "train"));
//   w.write("def f():\n    return 1\n");
//   w.commit();                                   // temporary file renamed into place
//   for_each_split_document(split_path(run_dir, "train"), [](std::string&& doc) { ... });
#pragma once
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>

namespace dsforge::data {

// `<run_dir>/data/<split>.jsonl`: "train", "val", "test", "train_augmented".
std::string split_path(const std::string& run_dir, const std::string& split);

// Writes documents as {"text": ...} lines to a temporary file, renamed into place on commit().
// Throws IoError when the file cannot be written, DataError on a document that is not valid UTF-8.
class JsonlWriter {
 public:
  explicit JsonlWriter(std::string path);
  void write(const std::string& text);
  void commit();
  int64_t documents() const { return n_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  std::ofstream out_;
  int64_t n_ = 0;
};

// Streams the documents of a split file: JSONL records' "text" when the name ends in .jsonl or
// .ndjson, else one document per non-blank line (a plain .txt file of one-line documents).
// Returns the number of documents; throws DataError naming file:line on a bad record.
int64_t for_each_split_document(const std::string& path, const std::function<void(std::string&&)>& fn);

}  // namespace dsforge::data
