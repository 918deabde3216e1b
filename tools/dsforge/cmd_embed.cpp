// dsforge embed train|eval|neighbors: word2vec / GloVe word vectors (src/dsforge/embed).
#include <iostream>
#include <memory>

#include "commands.h"
#include "dsforge/embed/run.h"

namespace dsforge::cli {

void add_embed_commands(CLI::App& app, Context& ctx) {
  CLI::App* e = app.add_subcommand("embed", "word vectors: word2vec (skip-gram, CBOW) and GloVe; evaluation; neighbours");
  e->require_subcommand(1);

  auto cfg = std::make_shared<embed::EmbedConfig>();
  auto out = std::make_shared<std::string>();
  CLI::App* t = e->add_subcommand("train", "train word vectors on whitespace-tokenised text (one sentence per line)");
  t->add_option("-i,--input", cfg->inputs, "text files")->required();
  t->add_option("--method", cfg->method, "sgns | cbow | glove")->capture_default_str();
  t->add_option("--dim", cfg->dim, "vector size")->capture_default_str();
  t->add_option("--window", cfg->window, "context words each side")->capture_default_str();
  t->add_option("--min-count", cfg->min_count, "drop words seen fewer times")->capture_default_str();
  t->add_option("--negative", cfg->negative, "word2vec: noise words per pair")->capture_default_str();
  t->add_option("--sample", cfg->sample, "word2vec: subsampling threshold (0 = off)")->capture_default_str();
  t->add_option("--epochs", cfg->epochs, "passes over the corpus")->capture_default_str();
  t->add_option("--threads", cfg->threads, "worker threads (lock-free updates)")->capture_default_str();
  t->add_option("--alpha", cfg->alpha, "initial learning rate (default 0.025 word2vec, 0.05 GloVe)");
  t->add_option("--min-alpha", cfg->min_alpha, "word2vec: final learning rate")->capture_default_str();
  t->add_option("--seed", cfg->seed, "random seed")->capture_default_str();
  t->add_flag("--shared-negatives", cfg->shared_negatives,
              "skip-gram: draw the noise words once per centre word for its whole window (Ji et al. 2016; faster)");
  t->add_option("--x-max", cfg->x_max, "GloVe: weighting cut-off")->capture_default_str();
  t->add_option("--glove-alpha", cfg->glove_alpha, "GloVe: weighting exponent")->capture_default_str();
  t->add_option("--memory-mb", cfg->memory_mb, "GloVe: co-occurrence counting budget before spilling to disk")->capture_default_str();
  t->add_flag("-v,--verbose", cfg->verbose, "progress on stderr");
  t->add_option("-o,--out", *out, "output folder: vectors.txt, vectors.bin, embeddings.safetensors, vocab.txt, train.json")->required();
  t->callback([&ctx, cfg, out]() {
    ctx.action = [cfg, out]() {
      std::cout << embed::run_embed_train(*cfg, *out) << "\n";
      return 0;
    };
  });

  auto req = std::make_shared<embed::EmbedEvalRequest>();
  auto data_dir = std::make_shared<std::string>("../shared/data/word_similarity");
  CLI::App* ev = e->add_subcommand("eval", "WordSim-353 and SimLex-999 Spearman, Google analogies (3CosAdd, 3CosMul), as JSON");
  ev->add_option("--vectors", req->vectors, "word2vec text/binary file or embeddings.safetensors")->required();
  ev->add_option("--data-dir", *data_dir, "folder with wordsim353.tsv, simlex999.txt, questions-words.txt")->capture_default_str();
  ev->add_option("--wordsim", req->wordsim, "WordSim-353 file (default DATA_DIR/wordsim353.tsv; 'none' skips)");
  ev->add_option("--simlex", req->simlex, "SimLex-999 file (default DATA_DIR/simlex999.txt; 'none' skips)");
  ev->add_option("--analogies", req->analogies, "analogy questions (default DATA_DIR/questions-words.txt; 'none' skips)");
  ev->add_option("--restrict-vocab", req->restrict_vocab, "only the most frequent N words take part (gensim's default)")
      ->capture_default_str();
  ev->callback([&ctx, req, data_dir]() {
    ctx.action = [req, data_dir]() {
      embed::EmbedEvalRequest r = *req;
      auto pick = [&](std::string& f, const char* name) {
        if (f.empty()) f = *data_dir + "/" + name;
        if (f == "none") f.clear();
      };
      pick(r.wordsim, "wordsim353.tsv");
      pick(r.simlex, "simlex999.txt");
      pick(r.analogies, "questions-words.txt");
      std::cout << embed::run_embed_eval(r) << "\n";
      return 0;
    };
  });

  auto nb = std::make_shared<std::pair<std::string, std::string>>();
  auto k = std::make_shared<int>(10);
  CLI::App* n = e->add_subcommand("neighbors", "nearest words by cosine similarity");
  n->add_option("--vectors", nb->first, "word2vec text/binary file or embeddings.safetensors")->required();
  n->add_option("word", nb->second, "query word")->required();
  n->add_option("-k", *k, "how many")->capture_default_str();
  n->callback([&ctx, nb, k]() {
    ctx.action = [nb, k]() {
      std::cout << embed::run_embed_neighbors(nb->first, nb->second, *k);
      return 0;
    };
  });
}

}  // namespace dsforge::cli
