// Audio: file io (libsndfile), resampling, loudness, trimming and noise mixing against hand-computed
// values; spectrogram/mel/log-mel/MFCC and resampling against torchaudio 0.13 (python3-torchaudio, skipped
// when absent); `audio prepare` splitting by speaker and counting what it skips; `audio synth`.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "dsforge/audio/audio_io.h"
#include "dsforge/audio/augment.h"
#include "dsforge/audio/dsp.h"
#include "dsforge/audio/features.h"
#include "dsforge/audio/prepare.h"
#include "dsforge/audio/synth.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "test_util.h"

using namespace dsforge;
using namespace dsforge::audio;

namespace {

std::vector<float> tone(double hz, double seconds, int64_t rate, double amplitude = 0.5) {
  std::vector<float> x(static_cast<size_t>(seconds * static_cast<double>(rate)));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(amplitude * std::sin(2 * M_PI * hz * static_cast<double>(i) / static_cast<double>(rate)));
  return x;
}

// A chirp with a little seeded noise: a signal with energy in every band.
std::vector<float> chirp(double seconds, int64_t rate, uint64_t seed) {
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::normal_distribution<double> n(0.0, 0.02);
  std::vector<float> x(static_cast<size_t>(seconds * static_cast<double>(rate)));
  for (size_t i = 0; i < x.size(); ++i) {
    const double t = static_cast<double>(i) / static_cast<double>(rate);
    x[i] = static_cast<float>(0.4 * std::sin(2 * M_PI * (100 * t + 1500 * t * t)) + n(rng));
  }
  return x;
}

std::vector<float> read_f32(const std::string& path) {
  const std::string bytes = read_file(path);
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

// max |a - b| / max |b|
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

bool have_torchaudio() { return std::system("/usr/bin/python3 -c 'import torchaudio' >/dev/null 2>&1") == 0; }

}  // namespace

TEST(AudioIo, WavRoundTripAndBadFilesNameThemselves) {
  TempDir dir;
  const std::string wav = path_join(dir.path, "a.wav");
  const auto x = tone(440, 0.25, 8000);
  write_wav(wav, x, 8000);
  const Clip c = read_audio(wav);
  EXPECT_EQ(c.rate, 8000);
  EXPECT_EQ(c.channels, 1);
  ASSERT_EQ(c.samples.size(), x.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(c.samples[i], x[i], 1.0 / 32768 + 1e-7);
  EXPECT_NE(c.format.find("WAV"), std::string::npos) << c.format;

  write_file_atomic(path_join(dir.path, "junk.wav"), std::string(300, 'x'));
  EXPECT_THROW_MSG(read_audio(path_join(dir.path, "junk.wav")), DataError, "junk.wav: cannot read audio");
  write_file_atomic(path_join(dir.path, "empty.flac"), "");
  EXPECT_THROW_MSG(read_audio(path_join(dir.path, "empty.flac")), DataError, "empty.flac");
  write_wav(path_join(dir.path, "none.wav"), {}, 8000);  // a valid header with no frames
  EXPECT_THROW_MSG(read_audio(path_join(dir.path, "none.wav")), DataError, "none.wav: no samples");
  // Truncated: the header promises more frames than the file holds.
  const std::string full = read_file(wav);
  write_file_atomic(path_join(dir.path, "cut.wav"), full.substr(0, full.size() / 2));
  try {
    const Clip cut = read_audio(path_join(dir.path, "cut.wav"));
    EXPECT_LT(cut.samples.size(), x.size());  // libsndfile may report the frames actually present
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("cut.wav"), std::string::npos);
  }
  EXPECT_TRUE(is_audio_file_name("x/y.FLAC"));
  EXPECT_FALSE(is_audio_file_name("x/readme.txt"));
}

TEST(AudioDsp, ResampleKeepsAToneAndTheLength) {
  const auto x = tone(440, 0.5, 48000);
  const auto y = resample(x, 48000, 16000);
  EXPECT_EQ(y.size(), static_cast<size_t>(std::ceil(16000.0 * x.size() / 48000)));
  const auto want = tone(440, 0.5, 16000);
  double worst = 0;
  for (size_t i = 200; i + 200 < y.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(y[i]) - want[i]));
  EXPECT_LT(worst, 5e-3);  // away from the zero-padded ends, the tone is reproduced
  EXPECT_EQ(resample(x, 16000, 16000), x);
  const auto up = resample(tone(440, 0.1, 22050), 22050, 44100);
  EXPECT_EQ(up.size(), 2 * static_cast<size_t>(0.1 * 22050));
  // A tone above the new Nyquist frequency is filtered out.
  const auto high = resample(tone(7000, 0.5, 48000), 48000, 8000);
  double peak = 0;
  for (size_t i = 100; i + 100 < high.size(); ++i) peak = std::max(peak, std::fabs(static_cast<double>(high[i])));
  EXPECT_LT(peak, 0.01);
  EXPECT_THROW_MSG(resample(x, 0, 16000), ConfigError, "rates");
}

TEST(AudioDsp, LoudnessTrimAndSnrMatchTheirDefinitions) {
  const auto x = tone(300, 0.5, 16000, 0.05);
  const auto y = normalize_loudness(x, -20.0);
  EXPECT_NEAR(10 * std::log10(mean_power(y)), -20.0, 1e-4);
  // A loud clip is held below the peak.
  const auto loud = normalize_loudness(tone(300, 0.5, 16000, 0.01), 0.0, 0.9);
  float peak = 0;
  for (float v : loud) peak = std::max(peak, std::fabs(v));
  EXPECT_NEAR(peak, 0.9, 1e-4);

  // 0.3 s silence, 0.4 s tone, 0.3 s silence; frames of 10 ms and a 20 ms margin.
  std::vector<float> s(4800, 0.0f);
  const auto t = tone(500, 0.4, 16000);
  s.insert(s.end(), t.begin(), t.end());
  s.insert(s.end(), 4800, 0.0f);
  const auto trimmed = trim_silence(s, 16000, 40.0, 10.0, 20.0);
  EXPECT_EQ(trimmed.size(), t.size() + 2 * 320);
  EXPECT_TRUE(trim_silence(std::vector<float>(1000, 0.0f), 16000).empty());

  std::mt19937 rng(3);
  std::normal_distribution<double> n(0.0, 1.0);
  std::vector<float> noise(5000);
  for (float& v : noise) v = static_cast<float>(n(rng));
  const auto speech = tone(200, 1.0, 16000);
  const auto mixed = mix_at_snr(speech, noise, 10.0);
  std::vector<float> added(mixed.size());
  for (size_t i = 0; i < mixed.size(); ++i) added[i] = mixed[i] - speech[i];
  EXPECT_NEAR(10 * std::log10(mean_power(speech) / mean_power(added)), 10.0, 1e-3);
}

TEST(AudioFeatures, HandCheckedShapesPeaksAndErrors) {
  FeatureOptions o;  // 16 kHz, n_fft 400, hop 200
  const FeatureExtractor fx(o);
  // A tone on bin 25 (25 * 16000 / 400 = 1000 Hz): the spectrogram peaks there in every frame.
  const auto x = tone(1000, 0.5, 16000);
  const Features s = fx.spectrogram(x);
  EXPECT_EQ(s.rows, 201);
  EXPECT_EQ(s.frames, 1 + static_cast<int64_t>(x.size()) / 200);
  for (int64_t t = 2; t + 2 < s.frames; ++t) {
    int64_t best = 0;
    for (int64_t f = 0; f < s.rows; ++f)
      if (s.at(f, t) > s.at(best, t)) best = f;
    EXPECT_EQ(best, 25);
    // Parseval for a bin-centred sine under a periodic Hann window: |X[k]|^2 = (A N / 4)^2.
    EXPECT_NEAR(s.at(25, t), std::pow(0.5 * 400 / 4, 2), 1e-2 * std::pow(0.5 * 400 / 4, 2));
  }
  // The mel filters of the HTK scale: each triangle peaks at 1 on its centre frequency when one lies on a bin.
  const auto fb = mel_filterbank(201, 0, 8000, 128, 16000, "", "htk");
  for (int64_t m = 0; m < 128; ++m) {
    double top = 0;
    for (int64_t f = 0; f < 201; ++f) top = std::max(top, fb[static_cast<size_t>(f * 128 + m)]);
    EXPECT_LE(top, 1.0 + 1e-12);
  }
  const Features c = fx.mfcc(x);
  EXPECT_EQ(c.rows, 40);
  EXPECT_EQ(c.frames, s.frames);
  EXPECT_THROW_MSG(fx.mfcc(std::vector<float>(150, 0.1f)), DataError, "shorter than one frame");
  FeatureOptions bad;
  bad.n_mfcc = 200;
  EXPECT_THROW_MSG(FeatureExtractor{bad}, ConfigError, "n_mfcc 200");
  bad = {};
  bad.f_max = 9000;
  EXPECT_THROW_MSG(FeatureExtractor{bad}, ConfigError, "Nyquist");
  EXPECT_THROW_MSG(fx.compute("cqt", x), ConfigError, "cqt");
}

TEST(AudioFeatures, EqualTorchaudioWithin1e4) {
  if (!have_torchaudio()) GTEST_SKIP() << "/usr/bin/python3 with torchaudio (Debian python3-torchaudio) not installed";
  TempDir dir;
  struct Case {
    int64_t file_rate, rate;
    FeatureOptions o;
  };
  std::vector<Case> cases(3);
  cases[0] = {16000, 16000, FeatureOptions{}};
  cases[1].file_rate = 22050;  // resampled to 16 kHz first, then other parameters
  cases[1].rate = 16000;
  cases[1].o.n_fft = 512;
  cases[1].o.win_length = 400;
  cases[1].o.hop_length = 160;
  cases[1].o.n_mels = 64;
  cases[1].o.n_mfcc = 13;
  cases[1].o.f_min = 20;
  cases[1].o.f_max = 7600;
  cases[2].file_rate = 8000;
  cases[2].rate = 8000;
  cases[2].o.sample_rate = 8000;
  cases[2].o.n_fft = 256;
  cases[2].o.n_mels = 40;
  cases[2].o.mel_scale = "slaney";
  cases[2].o.mel_norm = "slaney";
  cases[2].o.top_db = -1;
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& cs = cases[k];
    FeatureOptions o = cs.o;
    o.sample_rate = cs.rate;
    const std::string wav = path_join(dir.path, fmt("c", k, ".wav")), params = path_join(dir.path, fmt("c", k, ".json"));
    write_wav(wav, chirp(1.3, cs.file_rate, k), cs.file_rate);
    nlohmann::json p = {{"sample_rate", cs.rate}, {"n_fft", o.n_fft}, {"win_length", o.win_length}, {"hop_length", o.hop_length},
                        {"n_mels", o.n_mels}, {"n_mfcc", o.n_mfcc}, {"f_min", o.f_min}, {"f_max", o.f_max},
                        {"top_db", o.top_db}, {"mel_scale", o.mel_scale}, {"mel_norm", o.mel_norm},
                        {"resample_to", cs.rate != cs.file_rate ? cs.rate : 0}};
    write_file_atomic(params, p.dump());
    const std::string prefix = path_join(dir.path, fmt("ref", k));
    ASSERT_EQ(std::system(("/usr/bin/python3 " + source_dir() + "/tests/reference/audio_ref.py features " + params + " " + wav + " " +
                           prefix).c_str()),
              0);
    Clip c = read_audio(wav);
    std::vector<float> x = cs.rate != cs.file_rate ? resample(c.samples, c.rate, cs.rate) : c.samples;
    const std::vector<float> x_ref = read_f32(prefix + ".resampled.f32");
    EXPECT_LT(relative_error(x, x_ref), 1e-5) << "case " << k;
    x = x_ref;  // the features compared on the same input
    const FeatureExtractor fx(o);
    FeatureOptions mo = o;
    mo.top_db = 80;  // torchaudio's MFCC always floors at 80 dB
    // The reference's tensors are [rows, frames], as ours.
    const double e_spec = relative_error(fx.spectrogram(x).data, read_f32(prefix + ".spectrogram.f32"));
    const double e_mel = relative_error(fx.mel_spectrogram(x).data, read_f32(prefix + ".mel.f32"));
    const double e_logmel = relative_error(fx.log_mel(x).data, read_f32(prefix + ".logmel.f32"));
    const double e_mfcc = relative_error(FeatureExtractor(mo).mfcc(x).data, read_f32(prefix + ".mfcc.f32"));
    std::printf("case %zu: max relative difference: resample %.2e spectrogram %.2e mel %.2e log-mel %.2e MFCC %.2e\n", k,
                cs.rate != cs.file_rate ? relative_error(resample(c.samples, c.rate, cs.rate), x) : 0.0, e_spec, e_mel, e_logmel, e_mfcc);
    EXPECT_LT(e_spec, 1e-4) << "case " << k;
    EXPECT_LT(e_mel, 1e-4) << "case " << k;
    EXPECT_LT(e_logmel, 1e-4) << "case " << k;
    EXPECT_LT(e_mfcc, 1e-4) << "case " << k;
  }
}

TEST(AudioPrepare, SplitsBySpeakerAndCountsWhatItSkips) {
  TempDir dir;
  const std::string in = path_join(dir.path, "in"), out = path_join(dir.path, "out");
  const std::vector<std::string> classes = {"high", "low"};
  const std::vector<std::string> speakers = {"ann", "bob", "cid", "dee", "eve", "fay"};
  for (size_t c = 0; c < classes.size(); ++c) {
    make_dirs(path_join(in, classes[c]));
    for (size_t s = 0; s < speakers.size(); ++s) {
      // 0.1 s of silence around 0.3 s of tone at 22,050 Hz: resampled to 16 kHz, trimmed, normalised.
      std::vector<float> x(2205, 0.0f);
      const auto t = tone(c == 0 ? 2000 : 300, 0.3, 22050, 0.1 + 0.05 * static_cast<double>(s));
      x.insert(x.end(), t.begin(), t.end());
      x.insert(x.end(), 2205, 0.0f);
      for (int take = 0; take < 2; ++take)
        write_wav(path_join(in, fmt(classes[c], "/", speakers[s], "_take", take, ".wav")), x, 22050);
    }
  }
  write_file_atomic(path_join(in, "high/broken_0.wav"), "RIFF....not really");
  write_wav(path_join(in, "low/quiet_0.wav"), std::vector<float>(8000, 0.0f), 16000);
  write_file_atomic(path_join(in, "low/notes.txt"), "recorded on a Tuesday\n");
  PrepareOptions opt;
  opt.val_fraction = 1.0 / 6;
  opt.test_fraction = 2.0 / 6;
  const PrepareResult r = prepare_audio(in, out, opt);
  EXPECT_EQ(r.classes, classes);
  EXPECT_EQ(r.files, 2 * 6 * 2 + 3);
  EXPECT_EQ(r.skipped.size(), 3u);
  ASSERT_EQ(r.splits.size(), 3u);
  EXPECT_EQ(r.splits[0].speakers.size(), 3u);
  EXPECT_EQ(r.splits[1].speakers.size(), 1u);
  EXPECT_EQ(r.splits[2].speakers.size(), 2u);
  std::set<std::string> seen;
  for (const auto& s : r.splits)
    for (const auto& sp : s.speakers) EXPECT_TRUE(seen.insert(sp).second) << sp << " is in two splits";
  EXPECT_EQ(r.splits[0].clips + r.splits[1].clips + r.splits[2].clips, 24);
  const AudioSplit test = load_audio_split(out, "test");
  EXPECT_EQ(test.rate, 16000);
  EXPECT_EQ(test.size(), 2 * 2 * 2);
  for (int64_t i = 0; i < test.size(); ++i) {
    const auto clip = test.clip(i);
    // Trimmed to the 0.3 s tone plus two 20 ms margins at most; loudness -20 dBFS.
    EXPECT_LE(clip.size(), static_cast<size_t>(0.3 * 16000 + 2 * 320 + 160));
    EXPECT_GE(clip.size(), static_cast<size_t>(0.3 * 16000 - 160));
    EXPECT_NEAR(10 * std::log10(mean_power(clip)), -20.0, 0.5);
  }
  const auto j = nlohmann::json::parse(read_file(path_join(out, "audio.json")));
  EXPECT_EQ(j["skipped"].size(), 3u);
  EXPECT_EQ(j["splits"]["train"]["per_class"]["high"], 6);
  // Explicit held-out speakers.
  opt.test_speakers = {"ann", "bob"};
  opt.val_speakers = {"cid"};
  const PrepareResult e = prepare_audio(in, path_join(dir.path, "out2"), opt);
  EXPECT_EQ(e.splits[2].speakers, (std::vector<std::string>{"ann", "bob"}));
  opt.test_speakers = {"zed"};
  EXPECT_THROW_MSG(prepare_audio(in, path_join(dir.path, "out3"), opt), ConfigError, "'zed'");
  std::filesystem::remove_all(path_join(out, "test.safetensors"));
  EXPECT_THROW_MSG(load_audio_split(out, "test"), CheckpointError, "test.safetensors: missing");
  EXPECT_THROW_MSG(prepare_audio(path_join(in, "low/notes.txt"), out, {}), DataError, "not a folder");
}

TEST(AudioSynth, EspeakWordsWithNoiseAreDeterministic) {
  if (std::system("espeak-ng --version >/dev/null 2>&1") != 0 || std::system("sox --version >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "espeak-ng or sox not installed";
  TempDir dir;
  SynthOptions o;
  o.words = {"seven", "dog"};
  o.voices = {"en+m1", "en+f2"};
  o.speeds = {150};
  o.pitches = {40, 60};
  const std::string a = path_join(dir.path, "a"), b = path_join(dir.path, "b");
  const SynthResult r = synthesize_spoken_words(a, o);
  EXPECT_EQ(r.clips, 8);
  EXPECT_EQ(r.clean + r.noisy, 8);
  synthesize_spoken_words(b, o);
  for (const auto& e : std::filesystem::recursive_directory_iterator(a)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = std::filesystem::relative(e.path(), a).string();
    EXPECT_EQ(read_file(e.path().string()), read_file(path_join(b, rel))) << rel;
    if (e.path().extension() == ".wav") {
      const Clip c = read_audio(e.path().string());
      EXPECT_GT(c.samples.size(), 22050u / 5) << rel;  // at least 0.2 s of speech
    }
  }
  EXPECT_EQ(synthesize_spoken_words(a, o).clips, 8);  // reused
  o.pitches = {50};
  EXPECT_THROW_MSG(synthesize_spoken_words(a, o), IoError, "other settings");
  o.voices = {"no-such-voice"};
  EXPECT_THROW_MSG(synthesize_spoken_words(path_join(dir.path, "c"), o), ConfigError, "no voice 'no-such-voice'");
  o.voices = {"en+nosuchvariant"};
  EXPECT_THROW_MSG(synthesize_spoken_words(path_join(dir.path, "c"), o), ConfigError, "variant 'nosuchvariant' unknown");
  // The prepared set holds out whole voices.
  PrepareOptions po;
  po.test_speakers = {"en-m1"};
  po.val_fraction = 0;
  const PrepareResult p = prepare_audio(a, path_join(dir.path, "prepared"), po);
  EXPECT_EQ(p.classes, (std::vector<std::string>{"dog", "seven"}));
  EXPECT_EQ(p.splits[2].clips, 4);
  EXPECT_EQ(p.splits[0].speakers, (std::vector<std::string>{"en-f2"}));
}

TEST(AudioCli, BadInputIsOneClearLine) {
  TempDir dir;
  write_file_atomic(path_join(dir.path, "junk.wav"), std::string(100, 'x'));
  CliRun f = run_cli("audio features -i " + path_join(dir.path, "junk.wav") + " --kind mfcc", dir.path);
  EXPECT_NE(f.code, 0);
  EXPECT_NE(f.err.find("junk.wav: cannot read audio"), std::string::npos) << f.err;
  write_wav(path_join(dir.path, "short.wav"), tone(440, 0.01, 16000), 16000);  // 160 samples: less than one frame
  CliRun s = run_cli("audio features -i " + path_join(dir.path, "short.wav"), dir.path);
  EXPECT_NE(s.code, 0);
  EXPECT_NE(s.err.find("shorter than one frame"), std::string::npos) << s.err;
  make_dirs(path_join(dir.path, "empty"));
  CliRun p = run_cli("audio prepare -i " + path_join(dir.path, "empty") + " -o " + path_join(dir.path, "out"), dir.path);
  EXPECT_NE(p.code, 0);
  EXPECT_NE(p.err.find("no class subfolder"), std::string::npos) << p.err;
  write_file_atomic(path_join(dir.path, "mono.de"), "Ein Hund.\n");
  make_dirs(path_join(dir.path, "m"));
  CliRun b = run_cli("data back-translate --model " + path_join(dir.path, "m") + " -i " + path_join(dir.path, "mono.de") + " -o " +
                         path_join(dir.path, "bt") + " --decode greedy --temperature 0.5",
                     dir.path);
  EXPECT_NE(b.code, 0);
  EXPECT_NE(b.err.find("--temperature goes with --decode sample"), std::string::npos) << b.err;
}

TEST(AudioAugment, ShiftSpeedNoiseAndMasksDoWhatTheySayAndAreSeeded) {
  const std::vector<float> x = {1, 2, 3, 4, 5};
  EXPECT_EQ(time_shift(x, 2), (std::vector<float>{0, 0, 1, 2, 3}));
  EXPECT_EQ(time_shift(x, -1), (std::vector<float>{2, 3, 4, 5, 0}));
  // Speed 1.25: 16,000 samples become ceil(16000 * 100 / 125) = 12,800; a 400 Hz tone becomes 500 Hz.
  const auto fast = change_speed(tone(400, 1.0, 16000), 1.25);
  EXPECT_EQ(fast.size(), 12800u);
  const auto want = tone(500, 0.8, 16000);
  double worst = 0;
  for (size_t i = 200; i + 200 < fast.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(fast[i]) - want[i]));
  EXPECT_LT(worst, 5e-3);
  EXPECT_THROW_MSG(change_speed(x, 3.0), ConfigError, "speed factor 3");

  WaveAugment a;
  a.max_shift_seconds = 0.05;
  a.speed_min = 0.9;
  a.speed_max = 1.1;
  a.snr_db = 10;
  const auto clip = tone(300, 0.5, 16000);
  const auto y1 = augment_wave(clip, 16000, a, 7), y2 = augment_wave(clip, 16000, a, 7), y3 = augment_wave(clip, 16000, a, 8);
  EXPECT_EQ(y1, y2);
  EXPECT_NE(y1, y3);
  const double factor = static_cast<double>(clip.size()) / static_cast<double>(y1.size());
  EXPECT_GE(factor, 0.9 - 1e-3);
  EXPECT_LE(factor, 1.1 + 1e-3);
  WaveAugment noise_only;
  noise_only.snr_db = 5;
  const auto noisy = augment_wave(clip, 16000, noise_only, 1);
  std::vector<float> added(clip.size());
  for (size_t i = 0; i < clip.size(); ++i) added[i] = noisy[i] - clip[i];
  EXPECT_NEAR(10 * std::log10(mean_power(clip) / mean_power(added)), 5.0, 1e-3);

  Features f{10, 20, std::vector<float>(200)};
  for (size_t i = 0; i < f.data.size(); ++i) f.data[i] = static_cast<float>(i % 7);
  Features g = f;
  SpecAugment s;
  s.freq_masks = 1;
  s.freq_width = 3;
  s.time_masks = 2;
  s.time_width = 4;
  const int64_t masked = spec_augment(g, s, 3);
  // Rows and frames entirely at the mean are the masked ones (no row or frame of f is constant).
  double m = 0;
  for (float v : f.data) m += v;
  const auto mu = static_cast<float>(m / static_cast<double>(f.data.size()));
  std::vector<bool> row(10, true), frame(20, true);
  for (int64_t r = 0; r < 10; ++r)
    for (int64_t t = 0; t < 20; ++t) {
      row[static_cast<size_t>(r)] = row[static_cast<size_t>(r)] && g.at(r, t) == mu;
      frame[static_cast<size_t>(t)] = frame[static_cast<size_t>(t)] && g.at(r, t) == mu;
    }
  const int64_t R = std::count(row.begin(), row.end(), true), T = std::count(frame.begin(), frame.end(), true);
  EXPECT_EQ(masked, R * 20 + T * 10 - R * T);
  EXPECT_LE(R, 3);
  EXPECT_LE(T, 2 * 4);
  for (int64_t r = 0; r < 10; ++r)
    for (int64_t t = 0; t < 20; ++t)
      if (!row[static_cast<size_t>(r)] && !frame[static_cast<size_t>(t)]) {
        EXPECT_EQ(g.at(r, t), f.at(r, t));
      }
  Features h = f;
  EXPECT_EQ(spec_augment(h, s, 3), masked);
  EXPECT_EQ(h.data, g.data);
}
