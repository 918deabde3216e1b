#include "dsforge/tasks/back_translate.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/eval/mt_metrics.h"

namespace dsforge::tasks {
namespace {

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\t', ' ');
  return s;
}

}  // namespace

double word_length_ratio(const std::string& a, const std::string& b) {
  const auto x = static_cast<int64_t>(eval::unicode_split(a).size()), y = static_cast<int64_t>(eval::unicode_split(b).size());
  return static_cast<double>(std::max(x, y)) / static_cast<double>(std::max<int64_t>(1, std::min(x, y)));
}

BackTranslateStats back_translate(const std::string& reverse_model, const std::string& input, const std::string& out_dir,
                                  const BackTranslateOptions& opt) {
  if (opt.max_ratio != 0 && opt.max_ratio < 1)
    throw ConfigError(fmt("back-translate: max ratio ", opt.max_ratio, " must be >= 1 (or 0 for no limit)"));
  if (opt.min_chrf < 0 || opt.min_chrf > 100) throw ConfigError(fmt("back-translate: min chrF ", opt.min_chrf, " must be in [0, 100]"));
  if (opt.min_chrf > 0 && opt.round_trip_model.empty())
    throw ConfigError("back-translate: a round-trip chrF threshold needs the forward model (--round-trip-model)");
  if (opt.chunk < 1) throw ConfigError(fmt("back-translate: chunk ", opt.chunk, " must be >= 1"));
  std::ifstream in(input, std::ios::binary);
  if (!in) throw IoError(fmt(input, ": cannot open"));

  const auto t0 = std::chrono::steady_clock::now();
  const Translator reverse(reverse_model);
  std::unique_ptr<Translator> forward;
  if (!opt.round_trip_model.empty()) forward = std::make_unique<Translator>(opt.round_trip_model);
  eval::MetricOptions chrf_opt;
  chrf_opt.name = "chrf";
  const auto chrf = eval::make_metric(chrf_opt);

  make_dirs(out_dir);
  AtomicFileWriter src_out(path_join(out_dir, "source.txt")), tgt_out(path_join(out_dir, "target.txt")),
      dropped(path_join(out_dir, "dropped.tsv"));
  dropped.write("line\treason\tsynthetic_source\ttarget\n");
  BackTranslateStats st;
  double chrf_sum = 0;
  int64_t chrf_count = 0, line_no = 0;
  std::vector<std::string> targets;
  std::vector<int64_t> numbers;

  auto flush = [&]() {
    if (targets.empty()) return;
    TranslateOptions d = opt.decode;
    d.seed = opt.decode.seed + static_cast<uint64_t>(numbers.front());  // a chunk's draws depend on where it starts
    const std::vector<std::string> synthetic = reverse.translate(targets, d);
    std::vector<std::string> back;
    if (forward) back = forward->translate(synthetic, opt.round_trip);
    for (size_t i = 0; i < targets.size(); ++i) {
      std::string reason;
      const double ratio = synthetic[i].empty() ? 0.0 : word_length_ratio(synthetic[i], targets[i]);
      if (synthetic[i].empty()) {
        reason = "empty";
        ++st.empty_output;
      } else if (opt.max_ratio > 0 && ratio > opt.max_ratio) {
        reason = fmt("ratio ", ratio);
        ++st.dropped_ratio;
      } else if (forward) {
        const double c = chrf->sentence_score(back[i], {targets[i]});
        chrf_sum += c;
        ++chrf_count;
        if (c < opt.min_chrf) {
          reason = fmt("chrF ", c);
          ++st.dropped_chrf;
        }
      }
      if (reason.empty()) {
        src_out.write((opt.tag.empty() ? "" : opt.tag + " ") + one_line(synthetic[i]) + "\n");
        tgt_out.write(targets[i] + "\n");
        ++st.kept;
      } else {
        dropped.write(fmt(numbers[i], "\t", reason, "\t", one_line(synthetic[i]), "\t", one_line(targets[i]), "\n"));
      }
    }
    log_info("back-translate: ", st.lines, " lines, ", st.kept, " kept");
    targets.clear();
    numbers.clear();
  };
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) {
      ++st.blank;
      continue;
    }
    if (opt.max_lines > 0 && st.lines >= opt.max_lines) break;
    ++st.lines;
    targets.push_back(line);
    numbers.push_back(line_no);
    if (static_cast<int64_t>(targets.size()) >= opt.chunk) flush();
  }
  if (in.bad()) throw IoError(fmt(input, ": read failed after line ", line_no));
  flush();
  if (st.lines == 0) throw DataError(fmt(input, ": no text to back-translate (", st.blank, " blank lines)"));
  st.mean_round_trip_chrf = chrf_count > 0 ? chrf_sum / static_cast<double>(chrf_count) : 0.0;
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  src_out.commit();
  tgt_out.commit();
  dropped.commit();
  write_file_atomic(path_join(out_dir, "back_translate.json"), back_translate_json(st, opt, reverse_model, input) + "\n");
  return st;
}

std::string back_translate_json(const BackTranslateStats& s, const BackTranslateOptions& opt, const std::string& reverse_model,
                                const std::string& input) {
  auto decoding = [](const TranslateOptions& d) {
    return nlohmann::ordered_json{{"beam", d.beam}, {"temperature", d.temperature}, {"top_p", d.top_p}, {"top_k", d.top_k},
                                  {"seed", d.seed}};
  };
  nlohmann::ordered_json j = {{"input", input},
                              {"reverse_model", reverse_model},
                              {"decoding", decoding(opt.decode)},
                              {"round_trip_model", opt.round_trip_model},
                              {"max_ratio", opt.max_ratio},
                              {"min_chrf", opt.min_chrf},
                              {"tag", opt.tag},
                              {"lines", s.lines},
                              {"blank_lines", s.blank},
                              {"kept", s.kept},
                              {"dropped_empty", s.empty_output},
                              {"dropped_ratio", s.dropped_ratio},
                              {"dropped_chrf", s.dropped_chrf},
                              {"mean_round_trip_chrf", s.mean_round_trip_chrf},
                              {"seconds", s.seconds}};
  if (!opt.round_trip_model.empty()) j["round_trip_decoding"] = decoding(opt.round_trip);
  return j.dump(2);
}

}  // namespace dsforge::tasks
