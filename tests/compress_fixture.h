// A tiny trained run folder for the pruning and distillation tests: a corpus of "word: definition"
// lines, its tokenizer and token shards, and a nano model trained for a few steps (run/model).
#pragma once
#include <string>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/run_config.h"
#include "dsforge/pipeline/stages.h"
#include "test_util.h"

namespace dsforge {

struct TinyRun {
  std::string config;     // the run config (TOML)
  std::string run_dir;    // its run folder: tokenizer.json, shards/, model/
  std::string model_dir;  // run_dir/model
  std::string corpus;     // the text file (also good as calibration text)
};

inline TinyRun make_tiny_run(const std::string& dir, int64_t train_steps, const std::string& preset = "nano") {
  TinyRun r;
  r.corpus = path_join(dir, "corpus.txt");
  write_file_atomic(r.corpus, definition_lines(400));
  r.config = path_join(dir, "tiny.toml");
  r.run_dir = path_join(dir, "run");
  r.model_dir = path_join(r.run_dir, "model");
  write_file_atomic(r.config, fmt("[run]\nout_dir = \"", r.run_dir, "\"\nthreads = 1\n", "[data]\nsource = \"files\"\npaths = [\"",
                                  r.corpus, "\"]\nval_fraction = 0.1\nnear_dedup = false\n",
                                  "[tokenizer]\nvocab_size = 300\n[model]\nconfig = \"", preset, "\"\n",
                                  "[train]\nseq_len = 16\nbatch_size = 4\nmax_steps = ", train_steps,
                                  "\nwarmup_steps = 2\nlog_every = 5\neval_every = 1000\ncheckpoint_every = 1000\n",
                                  "fit_micro_batch = false\npeak_gflops = 1.0\n[eval]\nbatches = 2\n"));
  const RunConfig cfg = load_run_config(r.config);
  pipeline::stage_prepare(cfg);
  pipeline::stage_tokenizer(cfg);
  pipeline::stage_tokenize(cfg);
  pipeline::stage_train(cfg);
  return r;
}

}  // namespace dsforge
