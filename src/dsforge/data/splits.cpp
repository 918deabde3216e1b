#include "dsforge/data/splits.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/data/ingest.h"

namespace dsforge::data {

std::string split_path(const std::string& run_dir, const std::string& split) {
  return path_join(path_join(run_dir, "data"), split + ".jsonl");
}

JsonlWriter::JsonlWriter(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp"), out_(tmp_, std::ios::binary) {
  if (!out_) throw IoError(fmt(tmp_, ": cannot create"));
}

void JsonlWriter::write(const std::string& text) {
  nlohmann::json j = {{"text", text}};
  try {
    out_ << j.dump() << '\n';  // ensure_ascii off: UTF-8 stays readable in the file
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt(path_, ": document ", n_ + 1, " cannot be written as JSON (", e.what(), ")"));
  }
  ++n_;
}

void JsonlWriter::commit() {
  out_.close();
  if (!out_) throw IoError(fmt(tmp_, ": write failed"));
  std::filesystem::rename(tmp_, path_);
}

int64_t for_each_split_document(const std::string& path, const std::function<void(std::string&&)>& fn) {
  if (!file_exists(path)) throw DataError(fmt(path, ": not found (run `dsforge data prepare` first)"));
  IngestOptions io;
  io.jsonl_field = "text";
  io.txt_documents = TxtDocuments::kLine;
  io.skip_binary = false;  // a split is ours: a bad one should fail loudly, not vanish
  return for_each_document({path}, io, fn).documents;
}

}  // namespace dsforge::data
