#include "dsforge/eval/lm_eval.h"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "dsforge/core/error.h"
#include "dsforge/data/shards.h"

namespace dsforge::eval {

namespace {
void finish(LmEval& r, double nats) {
  r.loss = r.tokens ? nats / static_cast<double>(r.tokens) : 0.0;
  r.perplexity = std::exp(r.loss);
  r.bits_per_byte = r.bytes > 0 ? nats / std::log(2.0) / static_cast<double>(r.bytes) : 0.0;
}
}  // namespace

LmEval evaluate_lm(model::CausalLm m, const std::string& shard_path, int64_t seq_len, int64_t batch,
                   int64_t max_batches, const std::vector<int64_t>* token_bytes, int64_t stride) {
  if (stride <= 0) stride = seq_len;
  if (stride > seq_len) throw Error(fmt("eval: stride ", stride, " exceeds seq_len ", seq_len, " (tokens would be skipped)"));
  at::NoGradGuard no_grad;
  const bool was_training = m->is_training();
  m->eval();
  data::TokenLoader loader(shard_path, seq_len + 1, stride, 0, /*shuffle=*/false);
  const int64_t n_windows = loader.windows_per_epoch();
  int64_t n_batches = (n_windows + batch - 1) / batch;
  if (max_batches > 0) n_batches = std::min(n_batches, max_batches);
  const auto device = m->parameters().front().device();
  double sum = 0;
  int64_t count = 0, served = 0, bytes = 0;
  for (int64_t b = 0; b < n_batches; ++b) {
    const int64_t rows = std::min(batch, n_windows - served);
    const int64_t first_window = served;
    at::Tensor tokens = loader.next_batch(rows).to(device);
    served += rows;
    at::Tensor x = tokens.narrow(1, 0, seq_len), y = tokens.narrow(1, 1, seq_len);
    at::Tensor logits = m->forward(x).to(at::kFloat);
    if (stride < seq_len) {
      // Window 0 scores every target; later windows only the `stride` targets no earlier window scored.
      const int64_t skip = seq_len - stride;
      if (first_window == 0 && rows > 0) {
        at::Tensor ce0 = at::cross_entropy_loss(logits[0].narrow(0, 0, skip), y[0].narrow(0, 0, skip), {},
                                                at::Reduction::Sum);
        sum += ce0.item<double>();
        count += skip;
        if (token_bytes) {
          at::Tensor yc = y[0].narrow(0, 0, skip).to(at::kCPU).contiguous();
          for (int64_t i = 0; i < yc.numel(); ++i) bytes += token_bytes->at(static_cast<size_t>(yc.data_ptr<int64_t>()[i]));
        }
      }
      logits = logits.narrow(1, skip, stride);
      y = y.narrow(1, skip, stride);
    }
    at::Tensor ce = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}), {},
                                           at::Reduction::Sum);
    sum += ce.item<double>();
    count += y.numel();
    if (token_bytes) {
      at::Tensor yc = y.to(at::kCPU).contiguous();
      const int64_t* ids = yc.data_ptr<int64_t>();
      for (int64_t i = 0; i < yc.numel(); ++i) bytes += token_bytes->at(static_cast<size_t>(ids[i]));
    }
  }
  if (was_training) m->train();
  LmEval r;
  r.tokens = count;
  r.bytes = bytes;
  finish(r, sum);
  return r;
}

std::function<train::Scalars(int64_t)> lm_validator(model::CausalLm m, const std::string& manifest_path, int64_t seq_len,
                                                    int64_t batch, int64_t max_batches) {
  const data::Manifest manifest = data::read_manifest(manifest_path);
  const std::string val = (std::filesystem::path(manifest_path).parent_path() / manifest.val.files.at(0)).string();
  return [m, val, seq_len, batch, max_batches](int64_t) {
    const LmEval ev = evaluate_lm(m, val, seq_len, batch, max_batches);
    return train::Scalars{{"val_loss", ev.loss}, {"val_perplexity", ev.perplexity}};
  };
}

LmEval unigram_baseline(const std::string& train_shard, const std::string& eval_shard, int64_t vocab_size,
                        const std::vector<int64_t>* token_bytes) {
  std::vector<double> counts(static_cast<size_t>(vocab_size), 1.0);  // add-one
  double total = static_cast<double>(vocab_size);
  {
    data::TokenShard t(train_shard);
    for (uint64_t i = 0; i < t.size(); ++i) counts[static_cast<size_t>(t.at(i))] += 1.0;
    total += static_cast<double>(t.size());
  }
  data::TokenShard e(eval_shard);
  double nll = 0;
  LmEval r;
  for (uint64_t i = 1; i < e.size(); ++i) {
    nll -= std::log(counts[static_cast<size_t>(e.at(i))] / total);
    if (token_bytes) r.bytes += token_bytes->at(static_cast<size_t>(e.at(i)));
  }
  r.tokens = static_cast<int64_t>(e.size()) - 1;  // the same targets a next-token model predicts
  finish(r, nll);
  return r;
}

}  // namespace dsforge::eval
