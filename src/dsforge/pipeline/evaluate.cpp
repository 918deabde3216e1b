// dsforge eval: the run's validation split (beside the unigram baseline), or any text file.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/text.h"
#include "dsforge/data/shards.h"
#include "dsforge/eval/lm_eval.h"
#include "dsforge/model/io.h"
#include "dsforge/pipeline/run_folder.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/tokenizer/encode_corpus.h"

namespace dsforge::pipeline {
namespace {

// Bytes each id decodes to, for bits per byte; a special token (the document separator) counts as
// the one newline it replaced.
std::vector<int64_t> bytes_per_token(const tok::BpeTokenizer& tok, int64_t vocab_size) {
  std::vector<int64_t> out(static_cast<size_t>(vocab_size), 1);
  for (int64_t id = 0; id < std::min<int64_t>(tok.vocab_size(), vocab_size); ++id)
    out[static_cast<size_t>(id)] = static_cast<int64_t>(tok.token_bytes(static_cast<int32_t>(id)).size());
  // Special tokens sit anywhere (first in ours, last in DeepSeek's): each counts as the one byte it replaced.
  for (const auto& s : tok.special_tokens()) {
    const int32_t id = tok.special_id(s);
    if (id >= 0 && id < vocab_size) out[static_cast<size_t>(id)] = 1;
  }
  return out;
}

// The sequence length evaluation uses: the one asked for, else the one the model was trained with.
int64_t eval_seq_len(const std::string& model_dir, int64_t asked, int64_t fallback, const char* fallback_name) {
  if (asked > 0) return asked;
  const model::TrainingInfo info = model::load_training_info(model_dir);
  if (info.seq_len > 0) return info.seq_len;
  log_info("eval: ", model_dir, " does not record its training seq_len; using ", fallback_name, " = ", fallback);
  return fallback;
}

// "N x lower" when the model beats the baseline, "N x higher" when it is worse.
std::string versus(double model_ppl, double baseline_ppl) {
  if (model_ppl <= baseline_ppl) return fmt(fixed_digits(baseline_ppl / model_ppl, 1), "x lower than");
  return fmt(fixed_digits(model_ppl / baseline_ppl, 1), "x higher than");
}

}  // namespace

void stage_eval(const RunConfig& cfg) {
  const std::string model_dir = path_join(cfg.run.out_dir, "model");
  if (!file_exists(path_join(model_dir, "config.json")))
    throw DataError(fmt(model_dir, ": no trained model (made by `dsforge train",
                        cfg.source_path.empty() ? "" : " --config " + cfg.source_path, "`)"));
  claim_run_folder(cfg, "eval");
  auto m = model::load_pretrained(model_dir);
  const std::string manifest_path = path_join(cfg.run.out_dir, "shards/manifest.json");
  data::Manifest manifest = data::read_manifest(manifest_path);
  const std::string shard_dir = path_join(cfg.run.out_dir, "shards");
  const std::string val = path_join(shard_dir, manifest.val.files.at(0));
  const std::string train = path_join(shard_dir, manifest.train.files.at(0));
  auto tok = tok::BpeTokenizer::load(path_join(model_dir, "tokenizer.json"));
  const std::vector<int64_t> token_bytes = bytes_per_token(tok, manifest.vocab_size);
  const int64_t seq_len = eval_seq_len(model_dir, 0, cfg.train.seq_len, "train.seq_len");
  eval::LmEval ev = eval::evaluate_lm(m, val, seq_len, cfg.train.batch_size, 0, &token_bytes);
  eval::LmEval uni = eval::unigram_baseline(train, val, manifest.vocab_size, &token_bytes);
  nlohmann::ordered_json j = {{"val_loss", ev.loss},
                              {"val_perplexity", ev.perplexity},
                              {"val_bits_per_byte", ev.bits_per_byte},
                              {"val_tokens", ev.tokens},
                              {"val_bytes", ev.bytes},
                              {"seq_len", seq_len},
                              {"unigram_bits_per_byte", uni.bits_per_byte},
                              {"unigram_loss", uni.loss},
                              {"unigram_perplexity", uni.perplexity},
                              {"perplexity_ratio_vs_unigram", ev.perplexity / uni.perplexity}};
  if (manifest.has_test()) {  // the user's own test set (data.test_paths), scored the same way
    eval::LmEval te = eval::evaluate_lm(m, path_join(shard_dir, manifest.test.files.at(0)), seq_len, cfg.train.batch_size, 0,
                                        &token_bytes);
    j["test_loss"] = te.loss;
    j["test_perplexity"] = te.perplexity;
    j["test_bits_per_byte"] = te.bits_per_byte;
    j["test_tokens"] = te.tokens;
    log_info("eval: test loss ", fixed_digits(te.loss, 4), " nats/token, perplexity ", fixed_digits(te.perplexity, 2), " over ",
             te.tokens, " tokens");
  }
  write_file_atomic(path_join(cfg.run.out_dir, "eval.json"), j.dump(2) + "\n");
  log_info("eval: validation loss ", fixed_digits(ev.loss, 4), " nats/token, perplexity ", fixed_digits(ev.perplexity, 2), ", ",
           fixed_digits(ev.bits_per_byte, 3), " bits/byte over ", ev.tokens, " tokens (", ev.bytes, " bytes, windows of ",
           seq_len, ")");
  log_info("eval: unigram baseline (same tokenizer, same split) perplexity ", fixed_digits(uni.perplexity, 2), ": the model is ",
           versus(ev.perplexity, uni.perplexity), " the baseline");
}

std::string eval_text(const std::string& model_dir, const std::string& text_path, int64_t seq_len, int64_t stride,
                      int64_t batch, bool as_json) {
  check_model_dir(model_dir);
  if (!file_exists(text_path)) throw DataError(fmt(text_path, ": cannot open"));
  auto m = model::load_pretrained(model_dir);
  auto tok = tok::BpeTokenizer::load(path_join(model_dir, "tokenizer.json"));
  const int64_t vocab = m->config().vocab_size;
  seq_len = eval_seq_len(model_dir, seq_len, 512, "--seq-len");
  if (stride < 0 || stride > seq_len) throw ConfigError(fmt("--stride ", stride, ": must be in [1, ", seq_len, "] (0 = seq_len)"));

  // The file as one token stream in a temporary shard (tok::encode_text_stream: bounded memory).
  char tmpl[] = "/tmp/dsforge-eval-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  if (fd < 0) throw IoError("eval: cannot create a temporary shard in /tmp");
  ::close(fd);
  const std::string shard = tmpl;
  int64_t text_bytes = 0;
  try {
    data::ShardWriter writer(shard, vocab);
    text_bytes = tok::encode_text_stream(text_path, tok, writer);
    writer.finish(1);
    if (static_cast<int64_t>(writer.tokens()) < seq_len + 1)
      throw DataError(fmt(text_path, ": ", writer.tokens() - 1, " tokens, fewer than one window of ", seq_len,
                          " (pass a smaller --seq-len)"));
    const std::vector<int64_t> token_bytes = bytes_per_token(tok, vocab);
    eval::LmEval ev = eval::evaluate_lm(m, shard, seq_len, batch, 0, &token_bytes, stride);
    remove_all(shard);
    nlohmann::ordered_json j = {{"model", model_dir},    {"text", text_path},     {"text_bytes", text_bytes},
                                {"seq_len", seq_len},    {"stride", stride > 0 ? stride : seq_len},
                                {"tokens", ev.tokens},   {"bytes", ev.bytes},     {"loss", ev.loss},
                                {"perplexity", ev.perplexity}, {"bits_per_byte", ev.bits_per_byte}};
    if (as_json) return j.dump(2) + "\n";
    return fmt("model          ", model_dir, "\ntext           ", text_path, " (", text_bytes, " bytes)\n",
               "windows        ", seq_len, " tokens, stride ", j["stride"].get<int64_t>(), "\n",
               "scored         ", ev.tokens, " tokens (", ev.bytes, " bytes)\n",
               "loss           ", fixed_digits(ev.loss, 4), " nats/token\n",
               "perplexity     ", fixed_digits(ev.perplexity, 2), "\n",
               "bits per byte  ", fixed_digits(ev.bits_per_byte, 4), "\n");
  } catch (...) {
    remove_all(shard);
    throw;
  }
}

}  // namespace dsforge::pipeline
