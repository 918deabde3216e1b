// Machine-translation metrics with sacreBLEU's (2.x) definitions, options and signatures, so that
// numbers and signature strings compare with published ones:
//
//   BLEU    tokenizers 13a (default), intl (mteval-v14 international: Unicode punctuation/symbols),
//           zh (CJK characters split, then the 13a rules), char, none; optional lowercasing; "exp"
//           smoothing; corpus statistics; sentence-level scores with the effective order.
//   chrF    character n-grams (order 6) and, for chrF++, word n-grams (order 2) of words with leading
//           or trailing ASCII punctuation split off; beta 2; whitespace removed; best reference per
//           segment; a segment's hypothesis n-grams count only when its reference has that order.
//   TER     tercom's edit distance with shifts (beam 25, shifts of at most 10 words over at most 50
//           positions, at most 1000 shift candidates per segment); case-insensitive by default; the
//           average reference length; the best reference's edits.
//   paired bootstrap resampling (sacreBLEU --paired-bs, Koehn 2004): 1000 resamples of the segment
//           indices with seed 12345, the same resamples for the baseline and every system; each
//           system's bootstrap mean and 95% CI (half the spread between the 2.5% and 97.5% order
//           statistics) and p = (c + 1) / (n + 1) with c the resamples whose centred |difference|
//           exceeds the actual |difference|. The resampled indices come from std::mt19937_64, not
//           numpy's PCG64, so p-values and intervals agree with sacreBLEU's in distribution, not digit
//           for digit.
//
//   auto bleu = make_metric({"bleu"});
//   CorpusResult r = corpus_score(*bleu, hyps, refs);     // r.score, r.signature
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dsforge/eval/text_metrics.h"

namespace dsforge::eval {

// sacreBLEU's tokenizers by name: "13a", "intl", "zh", "char", "none". Throws ConfigError otherwise.
std::string mt_tokenize(const std::string& line, const std::string& tokenizer);
// Python's str.lower() (full Unicode case mapping, via ICU).
std::string unicode_lower(const std::string& s);
// Python's str.split() with no argument: runs of Unicode whitespace separate words.
std::vector<std::string> unicode_split(const std::string& s);

struct MetricOptions {
  std::string name = "bleu";     // bleu | chrf | ter
  bool lowercase = false;        // BLEU, chrF
  std::string tokenize = "13a";  // BLEU
  bool effective_order = false;  // BLEU (sentence scores always use it, as sacreBLEU's sentence_bleu)
  int char_order = 6, word_order = 0;  // chrF; word_order 2 = chrF++
  int beta = 2;
  bool whitespace = false;       // chrF: keep spaces in character n-grams
  bool eps_smoothing = false;    // chrF: chrF++.py's smoothing instead of the effective order
  bool case_sensitive = false;   // TER
};

// A metric as sufficient statistics per segment plus a score from their sum, the shape that corpus
// scores and bootstrap resampling both need.
class MtMetric {
 public:
  virtual ~MtMetric() = default;
  virtual std::string name() const = 0;  // BLEU, chrF2, chrF2++, TER
  // sacreBLEU's signature; n_bootstrap/seed > 0 add "bs:" and "seed:" as its paired tests do.
  virtual std::string signature(size_t nrefs, int n_bootstrap = 0, uint64_t seed = 0) const = 0;
  virtual std::vector<double> segment_stats(const std::string& hyp, const std::vector<std::string>& refs) const = 0;
  virtual double score(const std::vector<double>& summed_stats) const = 0;
  virtual double sentence_score(const std::string& hyp, const std::vector<std::string>& refs) const;
  virtual bool lower_is_better() const { return false; }
};
std::unique_ptr<MtMetric> make_metric(const MetricOptions& opt);

struct CorpusResult {
  std::string name, signature;
  double score = 0;
  std::vector<double> stats;                      // summed
  std::vector<std::vector<double>> segment_stats;  // per segment
};
// refs[r][i]: reference stream r, segment i.
CorpusResult corpus_score(const MtMetric& m, const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs);
std::vector<double> sentence_scores(const MtMetric& m, const std::vector<std::string>& hyps,
                                    const std::vector<std::vector<std::string>>& refs);

// BLEU from summed statistics [sys_len, ref_len, correct 1..4, total 1..4] (no signature).
BleuScore bleu_from_stats(const std::vector<double>& stats, bool effective_order);

// TER of one tokenised segment against one reference: the number of edits (shifts included).
int64_t ter_edits(const std::vector<std::string>& hyp, const std::vector<std::string>& ref);

struct BootstrapEstimate {
  double score = 0;  // on the full test set
  double mean = 0;   // bootstrap mean
  double ci = 0;     // 95% half-width
  double p_value = -1;  // systems only: paired test against the baseline
};
struct PairedBootstrapResult {
  std::string name, signature;
  BootstrapEstimate baseline;
  std::vector<BootstrapEstimate> systems;
};
PairedBootstrapResult paired_bootstrap(const MtMetric& m, const std::vector<std::string>& baseline,
                                       const std::vector<std::vector<std::string>>& systems,
                                       const std::vector<std::vector<std::string>>& refs, int n_samples = 1000,
                                       uint64_t seed = 12345);

}  // namespace dsforge::eval
