// The newcomer's journey: mistakes a new user makes, each answered with a message that points to the
// next step, and nothing of an existing run overwritten. Also `eval --text` and non-ASCII generation.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/run_config.h"
#include "dsforge/core/utf8.h"
#include "dsforge/data/ingest.h"
#include "dsforge/data/shards.h"
#include "dsforge/model/io.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/tokenizer/bpe.h"
#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>

using namespace dsforge;

namespace {

// A recipe in `dir`/recipes/ whose model config sits in `dir`/models/, named relative to the recipe.
std::string write_recipe(const std::string& dir, int64_t max_steps = 4) {
  make_dirs(path_join(dir, "recipes"));
  make_dirs(path_join(dir, "models"));
  make_dirs(path_join(dir, "corpus"));
  std::string text;
  for (int i = 0; i < 300; ++i) text += "w" + std::to_string(i) + ": a small thing that is " + std::to_string(i % 7) + " old\n";
  write_file_atomic(path_join(dir, "corpus/c.txt"), text);
  write_file_atomic(path_join(dir, "models/tiny.json"), model::model_config_to_json(model::model_config_from_preset("nano")));
  const std::string cfg = path_join(dir, "recipes/tiny.toml");
  write_file_atomic(cfg, fmt("[run]\nout_dir = \"", path_join(dir, "run"), "\"\nthreads = 1\n",
                             "[data]\nsource = \"files\"\npaths = [\"../corpus/c.txt\"]\nval_fraction = 0.1\n",
                             "[tokenizer]\nvocab_size = 300\n[model]\nconfig = \"../models/tiny.json\"\n",
                             "[train]\nseq_len = 16\nbatch_size = 2\nmax_steps = ", max_steps,
                             "\nwarmup_steps = 1\nlog_every = 2\neval_every = 100\ncheckpoint_every = 100\n",
                             "[eval]\nbatches = 2\n[generate]\nprompts = [\"w1:\"]\nmax_new_tokens = 4\n"));
  return cfg;
}

}  // namespace

TEST(Journey, RelativePathsResolveAgainstTheRecipeFromAnyFolder) {
  TempDir dir;
  const std::string cfg = write_recipe(dir.path);
  const RunConfig c = load_run_config(cfg);
  EXPECT_EQ(c.model.config, path_join(dir.path, "models/tiny.json"));
  EXPECT_EQ(c.data.paths.at(0), path_join(dir.path, "corpus/c.txt"));
  // An override on the command line stays relative to the shell's folder.
  EXPECT_EQ(load_run_config(cfg, {"model.config=m/x.json"}).model.config, "m/x.json");
  // From another working directory, the data stage finds the corpus and the model config.
  make_dirs(path_join(dir.path, "elsewhere"));
  CliRun r = run_cli("data prepare --config " + cfg, dir.path, "cd " + path_join(dir.path, "elsewhere") + " && ");
  EXPECT_EQ(r.code, 0) << r.err;
}

TEST(Journey, MissingModelConfigFailsBeforeAnyStage) {
  TempDir dir;
  const std::string cfg = write_recipe(dir.path);
  std::filesystem::remove(path_join(dir.path, "models/tiny.json"));
  CliRun r = run_cli("pipeline --config " + cfg, dir.path);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("model.config"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("models/tiny.json: model config not found"), std::string::npos) << r.err;
  EXPECT_FALSE(file_exists(path_join(dir.path, "run/data")));  // nothing ran
}

TEST(Journey, AnotherRecipeNeverOverwritesARunFolder) {
  TempDir dir;
  const std::string cfg = write_recipe(dir.path);
  ASSERT_EQ(run_cli("data prepare --config " + cfg, dir.path).code, 0);
  const std::string run = path_join(dir.path, "run");
  const std::string saved = read_file(path_join(run, "config.toml"));
  const auto stamp = std::filesystem::last_write_time(path_join(run, "data/DONE"));
  // No --config: the defaults are another recipe.
  CliRun defaults = run_cli("data prepare --run.out_dir=" + run, dir.path);
  EXPECT_EQ(defaults.code, 2);
  EXPECT_NE(defaults.err.find("was made by another recipe"), std::string::npos) << defaults.err;
  EXPECT_NE(defaults.err.find("the defaults (no --config given)"), std::string::npos) << defaults.err;
  EXPECT_NE(defaults.err.find("data.source"), std::string::npos) << defaults.err;
  // A data key changed on the existing run: refused before anything is touched.
  CliRun changed = run_cli("pipeline --config " + cfg + " --data.min_chars=10", dir.path);
  EXPECT_EQ(changed.code, 2);
  EXPECT_NE(changed.err.find("data.min_chars (4 -> 10)"), std::string::npos) << changed.err;
  EXPECT_EQ(read_file(path_join(run, "config.toml")), saved);
  EXPECT_EQ(std::filesystem::last_write_time(path_join(run, "data/DONE")), stamp);
  EXPECT_FALSE(file_exists(path_join(run, "tokenizer.json")));
  // Training longer continues the same recipe: allowed, and recorded.
  CliRun longer = run_cli("data prepare --config " + cfg + " --train.max_steps=8", dir.path);
  EXPECT_EQ(longer.code, 0) << longer.err;
  EXPECT_EQ(load_saved_run_config(path_join(run, "config.toml")).train.max_steps, 8);
}

TEST(Journey, MistakesGetMessagesThatNameTheNextStep) {
  TempDir dir;
  CliRun trian = run_cli("trian", dir.path);
  EXPECT_EQ(trian.code, 2);
  EXPECT_NE(trian.err.find("unknown command 'trian' (did you mean 'train'?)"), std::string::npos) << trian.err;
  CliRun prep = run_cli("data prep", dir.path);
  EXPECT_NE(prep.err.find("unknown command 'data prep' (did you mean 'data prepare'?)"), std::string::npos) << prep.err;
  CliRun space = run_cli("train --train.max_steps 10", dir.path);
  EXPECT_EQ(space.code, 2);
  EXPECT_NE(space.err.find("write --train.max_steps=10"), std::string::npos) << space.err;
  // A run folder given where its model folder is meant.
  const std::string run = path_join(dir.path, "run");
  save_tiny_model(run, {"a b c", "d e f"});
  CliRun model = run_cli("generate --model " + run + " --prompt a", dir.path);
  EXPECT_EQ(model.code, 2);
  EXPECT_NE(model.err.find("did you mean " + path_join(run, "model") + "?"), std::string::npos) << model.err;
  // Stages whose input is missing say which command makes it.
  const std::string cfg = write_recipe(dir.path);
  CliRun tokenize = run_cli("tokenize --config " + cfg, dir.path);
  EXPECT_EQ(tokenize.code, 1);
  EXPECT_NE(tokenize.err.find("made by `dsforge tokenizer train --config " + cfg + "`"), std::string::npos) << tokenize.err;
  // report on a folder with nothing to report: no "wrote " before the error.
  CliRun report = run_cli("report " + dir.path, dir.path);
  EXPECT_NE(report.code, 0);
  EXPECT_EQ(report.out.find("wrote"), std::string::npos) << report.out;
  // finetune refuses the flags of another task.
  CliRun ft = run_cli("finetune --model " + path_join(run, "model") + " --task wordnet-lexname --beam 4", dir.path);
  EXPECT_EQ(ft.code, 2);
  EXPECT_NE(ft.err.find("--beam belongs to another task"), std::string::npos) << ft.err;
}

TEST(Journey, ResolvedConfigPrintsShortestNumbers) {
  RunConfig c;
  const std::string t = to_toml(c);
  EXPECT_NE(t.find("lr = 0.003\n"), std::string::npos) << t;
  EXPECT_NE(t.find("bias_update_speed = 0.001\n"), std::string::npos) << t;
  c.train.lr = 1.0 / 3.0;  // needs all 17 digits to read back
  TempDir dir;
  write_file_atomic(path_join(dir.path, "c.toml"), to_toml(c));
  EXPECT_EQ(load_run_config(path_join(dir.path, "c.toml")).train.lr, 1.0 / 3.0);
  // Strings with line breaks, tabs, quotes and control characters survive the saved config.
  c.generate.prompts = {"class A:\n\tdef \"f\"\\", std::string("x\x01y")};
  write_file_atomic(path_join(dir.path, "p.toml"), to_toml(c));
  EXPECT_EQ(load_run_config(path_join(dir.path, "p.toml")).generate.prompts, c.generate.prompts);
}

TEST(Journey, RegressReadsCsvFilesWithAHeaderRow) {
  TempDir dir;
  std::string csv = "size,rooms,price\n";
  for (int i = 0; i < 60; ++i) csv += fmt(i, ",", i % 5, ",", 3 * i + 2 * (i % 5) + 1, "\n");
  write_file_atomic(path_join(dir.path, "h.csv"), csv);
  CliRun r = run_cli("regress --features " + path_join(dir.path, "h.csv") + " --epochs 2 --json", dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("h.csv:1: header row skipped"), std::string::npos) << r.err;
  // Least squares recovers the exact linear rule: R^2 = 1.
  const auto j = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  EXPECT_NEAR(j["baseline_least_squares"]["r2"].get<double>(), 1.0, 1e-9) << j.dump();
}

TEST(Journey, GenerateKeepsOutputValidUtf8ForCjkAndEmoji) {
  TempDir dir;
  // A randomly initialised model over a byte-level vocabulary samples byte tokens freely: its output
  // ends inside, or never forms, UTF-8 characters. What is printed and saved must be valid UTF-8.
  const std::vector<std::string> docs = {"床前明月光，疑是地上霜。", "子曰：学而时习之，不亦说乎？", "emoji 😀 🎉 ok"};
  RunConfig c;
  c.run.out_dir = path_join(dir.path, "run");
  c.run.threads = 1;
  c.generate.prompts = {"床前", "子曰", "😀"};
  c.generate.max_new_tokens = 24;
  c.generate.temperature = 1.0;
  c.generate.top_k = 0;
  save_tiny_model(c.run.out_dir, docs);
  const std::string cfg = path_join(dir.path, "gen.toml");
  write_file_atomic(cfg, to_toml(c));
  write_file_atomic(path_join(c.run.out_dir, "config.toml"), to_toml(c));
  for (uint64_t seed : {1, 2, 3}) {
    CliRun batched = run_cli(fmt("generate --config ", cfg, " --run.seed=", seed), dir.path);
    ASSERT_EQ(batched.code, 0) << batched.err;
    EXPECT_TRUE(data::is_valid_utf8(batched.out)) << batched.out;
    CliRun streamed = run_cli(fmt("generate --config ", cfg, " --run.seed=", seed, " --prompt 床前"), dir.path);
    ASSERT_EQ(streamed.code, 0) << streamed.err;
    EXPECT_TRUE(data::is_valid_utf8(streamed.out)) << streamed.out;
  }
  // Only a run with the recipe's own settings saves its samples (the seeds above differ from it).
  EXPECT_FALSE(file_exists(path_join(c.run.out_dir, "samples.json")));
  CliRun own = run_cli("generate --config " + cfg, dir.path);
  ASSERT_EQ(own.code, 0) << own.err;
  const auto samples = nlohmann::json::parse(read_file(path_join(c.run.out_dir, "samples.json")));
  ASSERT_EQ(samples.size(), 3u);
  EXPECT_EQ(samples[0]["prompt"], "床前");
}

TEST(Journey, CompleteUtf8PrefixHoldsBackOnlyUnfinishedCharacters) {
  EXPECT_EQ(complete_utf8_prefix("abc"), 3u);
  EXPECT_EQ(complete_utf8_prefix("a\xE5\xBA"), 1u);          // 床 = E5 BA 8A, two of three bytes
  EXPECT_EQ(complete_utf8_prefix("a\xE5\xBA\x8A"), 4u);      // complete
  EXPECT_EQ(complete_utf8_prefix("\xF0\x9F\x98"), 0u);       // 😀 = F0 9F 98 80, three of four
  EXPECT_EQ(complete_utf8_prefix("x\x80"), 2u);              // a stray continuation byte never completes
  EXPECT_EQ(complete_utf8_prefix("x\xFF"), 2u);              // nor does 0xFF
  EXPECT_EQ(complete_utf8_prefix(""), 0u);
}

TEST(EvalText, ScoresAnyTextFileLikeAnExplicitComputation) {
  TempDir dir;
  const std::vector<std::string> docs = {"the cat sat on the mat. the dog sat on the log.", "a bird flew over the tree."};
  const std::string model_dir = save_tiny_model(dir.path, docs);
  model::save_training_info(model_dir, {16, 3});
  std::string text;
  for (int i = 0; i < 6; ++i) text += docs[i % 2] + "\n";
  const std::string file = path_join(dir.path, "held_out.txt");
  write_file_atomic(file, text);
  auto tok = tok::BpeTokenizer::load(path_join(model_dir, "tokenizer.json"));
  std::vector<int32_t> ids = {tok.eot_id()};
  for (int32_t id : tok.encode(text, false)) ids.push_back(id);
  auto m = model::load_pretrained(model_dir);
  m->eval();
  at::NoGradGuard no_grad;
  // Reference: windows of 17 tokens every `stride`, the first scoring all 16 targets, the others their
  // last `stride`; summed cross-entropy over scored targets.
  auto reference = [&](int64_t S, int64_t stride, int64_t& scored) {
    const auto n = static_cast<int64_t>(ids.size());
    double nll = 0;
    scored = 0;
    for (int64_t start = 0; start + S + 1 <= n; start += stride) {
      std::vector<int64_t> w(ids.begin() + start, ids.begin() + start + S + 1);
      at::Tensor t = at::tensor(w, at::kLong).unsqueeze(0);
      at::Tensor logp = at::log_softmax(m->forward(t.narrow(1, 0, S)).to(at::kDouble), -1)[0];
      for (int64_t j = (start == 0 ? 0 : S - stride); j < S; ++j) {
        nll -= logp[j][w[static_cast<size_t>(j + 1)]].item<double>();
        ++scored;
      }
    }
    return nll / static_cast<double>(scored);
  };
  for (int64_t stride : {16, 8, 3}) {
    const auto j = nlohmann::json::parse(pipeline::eval_text(model_dir, file, 0, stride, 4, true));
    EXPECT_EQ(j["seq_len"], 16);  // the model folder's training seq_len
    int64_t scored = 0;
    const double loss = reference(16, stride, scored);
    EXPECT_EQ(j["tokens"].get<int64_t>(), scored) << stride;
    EXPECT_NEAR(j["loss"].get<double>(), loss, 1e-4) << stride;
    EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(j["loss"].get<double>()), 1e-6);
    EXPECT_NEAR(j["bits_per_byte"].get<double>(),
                j["loss"].get<double>() * static_cast<double>(scored) / std::log(2.0) / j["bytes"].get<double>(), 1e-9);
  }
  // The CLI prints the same, and refuses a model folder that is not one.
  CliRun r = run_cli("eval --model " + model_dir + " --text " + file + " --json", dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["seq_len"], 16);
  CliRun bad = run_cli("eval --model " + dir.path + " --text " + file, dir.path);
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("did you mean " + model_dir + "?"), std::string::npos) << bad.err;
}
