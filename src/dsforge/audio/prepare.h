// `dsforge audio prepare`: a folder of labelled clips -> train/val/test shards at one sample rate.
//
// Input layout: IN/<class>/<file> (any depth below the class folder); the speaker is the file name up
// to its first '_' (the Speech Commands convention `<speaker>_nohash_0.wav`, and `audio synth`'s
// `<voice>_s130_p30_clean.wav`). Each clip is decoded (libsndfile), mixed to mono, resampled to `rate`,
// its leading and trailing silence trimmed and its loudness normalised. Unreadable, empty, silent and
// too-short files are counted and skipped with their reason. The split holds out whole speakers
// (seeded): test and validation speakers never appear in training.
//
// Output: OUT/{train,val,test}.safetensors (samples f32 concatenated, offsets i64 [n + 1], labels i64,
// speakers i64; the rate, classes, speaker names and source files in the metadata) and OUT/audio.json:
// classes, speakers per split, counts, duration statistics, per-class counts, skipped files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsforge::audio {

struct PrepareOptions {
  int64_t rate = 16000;
  bool trim = true;
  double trim_db = 40.0;          // silence: frames this far below the loudest
  double target_dbfs = -20.0;     // loudness (RMS); peaks kept below 0.99
  double min_seconds = 0.05;      // shorter clips (after trimming) are skipped
  double max_seconds = 0.0;       // longer clips are cut; 0 = keep whole
  double val_fraction = 0.1;      // of speakers (at least one each when > 0 and there are enough)
  double test_fraction = 0.2;
  std::vector<std::string> test_speakers;  // explicit held-out speakers (then test_fraction is unused)
  std::vector<std::string> val_speakers;
  uint64_t seed = 0;
  int threads = 0;                // 0 = all cores
};

struct PreparedSplit {
  std::string name;
  int64_t clips = 0;
  double seconds = 0, min_seconds = 0, max_seconds = 0;
  std::vector<std::string> speakers;
};
struct PrepareResult {
  std::vector<std::string> classes;
  std::vector<PreparedSplit> splits;                        // train, val, test
  std::vector<std::pair<std::string, std::string>> skipped;  // file, reason (the reason names the file)
  int64_t files = 0;
};

PrepareResult prepare_audio(const std::string& input_dir, const std::string& out_dir, const PrepareOptions& opt);
std::string prepare_table(const PrepareResult& r);

// One split read back: clip i is samples[offsets[i], offsets[i + 1]).
struct AudioSplit {
  int64_t rate = 0;
  std::vector<float> samples;
  std::vector<int64_t> offsets, labels, speakers;
  std::vector<std::string> classes, speaker_names;
  std::vector<std::string> sources;  // each clip's file relative to the input folder (empty in folders prepared before it was kept)
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  std::vector<float> clip(int64_t i) const {
    return {samples.begin() + offsets[static_cast<size_t>(i)], samples.begin() + offsets[static_cast<size_t>(i) + 1]};
  }
};
// CheckpointError naming the file when it is missing, corrupt or inconsistent.
AudioSplit load_audio_split(const std::string& prepared_dir, const std::string& split);

}  // namespace dsforge::audio
