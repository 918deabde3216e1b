// A fine-tuned text classifier as one object: the language-model backbone, the linear head over its
// mean-pooled last hidden states, the tokenizer and the labels. `dsforge finetune --task tsv --out DIR`
// writes DIR/{classifier.safetensors, config.json, tokenizer.json}; load_text_classifier reads them back
// for the attacks and fairness measurements of robust/.
//
//   TextClassifier c = load_text_classifier("runs/sst2");
//   at::Tensor p = at::softmax(c.logits({"a charming film"}), -1);      // [1, classes]
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dsforge/model/causal_lm.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge::tasks {

// The backbone and its classification head as one module: "model.*" and "score.*".
struct ClassifierModule : torch::nn::Module {
  ClassifierModule(model::CausalLm b, int64_t d, int64_t classes) {
    backbone = register_module("model", std::move(b));
    head = register_module("score", torch::nn::Linear(torch::nn::LinearOptions(d, classes)));
  }
  model::CausalLm backbone;
  torch::nn::Linear head{nullptr};
};

// Token ids [B, L] of texts (each cut to max_len, an empty one becomes one `pad`), right-padded with
// `pad`, and the mask [B, L] of real tokens (float).
std::pair<at::Tensor, at::Tensor> encode_texts(const tok::BpeTokenizer& tok, const std::vector<std::string>& texts, int64_t max_len,
                                               int64_t pad);
// Mean of hidden states h [B, L, d] over the real tokens of `mask` [B, L] (right padding: a causal
// model's real positions never see the padding, so this equals the unpadded computation).
at::Tensor masked_mean(const at::Tensor& h, const at::Tensor& mask);

class TextClassifier {
 public:
  TextClassifier(std::shared_ptr<ClassifierModule> m, std::shared_ptr<const tok::BpeTokenizer> tok, std::vector<std::string> labels,
                 int64_t max_len);
  // Logits [B, classes] of one batch (eval mode, no gradient).
  at::Tensor logits(const std::vector<std::string>& texts) const;
  // Class probabilities [N, classes] on the CPU of any number of texts, scored in batches of 64.
  at::Tensor probabilities(const std::vector<std::string>& texts) const;
  // The predicted label of each text.
  std::vector<std::string> predict(const std::vector<std::string>& texts) const;
  std::pair<at::Tensor, at::Tensor> encode(const std::vector<std::string>& texts) const;
  // Input embeddings [B, L, d] of token ids, and the logits of a batch given as embeddings (a DeepSeek
  // backbone only: others are refused naming their type). Gradients flow.
  at::Tensor embed(const at::Tensor& ids) const;
  at::Tensor logits_from_embeddings(const at::Tensor& embeds, const at::Tensor& mask) const;
  // Index of a label, or -1.
  int64_t label_index(const std::string& label) const;
  const std::vector<std::string>& labels() const { return labels_; }
  ClassifierModule& module() const { return *m_; }
  const tok::BpeTokenizer& tokenizer() const { return *tok_; }
  int64_t max_len() const { return max_len_; }

 private:
  std::shared_ptr<ClassifierModule> m_;
  std::shared_ptr<const tok::BpeTokenizer> tok_;
  std::vector<std::string> labels_;
  int64_t max_len_, pad_;
};

// The head over the masked mean of a DeepSeek backbone's hidden states for input embeddings [B, L, d];
// another backbone is refused naming its type and `what` needed the embeddings.
at::Tensor logits_from_embeddings(ClassifierModule& m, const at::Tensor& embeds, const at::Tensor& mask, const std::string& what);

// Saves a classifier into dir: classifier.safetensors (with the labels and max_len), config.json, and
// the tokenizer files of the model folder it was fine-tuned from (model::copy_companion_files).
void save_text_classifier(const std::string& dir, const ClassifierModule& m, const std::string& base_model_dir,
                          const std::vector<std::string>& labels, int64_t max_len);
// What save_text_classifier wrote; a folder without those files is refused naming what is missing.
TextClassifier load_text_classifier(const std::string& dir);

}  // namespace dsforge::tasks
