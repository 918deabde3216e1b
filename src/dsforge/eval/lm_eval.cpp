#include "dsforge/eval/lm_eval.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

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
                   int64_t max_batches, const std::vector<int64_t>* token_bytes) {
  at::NoGradGuard no_grad;
  const bool was_training = m->is_training();
  m->eval();
  data::TokenLoader loader(shard_path, seq_len + 1, seq_len, 0, /*shuffle=*/false);
  const int64_t n_windows = loader.windows_per_epoch();
  int64_t n_batches = (n_windows + batch - 1) / batch;
  if (max_batches > 0) n_batches = std::min(n_batches, max_batches);
  const auto device = m->parameters().front().device();
  double sum = 0;
  int64_t count = 0, served = 0, bytes = 0;
  for (int64_t b = 0; b < n_batches; ++b) {
    const int64_t rows = std::min(batch, n_windows - served);
    at::Tensor tokens = loader.next_batch(rows).to(device);
    served += rows;
    at::Tensor x = tokens.narrow(1, 0, seq_len), y = tokens.narrow(1, 1, seq_len);
    at::Tensor logits = m->forward(x).to(at::kFloat);
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
