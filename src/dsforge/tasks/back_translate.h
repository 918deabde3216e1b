// Back-translation (Sennrich et al. 2016): monolingual target-language text translated into the source
// language by a reverse model gives synthetic (source, target) pairs whose target side is real text.
//
// `back_translate` streams the input in chunks (memory does not grow with the file), translates each
// chunk with the reverse model (sampling by default, Edunov et al. 2018), and filters:
//   * empty outputs;
//   * the length ratio: max(words) / max(1, min(words)) of synthetic source and real target above
//     max_ratio (0 = no limit);
//   * round trip: with a forward model, the synthetic source is translated back and scored against the
//     real target with sentence chrF (sacreBLEU's chrF2); pairs below min_chrf are dropped.
// Kept pairs go to DIR/source.txt and DIR/target.txt (line-aligned, ready for `finetune --task
// parallel`); DIR/back_translate.json counts every outcome, DIR/dropped.tsv says why each line went.
#pragma once
#include <cstdint>
#include <string>

#include "dsforge/tasks/translate.h"

namespace dsforge::tasks {

struct BackTranslateOptions {
  TranslateOptions decode;          // the reverse model's decoding
  TranslateOptions round_trip;      // the forward model's (greedy by default)
  std::string round_trip_model;     // empty = no round-trip filter
  double max_ratio = 2.0;           // words, either way; 0 = no limit
  double min_chrf = 0.0;            // round-trip sentence chrF (0..100); needs round_trip_model
  int64_t max_lines = 0;            // 0 = all
  int64_t chunk = 512;              // lines per streamed chunk
  // Tagged back-translation (Caswell et al. 2019): this text and a space before every synthetic source,
  // so that the model can tell synthetic sources from real ones. Empty = untagged.
  std::string tag;
};

struct BackTranslateStats {
  int64_t lines = 0;          // non-empty input lines read
  int64_t blank = 0;          // empty input lines skipped
  int64_t empty_output = 0;   // dropped: the translation was empty
  int64_t dropped_ratio = 0;  // dropped: length ratio
  int64_t dropped_chrf = 0;   // dropped: round-trip chrF
  int64_t kept = 0;
  double mean_round_trip_chrf = 0;  // over the lines scored
  double seconds = 0;
};

// Reads `input` (one target-language sentence per line), writes out_dir/{source.txt, target.txt,
// dropped.tsv, back_translate.json}. Files are replaced atomically when the run completes.
BackTranslateStats back_translate(const std::string& reverse_model, const std::string& input, const std::string& out_dir,
                                  const BackTranslateOptions& opt);
std::string back_translate_json(const BackTranslateStats& s, const BackTranslateOptions& opt, const std::string& reverse_model,
                                const std::string& input);

// The length-ratio test on its own: max(a, b) / max(1, min(a, b)) words, a and b split as Python's
// str.split() does (eval::unicode_split).
double word_length_ratio(const std::string& a, const std::string& b);

}  // namespace dsforge::tasks
