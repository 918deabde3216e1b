#include "dsforge/audio/synth.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "dsforge/audio/audio_io.h"
#include "dsforge/audio/dsp.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/splitmix.h"
#include "dsforge/core/text.h"

extern char** environ;

namespace dsforge::audio {
namespace {

// Runs argv[0] from PATH with stdout and stderr discarded; its exit status (127 when it cannot start).
int run_quiet(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return 127;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

void require_program(const std::string& name, const std::vector<std::string>& probe) {
  if (run_quiet(probe) != 0)
    throw ConfigError(fmt("audio synth: ", name, " is not installed or does not run (apt-get install ", name,
                          "; scripts/setup.sh installs it)"));
}

// Column `col` (0-based, whitespace-separated) of every line but the header of a command's output.
std::set<std::string> output_column(const std::string& command, size_t col) {
  std::set<std::string> out;
  FILE* p = popen(command.c_str(), "r");
  if (!p) return out;
  char line[1024];
  bool header = true;
  while (std::fgets(line, sizeof line, p)) {
    if (header) {
      header = false;
      continue;
    }
    std::istringstream words(line);
    std::string w;
    for (size_t i = 0; i <= col && words >> w; ++i)
      if (i == col) out.insert(w);
  }
  pclose(p);
  return out;
}

// espeak-ng falls back to its default voice for an unknown name, silently: check the names first.
void check_voices(const std::vector<std::string>& voices) {
  std::set<std::string> languages = output_column("espeak-ng --voices 2>/dev/null", 1);  // en-gb, en-us, ...
  for (const auto& f : output_column("espeak-ng --voices 2>/dev/null", 4))  // file names: gmw/en -> en
    languages.insert(f.substr(f.find_last_of('/') + 1));
  std::set<std::string> variants;
  for (const auto& f : output_column("espeak-ng --voices=variant 2>/dev/null", 4))
    variants.insert(lower_ascii(f.substr(f.find_last_of('/') + 1)));
  for (const auto& v : voices) {
    const size_t plus = v.find('+');
    const std::string lang = v.substr(0, plus), variant = plus == std::string::npos ? "" : lower_ascii(v.substr(plus + 1));
    if (!languages.count(lang) || (!variant.empty() && !variants.count(variant)))
      throw ConfigError(fmt("audio synth: espeak-ng has no voice '", v, "' (language", languages.count(lang) ? "" : " '" + lang + "' unknown",
                            !variant.empty() && !variants.count(variant) ? ", variant '" + variant + "' unknown" : "",
                            "); `espeak-ng --voices` and `espeak-ng --voices=variant` list them"));
  }
}

std::string file_safe(std::string s) {
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '-';
  return s;
}

}  // namespace

const std::vector<std::string>& default_synth_words() {
  static const std::vector<std::string> words = {
      "zero",  "one",   "two",   "three", "four",  "five",  "six",    "seven", "eight", "nine",
      "dog",   "cat",   "bird",  "tree",  "house", "water", "fire",   "river", "apple", "bread",
      "chair", "table", "book",  "music", "light", "night", "sun",    "moon",  "star",  "rain",
      "snow",  "wind",  "stone", "ship",  "road",  "door",  "horse",  "fish",  "flower", "garden"};
  return words;
}

const std::vector<std::string>& default_synth_voices() {
  static const std::vector<std::string> voices = {"en+m1", "en+m2", "en+m3", "en+m4", "en+m5",
                                                  "en+f1", "en+f2", "en+f3", "en+f4", "en-us+m6"};
  return voices;
}

SynthResult synthesize_spoken_words(const std::string& out_dir, const SynthOptions& options) {
  SynthOptions opt = options;
  if (opt.words.empty()) opt.words = default_synth_words();
  if (opt.voices.empty()) opt.voices = default_synth_voices();
  if (opt.speeds.empty() || opt.pitches.empty()) throw ConfigError("audio synth: give at least one speed and one pitch");
  for (int64_t s : opt.speeds)
    if (s < 80 || s > 450) throw ConfigError(fmt("audio synth: speed ", s, " words per minute is outside espeak-ng's 80..450"));
  for (int64_t p : opt.pitches)
    if (p < 0 || p > 99) throw ConfigError(fmt("audio synth: pitch ", p, " is outside 0..99"));
  for (const auto& w : opt.words)
    if (w.empty() || w.find_first_of("/\\\n") != std::string::npos) throw ConfigError(fmt("audio synth: word '", w, "' cannot name a folder"));
  nlohmann::ordered_json settings = {{"words", opt.words}, {"voices", opt.voices}, {"speeds", opt.speeds},
                                     {"pitches", opt.pitches}, {"snrs_db", opt.snrs}, {"seed", opt.seed},
                                     {"synthetic", "espeak-ng speech, sox noise; not recordings of people"}};
  const std::string stamp = path_join(out_dir, "synth.json");
  if (file_exists(stamp)) {
    const auto j = nlohmann::json::parse(read_file(stamp), nullptr, false);
    if (!j.is_discarded() && j.contains("settings") && j["settings"] == nlohmann::json(settings)) {
      log_info("audio synth: reusing ", out_dir);
      return {j.value("clips", int64_t{0}), j.value("clean", int64_t{0}), j.value("noisy", int64_t{0}), 0.0};
    }
    throw IoError(fmt(out_dir, ": holds a synthetic set made with other settings; remove it or choose another --out"));
  }
  require_program("espeak-ng", {"espeak-ng", "--version"});
  require_program("sox", {"sox", "--version"});
  check_voices(opt.voices);

  const auto t0 = std::chrono::steady_clock::now();
  const std::string stage = out_dir + ".partial";
  remove_all(stage);
  make_dirs(stage);
  // Noise beds: 20 s of white, pink and brown noise at espeak-ng's rate; -R makes sox repeatable.
  const int64_t rate = 22050;
  const std::vector<std::string> kinds = {"whitenoise", "pinknoise", "brownnoise"};
  std::vector<std::vector<float>> beds;
  for (const auto& k : kinds) {
    const std::string f = path_join(stage, k + ".wav");
    if (run_quiet({"sox", "-R", "-n", "-r", std::to_string(rate), "-c", "1", "-b", "16", f, "synth", "20", k}) != 0)
      throw Error(fmt("audio synth: sox could not make ", k));
    beds.push_back(read_audio(f).samples);
    std::filesystem::remove(f);
  }

  struct Job {
    std::string word, voice;
    int64_t speed, pitch;
  };
  std::vector<Job> jobs;
  for (const auto& w : opt.words) {
    make_dirs(path_join(stage, w));
    for (const auto& v : opt.voices)
      for (int64_t s : opt.speeds)
        for (int64_t p : opt.pitches) jobs.push_back({w, v, s, p});
  }
  std::atomic<size_t> next{0};
  std::atomic<int64_t> clean{0}, noisy{0};
  std::mutex error_mutex;
  std::string error;  // the first failure; the other workers stop at their next clip
  std::atomic<bool> failed{false};
  auto fail = [&](const std::string& what) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (!failed.exchange(true)) error = what;
  };
  auto worker = [&](int id) {
    try {
      for (size_t i; !failed && (i = next++) < jobs.size();) {
        const Job& j = jobs[i];
        const std::string name = fmt(file_safe(j.voice), "_s", j.speed, "_p", j.pitch);
        const std::string raw = path_join(stage, fmt(".raw", id, ".wav"));
        if (run_quiet({"espeak-ng", "-v", j.voice, "-s", std::to_string(j.speed), "-p", std::to_string(j.pitch), "-w", raw, j.word}) != 0)
          return fail(fmt("espeak-ng failed on voice '", j.voice, "' (word '", j.word, "')"));
        Clip c = read_audio(raw);
        // A third of the takes clean, the rest at one of the SNRs over one noise bed from a seeded offset.
        SplitMix64 rng(opt.seed ^ fnv1a64(fmt(j.word, "|", name)));
        const uint64_t pick = rng.next() % (opt.snrs.size() + std::max<size_t>(1, opt.snrs.size() / 2));
        std::string tag = "clean";
        if (pick < opt.snrs.size()) {
          const size_t kind = rng.next() % beds.size();
          const auto& bed = beds[kind];
          const size_t off = rng.next() % (bed.size() - std::min(bed.size() - 1, c.samples.size()));
          const std::vector<float> noise(bed.begin() + static_cast<long>(off),
                                         bed.begin() + static_cast<long>(std::min(bed.size(), off + c.samples.size())));
          c.samples = mix_at_snr(c.samples, noise, opt.snrs[pick]);
          tag = fmt(kinds[kind].substr(0, kinds[kind].size() - 5), std::llround(opt.snrs[pick]), "db");
          ++noisy;
        } else {
          ++clean;
        }
        write_wav(path_join(path_join(stage, j.word), name + "_" + tag + ".wav"), c.samples, c.rate);
      }
    } catch (const std::exception& e) {
      fail(e.what());
    }
  };
  const int threads = opt.threads > 0 ? opt.threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker, t);
  for (auto& t : pool) t.join();
  if (failed) {
    remove_all(stage);
    throw Error("audio synth: " + error);
  }
  for (int t = 0; t < threads; ++t) std::filesystem::remove(path_join(stage, fmt(".raw", t, ".wav")));

  SynthResult r{static_cast<int64_t>(jobs.size()), clean.load(), noisy.load(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
  nlohmann::ordered_json j = {{"settings", settings}, {"clips", r.clips}, {"clean", r.clean}, {"noisy", r.noisy}, {"rate", rate}};
  write_file_atomic(path_join(stage, "synth.json"), j.dump(2) + "\n");
  publish_dir(stage, out_dir, "audio synth");
  log_info("audio synth: ", r.clips, " clips (", r.clean, " clean, ", r.noisy, " with noise) in ", r.seconds, " s -> ", out_dir);
  return r;
}

}  // namespace dsforge::audio
