// Word2vec training speed and quality against gensim 4.2 on the same corpus and settings, in one run:
// dsforge's `embed train` (library call) first, then bench/embed_ref.py (gensim Word2Vec, workers=T),
// each timed for its vocabulary pass and its training; peak RSS of each; WordSim-353 / SimLex-999
// Spearman and Google analogies (3CosAdd, 3CosMul) for both — gensim's vectors scored by gensim's own
// evaluation and by ours, which also checks that the two evaluations agree.
//
// The corpus (built once, cached in $TMPDIR/dsforge-embed-bench/corpus.txt): every English text in
// ../shared/data (WikiText-2 valid+test, TinyStories slices, Multi30k English, SciTLDR sources and
// targets, SST-2 / AG News / UCI sentences) and the WordNet glosses of Debian's wordnet-base, lowercased,
// with anything but letters, digits and apostrophes turned into spaces; one sentence per line.
//
//   bench_embed [--method sgns|cbow] [--threads 2] [--epochs 5] [--dim 100] [--corpus FILE] [--seed S]
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_util.h"
#include "dsforge/core/error.h"
#include "dsforge/embed/evaluate.h"
#include "dsforge/embed/word2vec.h"

using namespace dsforge;
using namespace dsforge::embed;
namespace fs = std::filesystem;

namespace {

std::string clean(const std::string& line) {
  std::string out;
  out.reserve(line.size());
  for (char ch : line) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80 || std::isalnum(c) || c == '\'') out.push_back(static_cast<char>(std::tolower(c)));
    else out.push_back(' ');
  }
  std::string squeezed;
  bool space = true;
  for (char c : out) {
    if (c == ' ') {
      if (!space) squeezed.push_back(' ');
      space = true;
    } else {
      squeezed.push_back(c);
      space = false;
    }
  }
  while (!squeezed.empty() && squeezed.back() == ' ') squeezed.pop_back();
  return squeezed;
}

std::string build_corpus(const std::string& data) {
  const fs::path dir = fs::temp_directory_path() / "dsforge-embed-bench";
  fs::create_directories(dir);
  const std::string path = (dir / "corpus.txt").string();
  if (fs::exists(path) && fs::file_size(path) > 0) return path;
  std::vector<std::string> files;
  for (const char* sub : {"wikitext2", "tinystories", "mt_multi30k", "summarization_scitldr", "text_classification"}) {
    if (!fs::exists(data + "/" + sub)) continue;
    for (const auto& e : fs::recursive_directory_iterator(data + "/" + sub)) {
      if (!e.is_regular_file()) continue;
      const std::string p = e.path().string(), name = e.path().filename().string();
      const bool english = std::string(sub) != "mt_multi30k" || e.path().extension() == ".en";
      if (english && name != "SOURCE.md" && e.path().extension() != ".jsonl") files.push_back(p);
    }
  }
  std::sort(files.begin(), files.end());
  std::ofstream out(path + ".tmp");
  int64_t lines = 0;
  for (const auto& f : files) {
    std::ifstream in(f);
    std::string line;
    while (std::getline(in, line))
      if (auto c = clean(line); !c.empty()) out << c << "\n", ++lines;
  }
  for (const char* pos : {"noun", "verb", "adj", "adv"}) {  // WordNet glosses: the text after '|'
    std::ifstream in(std::string("/usr/share/wordnet/data.") + pos);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == ' ') continue;  // licence header
      const auto bar = line.find(" | ");
      if (bar == std::string::npos) continue;
      if (auto c = clean(line.substr(bar + 3)); !c.empty()) out << c << "\n", ++lines;
    }
  }
  out.close();
  fs::rename(path + ".tmp", path);
  std::printf("corpus: %zu files + WordNet glosses -> %s (%lld lines, %.1f MB)\n", files.size(), path.c_str(),
              static_cast<long long>(lines), static_cast<double>(fs::file_size(path)) / 1e6);
  return path;
}

struct Scores {
  double ws = 0, sl = 0, add = 0, mul = 0;
};

Scores evaluate_ours(const WordVectors& v, const std::string& dir) {
  Scores s;
  s.ws = evaluate_similarity(v, dir + "/wordsim353.tsv").spearman;
  s.sl = evaluate_similarity(v, dir + "/simlex999.txt").spearman;
  const AnalogyResult a = evaluate_analogies(v, dir + "/questions-words.txt");
  s.add = a.accuracy_add();
  s.mul = a.accuracy_mul();
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  EmbedConfig cfg;
  cfg.method = "sgns";
  cfg.dim = 100;
  cfg.window = 5;
  cfg.min_count = 5;
  cfg.negative = 5;
  cfg.sample = 1e-3;
  cfg.epochs = 5;
  cfg.threads = 2;
  cfg.alpha = 0.025;
  std::string corpus;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--method") cfg.method = v;
    else if (k == "--threads") cfg.threads = std::stoi(v);
    else if (k == "--epochs") cfg.epochs = std::stoi(v);
    else if (k == "--dim") cfg.dim = std::stoi(v);
    else if (k == "--corpus") corpus = v;
    else if (k == "--seed") cfg.seed = std::stoull(v);  // both sides: another draw of the same comparison
    else {
      std::fprintf(stderr, "bench_embed: unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  const std::string data = std::string(DSFORGE_SOURCE_DIR) + "/../shared/data";
  const std::string sets = data + "/word_similarity";
  if (!fs::exists(sets + "/wordsim353.tsv")) {
    std::printf("bench_embed: skipped, ../shared/data/word_similarity is not present\n");
    return 0;
  }
  if (corpus.empty()) corpus = build_corpus(data);
  cfg.inputs = {corpus};

  // ---- dsforge: as the original, then with one noise draw per centre word (skip-gram only)
  struct Run {
    std::string name;
    EmbedResult result;
    double total = 0, peak = 0, before = 0;
    Scores scores;
  };
  std::vector<Run> runs;
  for (bool shared : {false, true}) {
    if (shared && cfg.method != "sgns") break;
    Run run;
    run.name = shared ? "dsforge --shared-negatives" : "dsforge";
    EmbedConfig c = cfg;
    c.shared_negatives = shared;
    bench::reset_peak_rss();
    run.before = bench::peak_rss_mb();
    run.total = bench::seconds([&] { run.result = train_embeddings(c); });
    run.peak = bench::peak_rss_mb();
    run.scores = evaluate_ours(run.result.vectors, sets);
    runs.push_back(std::move(run));
  }

  // ---- gensim
  const fs::path tmp = fs::temp_directory_path() / "dsforge-embed-bench";
  const std::string gensim_vec = (tmp / "gensim.bin").string(), gensim_json = (tmp / "gensim.json").string();
  nlohmann::json g;
  const bool have_gensim = std::system("/usr/bin/python3 -c 'import gensim' 2>/dev/null") == 0;
  if (have_gensim) {
    const std::string cmd = fmt("/usr/bin/python3 ", DSFORGE_SOURCE_DIR, "/bench/embed_ref.py ", corpus, " --method ", cfg.method,
                                " --dim ", cfg.dim, " --window ", cfg.window, " --min-count ", cfg.min_count, " --negative ",
                                cfg.negative, " --sample ", cfg.sample, " --epochs ", cfg.epochs, " --threads ", cfg.threads,
                                " --alpha ", cfg.alpha, " --seed ", cfg.seed, " --data-dir ", sets, " --out ", gensim_vec, " > ",
                                gensim_json);
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "bench_embed: %s failed\n", cmd.c_str());
      return 1;
    }
    std::ifstream f(gensim_json);
    f >> g;
  } else {
    std::printf("bench_embed: gensim (Debian python3-gensim) not installed; dsforge only\n");
  }

  const TrainReport& r = runs[0].result.report;
  std::printf("\nword2vec %s, dim %d, window %d, negative %d, sample %g, min-count %lld, %d epochs, %d threads\n", cfg.method.c_str(),
              cfg.dim, cfg.window, cfg.negative, cfg.sample, static_cast<long long>(cfg.min_count), cfg.epochs, cfg.threads);
  std::printf("corpus: %lld tokens, %lld in the vocabulary of %lld words\n\n", static_cast<long long>(r.raw_words),
              static_cast<long long>(r.corpus_words), static_cast<long long>(r.vocab_size));
  std::printf("| | train words/s | train s | vocab s | peak RSS MB | WordSim-353 | SimLex-999 | analogy 3CosAdd | analogy 3CosMul |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  auto wps = [&](const Run& run) {
    return static_cast<double>(run.result.report.corpus_words) * cfg.epochs / run.result.report.train_seconds;
  };
  for (const Run& run : runs)
    std::printf("| %s | %.0f | %.2f | %.2f | %.0f (%.0f at start) | %.3f | %.3f | %.1f%% | %.1f%% |\n", run.name.c_str(), wps(run),
                run.result.report.train_seconds, run.result.report.vocab_seconds, run.peak, run.before, run.scores.ws, run.scores.sl,
                100 * run.scores.add, 100 * run.scores.mul);
  if (have_gensim) {
    const WordVectors gv = load_vectors(gensim_vec);
    const Scores sg = evaluate_ours(gv, sets);
    const double gwps = g["words_per_second"].get<double>();
    std::printf("| gensim 4.2 | %.0f | %.2f | %.2f | %.0f | %.3f | %.3f | %.1f%% | n/a |\n", gwps, g["train_seconds"].get<double>(),
                g["vocab_seconds"].get<double>(), g["peak_rss_mb"].get<double>(), g["wordsim353_spearman"].get<double>(),
                g["simlex999_spearman"].get<double>(), 100 * g["analogy_3cosadd"].get<double>());
    std::printf("| gensim vectors, our evaluation | | | | | %.3f | %.3f | %.1f%% | %.1f%% |\n", sg.ws, sg.sl, 100 * sg.add, 100 * sg.mul);
    std::printf("\n(gensim 4.2's evaluate_word_analogies ignores similarity_function, so its 3CosMul is ours on its vectors)\n");
    for (const Run& run : runs) {
      std::printf("%s: speed ratio to gensim (training words/s) %.2fx (target >= 1.5x); score gaps WordSim %+.3f, SimLex %+.3f, "
                  "3CosAdd %+.1f points, 3CosMul %+.1f points; total (vocab + train) %.2f s vs gensim %.2f s\n",
                  run.name.c_str(), wps(run) / gwps, run.scores.ws - g["wordsim353_spearman"].get<double>(),
                  run.scores.sl - g["simlex999_spearman"].get<double>(), 100 * (run.scores.add - g["analogy_3cosadd"].get<double>()),
                  100 * (run.scores.mul - sg.mul), run.total, g["vocab_seconds"].get<double>() + g["train_seconds"].get<double>());
    }
  }
  return 0;
}
