// Image-to-text: an image encoder (the CNN, MobileNet or ViT of vision/models.h) whose column features
// are projected into a DeepSeek language model's embedding space and put before the text as prefix
// tokens (one per column band, with a learned position each; Tsimpoukelli et al. 2021 "Frozen", LLaVA's
// projector). Trained through the one training loop on an image-to-text task built from a prepared
// digit set: `digits` digits side by side, and two questions about the picture:
//
//   "Q: what number is shown? A:"           -> " forty-seven"
//   "Q: what is the sum of the digits? A:"  -> " eleven"
//
// The loss is the language model's next-token cross-entropy on the answer and its end-of-text token;
// the language model is tuned with the rest or frozen (then only the encoder, projector and prefix
// positions learn). Held-out pictures are made from the val split's digits, never seen in training;
// answers are decoded greedily and scored by exact match and BLEU.
//
//   MultimodalResult r = train_multimodal("runs/quickstart/model", "runs/mnist/data", "runs/mm", {});
//   std::string a = answer_about_image("runs/mm/model", "pair.png", "Q: what number is shown? A:");
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dsforge::vision {

struct MultimodalOptions {
  std::string encoder = "cnn";  // cnn | mobilenet | vit
  bool freeze_lm = false;
  // A trained `dsforge image train` folder of the same architecture whose weights start the encoder (the
  // tensors whose names and shapes match: the convolutions of a CNN trained on single digits fit pictures
  // of any width; a ViT's position table does not). Empty = the encoder starts from random weights.
  std::string encoder_from;
  int64_t digits = 2;           // digits side by side (1..3)
  int64_t train_examples = 8000, test_examples = 500;
  int64_t epochs = 3, batch = 32;
  double lr = 1e-3, weight_decay = 0.01;
  uint64_t seed = 0;
  int64_t write_examples = 8;   // held-out pictures written to <out>/examples/ with their questions and answers
  std::vector<std::string> overrides;  // run-config overrides for the loop
};

// "forty-seven": English number words for 0..999.
std::string number_words(int64_t n);
// The task's questions, in order.
const std::vector<std::string>& multimodal_questions();

struct MultimodalSample {
  std::string question, expected, answer;
  bool correct = false;
};
struct MultimodalResult {
  double exact_match = 0, bleu = 0, chrf = 0;  // (answers of one to three words have few 4-grams: chrF tells more)
  std::vector<double> exact_match_by_question;
  int64_t held_out = 0, train_examples = 0;
  int64_t trainable_parameters = 0, total_parameters = 0, prefix_tokens = 0;
  bool freeze_lm = false;
  // A trained `dsforge image train` folder of the same architecture whose weights start the encoder (the
  // tensors whose names and shapes match: the convolutions of a CNN trained on single digits fit pictures
  // of any width; a ViT's position table does not). Empty = the encoder starts from random weights.
  std::string encoder_from;
  double train_seconds = 0;
  std::vector<double> epoch_losses;
  std::vector<MultimodalSample> samples;  // the first held-out answers
};

// lm_dir: a DeepSeek-V3 model folder with tokenizer.json; data_dir: a prepared image set whose classes
// are the digits 0..9 (MNIST, digits.csv). Writes out_dir/model/ (lm/, vision.safetensors, config.json),
// out_dir/multimodal.json and out_dir/examples/.
MultimodalResult train_multimodal(const std::string& lm_dir, const std::string& data_dir, const std::string& out_dir,
                                  const MultimodalOptions& opt);
nlohmann::ordered_json multimodal_json(const MultimodalResult& r);

// The answer of a trained multimodal folder to `prompt` about an image file (read, made grayscale or
// colour and resized like the training pictures), decoded greedily up to max_new_tokens or end of text.
std::string answer_about_image(const std::string& model_dir, const std::string& image_file, const std::string& prompt,
                               int64_t max_new_tokens = 16);

}  // namespace dsforge::vision
