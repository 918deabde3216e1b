#include "dsforge/audio/audio_io.h"

#include <sndfile.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace dsforge::audio {
namespace {

std::string format_name(int format) {
  SF_FORMAT_INFO major{}, minor{};
  major.format = format & SF_FORMAT_TYPEMASK;
  minor.format = format & SF_FORMAT_SUBMASK;
  std::string out = sf_command(nullptr, SFC_GET_FORMAT_INFO, &major, sizeof major) == 0 && major.extension
                        ? std::string(major.extension)
                        : "audio";
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (sf_command(nullptr, SFC_GET_FORMAT_INFO, &minor, sizeof minor) == 0 && minor.name) out += std::string(" ") + minor.name;
  return out;
}

struct SndFile {
  SNDFILE* f = nullptr;
  ~SndFile() {
    if (f) sf_close(f);
  }
};

}  // namespace

Clip read_audio(const std::string& path) {
  if (std::filesystem::is_directory(path)) throw DataError(fmt(path, ": a folder, not an audio file"));
  SF_INFO info{};
  SndFile file;
  file.f = sf_open(path.c_str(), SFM_READ, &info);
  if (!file.f) throw DataError(fmt(path, ": cannot read audio: ", sf_strerror(nullptr)));
  if (info.frames <= 0 || info.channels <= 0) throw DataError(fmt(path, ": no samples"));
  if (info.samplerate <= 0) throw DataError(fmt(path, ": sample rate ", info.samplerate));
  Clip c;
  c.rate = info.samplerate;
  c.channels = info.channels;
  c.format = format_name(info.format);
  std::vector<float> interleaved(static_cast<size_t>(info.frames) * static_cast<size_t>(info.channels));
  const sf_count_t got = sf_readf_float(file.f, interleaved.data(), info.frames);
  if (got <= 0) throw DataError(fmt(path, ": no samples could be decoded (", sf_strerror(file.f), ")"));
  if (got < info.frames)  // a truncated file: the header promises more than the data holds
    throw DataError(fmt(path, ": truncated: ", got, " of ", info.frames, " frames decoded"));
  c.samples.resize(static_cast<size_t>(got));
  const int ch = info.channels;
  for (sf_count_t i = 0; i < got; ++i) {
    float sum = 0;
    for (int k = 0; k < ch; ++k) sum += interleaved[static_cast<size_t>(i * ch + k)];
    c.samples[static_cast<size_t>(i)] = sum / static_cast<float>(ch);
  }
  return c;
}

void write_wav(const std::string& path, const std::vector<float>& samples, int64_t rate) {
  if (rate <= 0) throw ConfigError(fmt(path, ": sample rate ", rate, " must be positive"));
  const std::string tmp = path + ".tmp";
  SF_INFO info{};
  info.samplerate = static_cast<int>(rate);
  info.channels = 1;
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  {
    SndFile file;
    file.f = sf_open(tmp.c_str(), SFM_WRITE, &info);
    if (!file.f) throw IoError(fmt(tmp, ": cannot create: ", sf_strerror(nullptr)));
    sf_command(file.f, SFC_SET_CLIPPING, nullptr, SF_TRUE);
    if (sf_writef_float(file.f, samples.data(), static_cast<sf_count_t>(samples.size())) != static_cast<sf_count_t>(samples.size()))
      throw IoError(fmt(tmp, ": write failed: ", sf_strerror(file.f)));
    sf_write_sync(file.f);
  }
  std::filesystem::rename(tmp, path);
}

bool is_audio_file_name(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* e : {".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".caf", ".w64"})
    if (ext == e) return true;
  return false;
}

}  // namespace dsforge::audio
