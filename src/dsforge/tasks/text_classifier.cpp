#include "dsforge/tasks/text_classifier.h"

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/safetensors.h"
#include "dsforge/model/config.h"
#include "dsforge/model/deepseek.h"
#include "dsforge/model/io.h"

namespace dsforge::tasks {

std::pair<at::Tensor, at::Tensor> encode_texts(const tok::BpeTokenizer& tok, const std::vector<std::string>& texts, int64_t max_len,
                                               int64_t pad) {
  std::vector<std::vector<int32_t>> ids;
  int64_t L = 1;
  for (const std::string& text : texts) {
    auto t = tok.encode(text, false);
    if (static_cast<int64_t>(t.size()) > max_len) t.resize(static_cast<size_t>(max_len));
    if (t.empty()) t.push_back(static_cast<int32_t>(pad));
    L = std::max<int64_t>(L, static_cast<int64_t>(t.size()));
    ids.push_back(std::move(t));
  }
  const auto B = static_cast<int64_t>(texts.size());
  at::Tensor x = at::full({B, L}, pad, at::kLong);
  at::Tensor m = at::zeros({B, L}, at::kFloat);
  auto xa = x.accessor<int64_t, 2>();
  auto ma = m.accessor<float, 2>();
  for (size_t b = 0; b < ids.size(); ++b)
    for (size_t j = 0; j < ids[b].size(); ++j) {
      xa[static_cast<int64_t>(b)][static_cast<int64_t>(j)] = ids[b][j];
      ma[static_cast<int64_t>(b)][static_cast<int64_t>(j)] = 1.0f;
    }
  return {x, m};
}

at::Tensor masked_mean(const at::Tensor& h, const at::Tensor& mask) {
  const at::Tensor m = mask.to(h.device(), at::kFloat);
  return (h.to(at::kFloat) * m.unsqueeze(-1)).sum(1) / m.sum(1, true).clamp_min(1.0);
}

TextClassifier::TextClassifier(std::shared_ptr<ClassifierModule> m, std::shared_ptr<const tok::BpeTokenizer> tok,
                               std::vector<std::string> labels, int64_t max_len)
    : m_(std::move(m)), tok_(std::move(tok)), labels_(std::move(labels)), max_len_(max_len),
      pad_(std::max<int64_t>(tok_->eot_id(), 0)) {}

std::pair<at::Tensor, at::Tensor> TextClassifier::encode(const std::vector<std::string>& texts) const {
  return encode_texts(*tok_, texts, max_len_, pad_);
}

at::Tensor TextClassifier::logits(const std::vector<std::string>& texts) const {
  at::NoGradGuard ng;
  m_->eval();
  auto [x, mask] = encode(texts);
  return m_->head(masked_mean(m_->backbone->hidden_states(x), mask));
}

at::Tensor TextClassifier::probabilities(const std::vector<std::string>& texts) const {
  std::vector<at::Tensor> parts;
  for (size_t b0 = 0; b0 < texts.size(); b0 += 64) {
    const std::vector<std::string> part(texts.begin() + static_cast<long>(b0), texts.begin() + static_cast<long>(std::min(texts.size(), b0 + 64)));
    parts.push_back(at::softmax(logits(part).to(at::kFloat), -1).to(at::kCPU));
  }
  return parts.empty() ? at::zeros({0, static_cast<int64_t>(labels_.size())}) : at::cat(parts).contiguous();
}

std::vector<std::string> TextClassifier::predict(const std::vector<std::string>& texts) const {
  const at::Tensor best = probabilities(texts).argmax(-1).contiguous();
  std::vector<std::string> out;
  for (int64_t i = 0; i < best.numel(); ++i) out.push_back(labels_[static_cast<size_t>(best.data_ptr<int64_t>()[i])]);
  return out;
}

at::Tensor TextClassifier::embed(const at::Tensor& ids) const { return m_->backbone->embed(ids); }

at::Tensor TextClassifier::logits_from_embeddings(const at::Tensor& embeds, const at::Tensor& mask) const {
  return tasks::logits_from_embeddings(*m_, embeds, mask, "embedding-space attack (the synonym attack works on any backbone)");
}

at::Tensor logits_from_embeddings(ClassifierModule& m, const at::Tensor& embeds, const at::Tensor& mask, const std::string& what) {
  auto* ds = dynamic_cast<model::DeepseekV3Impl*>(m.backbone.get());
  if (!ds) throw ConfigError(fmt(what, ": needs a DeepSeek-V3 backbone; this one is '", m.backbone->config().model_type, "'"));
  return m.head(masked_mean(ds->hidden_from_embeddings(embeds), mask));
}

int64_t TextClassifier::label_index(const std::string& label) const {
  const auto it = std::find(labels_.begin(), labels_.end(), label);
  return it == labels_.end() ? -1 : static_cast<int64_t>(it - labels_.begin());
}

void save_text_classifier(const std::string& dir, const ClassifierModule& m, const std::string& base_model_dir,
                          const std::vector<std::string>& labels, int64_t max_len) {
  make_dirs(dir);
  TensorMap weights = model::model_state(*m.backbone);
  weights["score.weight"] = m.head->weight.detach();
  weights["score.bias"] = m.head->bias.detach();
  const nlohmann::json lj = labels;
  save_safetensors(path_join(dir, "classifier.safetensors"), weights,
                   {{"labels", lj.dump()}, {"max_len", std::to_string(max_len)}});
  write_file_atomic(path_join(dir, "config.json"), model::model_config_to_json(m.backbone->config()));
  model::copy_companion_files(base_model_dir, dir);
}

TextClassifier load_text_classifier(const std::string& dir) {
  for (const char* f : {"classifier.safetensors", "config.json", "tokenizer.json"})
    if (!file_exists(path_join(dir, f)))
      throw IoError(fmt(dir, ": no ", f, " (a folder written by `dsforge finetune --task tsv --out DIR`?)"));
  const std::string cfg_path = path_join(dir, "config.json");
  model::CausalLm backbone = model::build_model(model::model_config_from_json(read_file(cfg_path), cfg_path));
  const std::string weights_path = path_join(dir, "classifier.safetensors");
  SafetensorsFile f = load_safetensors(weights_path);
  std::vector<std::string> labels;
  try {
    labels = nlohmann::json::parse(f.metadata.at("labels")).get<std::vector<std::string>>();
  } catch (const std::exception&) {
    throw CheckpointError(fmt(weights_path, ": metadata has no 'labels' list"));
  }
  const auto it = f.metadata.find("max_len");
  const int64_t max_len = it == f.metadata.end() ? 64 : std::stoll(it->second);
  const at::Tensor w = f.tensors.count("score.weight") ? f.tensors.at("score.weight") : at::Tensor();
  if (!w.defined() || w.size(0) != static_cast<int64_t>(labels.size()))
    throw CheckpointError(fmt(weights_path, ": score.weight missing or not [", labels.size(), ", d]"));
  auto m = std::make_shared<ClassifierModule>(backbone, backbone->config().hidden_size, w.size(0));
  {
    at::NoGradGuard ng;
    const at::Tensor b = f.tensors.count("score.bias") ? f.tensors.at("score.bias") : at::Tensor();
    if (!b.defined() || w.size(1) != m->head->weight.size(1) || b.numel() != w.size(0))
      throw CheckpointError(fmt(weights_path, ": score.weight / score.bias do not fit the backbone's hidden size"));
    m->head->weight.copy_(w);
    m->head->bias.copy_(b);
  }
  f.tensors.erase("score.weight");
  f.tensors.erase("score.bias");
  model::load_model_state(*backbone, f.tensors, weights_path);
  m->eval();
  return TextClassifier(m, std::make_shared<const tok::BpeTokenizer>(tok::BpeTokenizer::load(path_join(dir, "tokenizer.json"))),
                        std::move(labels), max_len);
}

}  // namespace dsforge::tasks
