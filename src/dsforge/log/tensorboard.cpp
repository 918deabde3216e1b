#include "dsforge/log/tensorboard.h"

#include <unistd.h>

#include <chrono>
#include <cstring>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace dsforge::log {
namespace {

void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  s.push_back(static_cast<char>(v));
}

template <typename T>
void put_fixed(std::string& s, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  s.append(b, sizeof(T));
}

void put_bytes_field(std::string& s, int field, const std::string& bytes) {
  put_varint(s, static_cast<uint64_t>(field) << 3 | 2);  // wire type 2: length-delimited
  put_varint(s, bytes.size());
  s += bytes;
}

std::string event_header(double wall_time, int64_t step) {
  std::string e;
  put_varint(e, 1 << 3 | 1);  // Event.wall_time: double
  put_fixed(e, wall_time);
  put_varint(e, 2 << 3 | 0);  // Event.step: int64
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}

// An Event holding a Summary of one Summary.Value (already encoded).
std::string summary_event(const std::string& value, int64_t step, double wall_time) {
  std::string summary;
  put_bytes_field(summary, 1, value);  // Summary.value
  std::string e = event_header(wall_time, step);
  put_bytes_field(e, 5, summary);      // Event.summary
  return e;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t masked_crc32c(const std::string& data) {
  uint32_t crc = crc32c(data.data(), data.size());
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string frame_record(const std::string& payload) {
  std::string len;
  put_fixed<uint64_t>(len, payload.size());
  std::string rec = len;
  put_fixed<uint32_t>(rec, masked_crc32c(len));
  rec += payload;
  put_fixed<uint32_t>(rec, masked_crc32c(payload));
  return rec;
}

std::string encode_file_version_event(double wall_time) {
  std::string e = event_header(wall_time, 0);
  put_bytes_field(e, 3, "brain.Event:2");  // Event.file_version
  return e;
}

std::string encode_scalar_event(const std::string& tag, float value, int64_t step, double wall_time) {
  std::string v;
  put_bytes_field(v, 1, tag);  // Summary.Value.tag
  put_varint(v, 2 << 3 | 5);   // Summary.Value.simple_value: float
  put_fixed(v, value);
  return summary_event(v, step, wall_time);
}

std::string encode_histogram_event(const std::string& tag, const std::vector<double>& values, int64_t step,
                                   double wall_time, int buckets) {
  if (values.empty()) throw Error(fmt("tensorboard: histogram '", tag, "' has no values"));
  double lo = values[0], hi = values[0], sum = 0, sum_sq = 0;
  for (double v : values) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    sum += v;
    sum_sq += v * v;
  }
  // Bucket i holds values in (limit[i-1], limit[i]]; the first also takes lo itself.
  const int n = hi > lo ? buckets : 1;
  std::vector<double> limits(n), counts(n, 0.0);
  for (int i = 0; i < n; ++i) limits[i] = n == 1 ? hi : lo + (hi - lo) * (i + 1) / n;
  for (double v : values) {
    int i = 0;
    while (i + 1 < n && v > limits[i]) ++i;
    counts[i] += 1;
  }
  std::string h;
  auto put_double = [&](int field, double v) {
    put_varint(h, static_cast<uint64_t>(field) << 3 | 1);  // wire type 1: 64-bit
    put_fixed(h, v);
  };
  put_double(1, lo);
  put_double(2, hi);
  put_double(3, static_cast<double>(values.size()));
  put_double(4, sum);
  put_double(5, sum_sq);
  auto put_packed = [&](int field, const std::vector<double>& xs) {
    std::string packed;
    for (double x : xs) put_fixed(packed, x);
    put_bytes_field(h, field, packed);
  };
  put_packed(6, limits);
  put_packed(7, counts);
  std::string v;
  put_bytes_field(v, 1, tag);  // Summary.Value.tag
  put_bytes_field(v, 5, h);    // Summary.Value.histo
  return summary_event(v, step, wall_time);
}

std::string encode_text_event(const std::string& tag, const std::string& markdown, int64_t step, double wall_time) {
  std::string plugin;
  put_bytes_field(plugin, 1, "text");  // PluginData.plugin_name
  std::string meta;
  put_bytes_field(meta, 1, plugin);    // SummaryMetadata.plugin_data
  std::string tensor;
  put_varint(tensor, 1 << 3 | 0);      // TensorProto.dtype
  put_varint(tensor, 7);               // DT_STRING
  put_bytes_field(tensor, 2, "");      // TensorProto.tensor_shape: a scalar
  put_bytes_field(tensor, 8, markdown);  // TensorProto.string_val
  std::string v;
  put_bytes_field(v, 1, tag);     // Summary.Value.tag
  put_bytes_field(v, 8, tensor);  // Summary.Value.tensor
  put_bytes_field(v, 9, meta);    // Summary.Value.metadata
  return summary_event(v, step, wall_time);
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  make_dirs(dir);
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  const double t = now_seconds();
  path_ = path_join(dir, fmt("events.out.tfevents.", static_cast<int64_t>(t), ".", host, ".", ::getpid()));
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_) throw IoError(fmt(path_, ": cannot create TensorBoard event file"));
  out_ << frame_record(encode_file_version_event(t));
  out_.flush();
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  out_ << frame_record(encode_scalar_event(tag, static_cast<float>(value), step, now_seconds()));
}

void TensorBoardWriter::add_histogram(const std::string& tag, const std::vector<double>& values, int64_t step) {
  out_ << frame_record(encode_histogram_event(tag, values, step, now_seconds()));
}

void TensorBoardWriter::add_text(const std::string& tag, const std::string& markdown, int64_t step) {
  out_ << frame_record(encode_text_event(tag, markdown, step, now_seconds()));
}

void TensorBoardWriter::flush() { out_.flush(); }

}  // namespace dsforge::log
