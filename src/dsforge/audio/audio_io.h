// Audio files in and out through Debian's libsndfile: WAV, FLAC, OGG/Vorbis (and what else the library
// reads), any sample format it decodes, mixed down to mono float samples in [-1, 1].
//
//   Clip c = read_audio("seven.flac");            // DataError naming the file when it cannot be decoded
//   write_wav("out.wav", resample(c.samples, c.rate, 16000), 16000);
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsforge::audio {

struct Clip {
  std::vector<float> samples;  // mono: the mean of the file's channels
  int64_t rate = 0;            // samples per second
  int channels = 0;            // in the file
  std::string format;          // "WAV 16-bit PCM", "FLAC 24-bit PCM", ...
};

// DataError "<path>: <libsndfile's reason>" for a missing, corrupt or unsupported file, and
// "<path>: no samples" for an empty one.
Clip read_audio(const std::string& path);
// 16-bit PCM WAV (samples clipped to [-1, 1]), written atomically.
void write_wav(const std::string& path, const std::vector<float>& samples, int64_t rate);
// File names libsndfile may read, by extension (wav, flac, ogg, oga, opus, aiff, aif, au, caf, w64).
bool is_audio_file_name(const std::string& path);

}  // namespace dsforge::audio
