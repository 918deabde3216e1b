#include "dsforge/audio/prepare.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "dsforge/audio/audio_io.h"
#include "dsforge/audio/dsp.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/safetensors.h"

namespace fs = std::filesystem;

namespace dsforge::audio {
namespace {

struct Item {
  std::string path, speaker;
  int64_t label = 0;
  std::vector<float> samples;
  std::string reason;  // non-empty: skipped
};

std::string speaker_of(const std::string& path) {
  const std::string stem = fs::path(path).filename().string();
  const size_t us = stem.find('_');
  return us == std::string::npos ? fs::path(path).stem().string() : stem.substr(0, us);
}

void process(Item& it, const PrepareOptions& opt) {
  Clip c;
  try {
    c = read_audio(it.path);
  } catch (const DataError& e) {
    it.reason = e.what();
    return;
  }
  std::vector<float> x = resample(c.samples, c.rate, opt.rate);
  if (opt.trim) x = trim_silence(x, opt.rate, opt.trim_db);
  if (x.empty()) {
    it.reason = fmt(it.path, ": silent");
    return;
  }
  const double seconds = static_cast<double>(x.size()) / static_cast<double>(opt.rate);
  if (seconds < opt.min_seconds) {
    it.reason = fmt(it.path, ": ", seconds, " s of sound, shorter than ", opt.min_seconds, " s");
    return;
  }
  if (opt.max_seconds > 0 && seconds > opt.max_seconds) x.resize(static_cast<size_t>(opt.max_seconds * static_cast<double>(opt.rate)));
  it.samples = normalize_loudness(x, opt.target_dbfs);
}

}  // namespace

PrepareResult prepare_audio(const std::string& input_dir, const std::string& out_dir, const PrepareOptions& opt) {
  if (opt.rate < 1000) throw ConfigError(fmt("audio prepare: rate ", opt.rate, " Hz is too low (at least 1000)"));
  if (opt.val_fraction < 0 || opt.test_fraction < 0 || opt.val_fraction + opt.test_fraction >= 1)
    throw ConfigError("audio prepare: val and test fractions must be >= 0 and sum below 1");
  if (!fs::is_directory(input_dir)) throw DataError(fmt(input_dir, ": not a folder (expected one subfolder per class)"));
  PrepareResult r;
  std::vector<Item> items;
  std::vector<fs::path> class_dirs;
  for (const auto& e : fs::directory_iterator(input_dir))
    if (e.is_directory() && e.path().filename().string()[0] != '.') class_dirs.push_back(e.path());
  std::sort(class_dirs.begin(), class_dirs.end());
  for (const auto& dir : class_dirs) {
    std::vector<std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(dir))
      if (e.is_regular_file() && e.path().filename().string()[0] != '.') files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    const auto label = static_cast<int64_t>(r.classes.size());
    bool any = false;
    for (const auto& f : files) {
      ++r.files;
      if (!is_audio_file_name(f)) {
        r.skipped.emplace_back(f, fmt(f, ": not an audio file name (wav, flac, ogg, opus, aiff, au, caf, w64)"));
        continue;
      }
      items.push_back({f, speaker_of(f), label, {}, {}});
      any = true;
    }
    if (any) r.classes.push_back(dir.filename().string());
  }
  if (r.classes.empty()) throw DataError(fmt(input_dir, ": no class subfolder holds an audio file"));

  // Decoding and processing in parallel; the order of the results is the input order.
  std::atomic<size_t> next{0};
  auto worker = [&]() {
    for (size_t i; (i = next++) < items.size();) process(items[i], opt);
  };
  const int threads = opt.threads > 0 ? opt.threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();

  // Speakers -> splits: explicit lists first, else the seeded order of the speakers' hashes.
  std::set<std::string> speaker_set;
  for (const auto& it : items)
    if (it.reason.empty()) speaker_set.insert(it.speaker);
    else r.skipped.emplace_back(it.path, it.reason);
  if (speaker_set.empty()) throw DataError(fmt(input_dir, ": none of ", items.size(), " audio files could be used (see the reasons)"));
  std::vector<std::string> speakers(speaker_set.begin(), speaker_set.end());
  std::map<std::string, int> split_of;  // 0 train, 1 val, 2 test
  for (const auto& s : opt.test_speakers) split_of[s] = 2;
  for (const auto& s : opt.val_speakers) split_of[s] = 1;
  for (const auto& [s, split] : split_of)
    if (!speaker_set.count(s)) throw ConfigError(fmt("audio prepare: held-out speaker '", s, "' has no usable clip"));
  std::vector<std::string> rest;
  for (const auto& s : speakers)
    if (!split_of.count(s)) rest.push_back(s);
  std::sort(rest.begin(), rest.end(), [&](const std::string& a, const std::string& b) {
    return fnv1a64(fmt(opt.seed, ":", a)) < fnv1a64(fmt(opt.seed, ":", b));
  });
  auto share = [&](double f) {
    if (f <= 0) return size_t{0};
    return std::min(rest.size(), std::max<size_t>(1, static_cast<size_t>(std::llround(f * static_cast<double>(speakers.size())))));
  };
  size_t k = 0;
  if (opt.test_speakers.empty())
    for (size_t n = share(opt.test_fraction); n > 0 && rest.size() - k > 1; --n) split_of[rest[k++]] = 2;
  if (opt.val_speakers.empty())
    for (size_t n = share(opt.val_fraction); n > 0 && rest.size() - k > 1; --n) split_of[rest[k++]] = 1;
  for (; k < rest.size(); ++k) split_of[rest[k]] = 0;

  make_dirs(out_dir);
  const char* names[] = {"train", "val", "test"};
  nlohmann::ordered_json splits_json = nlohmann::ordered_json::object();
  for (int s = 0; s < 3; ++s) {
    PreparedSplit ps;
    ps.name = names[s];
    std::vector<float> samples;
    std::vector<int64_t> offsets{0}, labels, spk;
    std::vector<std::string> spk_names, sources;
    std::map<std::string, int64_t> spk_index;
    std::vector<int64_t> per_class(r.classes.size(), 0);
    ps.min_seconds = INFINITY;
    for (const auto& it : items) {
      if (!it.reason.empty() || split_of.at(it.speaker) != s) continue;
      samples.insert(samples.end(), it.samples.begin(), it.samples.end());
      offsets.push_back(static_cast<int64_t>(samples.size()));
      labels.push_back(it.label);
      sources.push_back(fs::path(it.path).lexically_relative(input_dir).string());
      ++per_class[static_cast<size_t>(it.label)];
      auto [pos, fresh] = spk_index.emplace(it.speaker, static_cast<int64_t>(spk_names.size()));
      if (fresh) spk_names.push_back(it.speaker);
      spk.push_back(pos->second);
      const double sec = static_cast<double>(it.samples.size()) / static_cast<double>(opt.rate);
      ps.seconds += sec;
      ps.min_seconds = std::min(ps.min_seconds, sec);
      ps.max_seconds = std::max(ps.max_seconds, sec);
    }
    ps.clips = static_cast<int64_t>(labels.size());
    if (ps.clips == 0) ps.min_seconds = 0;
    ps.speakers = spk_names;
    auto i64 = [](const std::vector<int64_t>& v) { return at::tensor(at::ArrayRef<int64_t>(v), at::kLong); };
    TensorMap t{{"samples", at::from_blob(samples.data(), {static_cast<int64_t>(samples.size())}, at::kFloat).clone()},
                {"offsets", i64(offsets)},
                {"labels", i64(labels)},
                {"speakers", i64(spk)}};
    save_safetensors(path_join(out_dir, fmt(names[s], ".safetensors")), t,
                     {{"rate", std::to_string(opt.rate)},
                      {"classes", nlohmann::json(r.classes).dump()},
                      {"speakers", nlohmann::json(spk_names).dump()},
                      {"sources", nlohmann::json(sources).dump()}});
    nlohmann::ordered_json counts = nlohmann::ordered_json::object();
    for (size_t c = 0; c < r.classes.size(); ++c) counts[r.classes[c]] = per_class[c];
    splits_json[names[s]] = {{"clips", ps.clips},
                             {"hours", ps.seconds / 3600},
                             {"mean_seconds", ps.clips ? ps.seconds / static_cast<double>(ps.clips) : 0.0},
                             {"min_seconds", ps.min_seconds},
                             {"max_seconds", ps.max_seconds},
                             {"speakers", spk_names},
                             {"per_class", counts}};
    r.splits.push_back(std::move(ps));
  }
  nlohmann::ordered_json skipped = nlohmann::ordered_json::array();
  for (const auto& [f, why] : r.skipped) skipped.push_back({{"file", f}, {"reason", why}});
  nlohmann::ordered_json j = {{"input", input_dir},
                              {"rate", opt.rate},
                              {"trim_db", opt.trim ? nlohmann::ordered_json(opt.trim_db) : nlohmann::ordered_json(nullptr)},
                              {"target_dbfs", opt.target_dbfs},
                              {"seed", opt.seed},
                              {"files", r.files},
                              {"classes", r.classes},
                              {"split", "by speaker"},
                              {"splits", splits_json},
                              {"skipped", skipped}};
  write_file_atomic(path_join(out_dir, "audio.json"), j.dump(2) + "\n");
  return r;
}

std::string prepare_table(const PrepareResult& r) {
  std::string out = fmt(r.files, " files, ", r.classes.size(), " classes, ", r.skipped.size(), " skipped\n");
  out += "split    clips  speakers   minutes  mean s   min s   max s\n";
  char buf[200];
  for (const auto& s : r.splits) {
    std::snprintf(buf, sizeof buf, "%-7s %6lld  %8zu  %8.2f  %6.2f  %6.2f  %6.2f\n", s.name.c_str(), static_cast<long long>(s.clips),
                  s.speakers.size(), s.seconds / 60, s.clips ? s.seconds / static_cast<double>(s.clips) : 0.0, s.min_seconds,
                  s.max_seconds);
    out += buf;
  }
  for (size_t i = 0; i < r.skipped.size() && i < 10; ++i) out += "skipped: " + r.skipped[i].second + "\n";
  if (r.skipped.size() > 10) out += fmt("... and ", r.skipped.size() - 10, " more (audio.json lists all)\n");
  return out;
}

AudioSplit load_audio_split(const std::string& prepared_dir, const std::string& split) {
  const std::string path = path_join(prepared_dir, split + ".safetensors");
  if (!file_exists(path)) throw CheckpointError(fmt(path, ": missing (run `dsforge audio prepare` first)"));
  const SafetensorsFile f = load_safetensors(path);
  AudioSplit s;
  try {
    s.rate = std::stoll(f.metadata.at("rate"));
    s.classes = nlohmann::json::parse(f.metadata.at("classes")).get<std::vector<std::string>>();
    s.speaker_names = nlohmann::json::parse(f.metadata.at("speakers")).get<std::vector<std::string>>();
    if (f.metadata.count("sources")) s.sources = nlohmann::json::parse(f.metadata.at("sources")).get<std::vector<std::string>>();
    auto vec = [&](const char* name) {
      const at::Tensor t = f.tensors.at(name).to(at::kLong).contiguous();
      return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    };
    s.offsets = vec("offsets");
    s.labels = vec("labels");
    s.speakers = vec("speakers");
    const at::Tensor x = f.tensors.at("samples").to(at::kFloat).contiguous();
    s.samples.assign(x.data_ptr<float>(), x.data_ptr<float>() + x.numel());
  } catch (const std::exception& e) {
    throw CheckpointError(fmt(path, ": not a prepared audio split (", e.what(), ")"));
  }
  const auto n = static_cast<size_t>(s.size());
  bool ok = s.offsets.size() == n + 1 && s.speakers.size() == n && s.offsets.front() == 0 &&
            s.offsets.back() == static_cast<int64_t>(s.samples.size()) && (s.sources.empty() || s.sources.size() == n);
  for (size_t i = 0; ok && i < n; ++i)
    ok = s.offsets[i] <= s.offsets[i + 1] && s.labels[i] >= 0 && s.labels[i] < static_cast<int64_t>(s.classes.size()) &&
         s.speakers[i] >= 0 && s.speakers[i] < static_cast<int64_t>(s.speaker_names.size());
  if (!ok) throw CheckpointError(fmt(path, ": offsets, labels or speakers are inconsistent"));
  return s;
}

}  // namespace dsforge::audio
