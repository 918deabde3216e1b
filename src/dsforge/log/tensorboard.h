// TensorBoard event files, written directly: TFRecord framing (length, masked CRC-32C of the
// length, payload, masked CRC-32C of the payload) around `Event` protobufs encoded by hand.
//
//   TensorBoardWriter tb("runs/x/tb");
//   tb.add_scalar("train/loss", 3.21f, /*step=*/10);
#pragma once
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace dsforge::log {

// Protobuf encoding of an Event with one scalar summary value (exposed for tests).
std::string encode_scalar_event(const std::string& tag, float value, int64_t step, double wall_time);
std::string encode_file_version_event(double wall_time);
// An Event with one HistogramProto (min, max, num, sum, sum of squares, bucket limits and counts):
// `buckets` equal-width buckets over [min, max] of `values`.
std::string encode_histogram_event(const std::string& tag, const std::vector<double>& values, int64_t step,
                                   double wall_time, int buckets = 30);
// A text-plugin summary: a scalar DT_STRING tensor with plugin_data {plugin_name: "text"}.
std::string encode_text_event(const std::string& tag, const std::string& markdown, int64_t step, double wall_time);
// TFRecord framing of one payload.
std::string frame_record(const std::string& payload);
uint32_t masked_crc32c(const std::string& data);

class TensorBoardWriter {
 public:
  // Creates `dir` and a new events.out.tfevents.<time>.<host> file in it.
  explicit TensorBoardWriter(const std::string& dir);
  void add_scalar(const std::string& tag, double value, int64_t step);
  void add_histogram(const std::string& tag, const std::vector<double>& values, int64_t step);
  // Markdown shown by TensorBoard's text plugin (tables render as tables).
  void add_text(const std::string& tag, const std::string& markdown, int64_t step);
  void flush();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace dsforge::log
