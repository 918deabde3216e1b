// The built-in spoken-words data set: synthetic speech made on the machine by Debian's espeak-ng (the
// ten digits and thirty common nouns, several voices, speeds and pitches), with background noise made
// by sox (white, pink and brown) mixed in at set signal-to-noise ratios. Generation is deterministic
// (seeded noise choice and offsets; espeak-ng's synthesis and sox -R are deterministic).
//
// Layout: OUT/<word>/<voice>_s<speed>_p<pitch>_<noise>.wav (22,050 Hz, espeak-ng's rate), the voice
// first so that `audio prepare` can hold out whole voices; OUT/synth.json records the settings.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsforge::audio {

struct SynthOptions {
  std::vector<std::string> words;   // empty = the built-in 40 (zero..nine and 30 nouns with WordNet glosses)
  std::vector<std::string> voices;  // espeak-ng voice+variant names; empty = 10 English voices
  std::vector<int64_t> speeds{130, 170};  // words per minute
  std::vector<int64_t> pitches{30, 70};   // 0..99
  std::vector<double> snrs{20.0, 10.0};   // noisy takes' SNRs (dB); a third of takes stay clean
  uint64_t seed = 0;
  int threads = 0;                  // 0 = all cores
};

const std::vector<std::string>& default_synth_words();
const std::vector<std::string>& default_synth_voices();

struct SynthResult {
  int64_t clips = 0, clean = 0, noisy = 0;
  double seconds = 0;
};
// ConfigError naming the missing program when espeak-ng or sox is absent; the folder appears whole
// (staged, then renamed) and an existing complete one (synth.json with the same settings) is reused.
SynthResult synthesize_spoken_words(const std::string& out_dir, const SynthOptions& opt);

}  // namespace dsforge::audio
