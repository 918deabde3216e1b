// A DeepSeek language model that answers questions about pictures and spoken clips. Each input's encoder
// (an image CNN, MobileNet or ViT of vision/models.h; an audio LSTM, GRU or CNN of audio/models.h) gives a
// sequence of feature vectors (image column bands, audio time windows) that a linear projector maps into
// the language model's embedding space, plus a learned position each; these prefix tokens, image first,
// precede the question text (Tsimpoukelli et al. 2021 "Frozen", LLaVA's projector). Trained through the
// one training loop; the loss is the language model's next-token cross-entropy on the answer and its
// end-of-text token; the language model is tuned with the rest or frozen. Three tasks:
//
//   digits      pictures of `digits` MNIST digits side by side (image)
//               "Q: what number is shown? A:"                              -> " forty-seven"
//               "Q: what is the sum of the digits? A:"                     -> " eleven"
//   spoken      a clip of the spoken-words set (audio)
//               "Q: which word is spoken? A:"                              -> " seven"
//               "Q: what does the spoken word mean? A:"                    -> its first WordNet noun sense
//   digit-pair  one digit picture and one spoken digit (image + audio)
//               "Q: do the shown and the spoken digit match? A:"           -> " yes" / " no" (half match)
//               "Q: what is the sum of the shown and the spoken digit? A:" -> " eleven"
//
// `inputs` drops a modality to measure what each contributes: digit-pair with inputs "image" sees the
// picture only (the single-modality baseline). Held-out examples use the image set's val split (digits
// never seen) and the audio set's test split (voices never heard); answers are decoded greedily and
// scored by exact match, BLEU and chrF.
//
//   MultimodalResult r = train_multimodal("runs/quickstart/model", "runs/mnist/data", "runs/mm", {});
//   std::string a = answer_about("runs/mm/model", "pair.png", "", "Q: what number is shown? A:");
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dsforge::vision {

struct MultimodalOptions {
  std::string task = "digits";  // digits | spoken | digit-pair
  std::string inputs = "all";   // all | image | audio: the task's modalities the model sees
  std::string encoder = "cnn";  // cnn | mobilenet | vit
  bool freeze_lm = false;
  // A trained `dsforge image train` folder of the same architecture whose weights start the encoder (the
  // tensors whose names and shapes match: the convolutions of a CNN trained on single digits fit pictures
  // of any width; a ViT's position table does not). Empty = the encoder starts from random weights.
  std::string encoder_from;
  int64_t digits = 2;           // digits side by side (1..3; the digits task)
  // Audio: a prepared folder (`dsforge audio prepare`; spoken and digit-pair: the spoken-words set), the
  // encoder, and an `audio train` model folder that starts it (its features, normalisation and the
  // tensors that fit; then audio_encoder must be its architecture).
  std::string audio_data, audio_encoder = "cnn", audio_encoder_from;
  std::string wordnet_dir = "/usr/share/wordnet";  // the spoken task's definitions
  int64_t train_examples = 8000, test_examples = 500;
  int64_t epochs = 3, batch = 32;
  double lr = 1e-3, weight_decay = 0.01;
  uint64_t seed = 0;
  int64_t write_examples = 8;   // held-out pictures written to <out>/examples/ with their questions and answers
  std::vector<std::string> overrides;  // run-config overrides for the loop
};

// "forty-seven": English number words for 0..999.
std::string number_words(int64_t n);
// A task's questions, in order (ConfigError for an unknown task).
const std::vector<std::string>& multimodal_questions(const std::string& task = "digits");

struct MultimodalSample {
  std::string question, expected, answer;
  bool correct = false;
};
struct MultimodalResult {
  std::string task, inputs;
  std::vector<std::string> questions;
  double exact_match = 0, bleu = 0, chrf = 0;  // (answers of one to three words have few 4-grams: chrF tells more)
  std::vector<double> exact_match_by_question;
  int64_t held_out = 0, train_examples = 0;
  int64_t max_answer_tokens = 0;  // the decoding limit: the longest training answer's tokens + 4
  int64_t trainable_parameters = 0, total_parameters = 0, prefix_tokens = 0;  // image and audio tokens together
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
// are the digits 0..9 (MNIST, digits.csv; "" for the spoken task). Writes out_dir/model/ (lm/,
// vision.safetensors and/or audio.safetensors, config.json), out_dir/multimodal.json and out_dir/examples/
// (held-out pictures and clips with their questions and expected answers).
MultimodalResult train_multimodal(const std::string& lm_dir, const std::string& data_dir, const std::string& out_dir,
                                  const MultimodalOptions& opt);
nlohmann::ordered_json multimodal_json(const MultimodalResult& r);

// The answer of a trained multimodal folder to `prompt` about an image file and/or an audio file (each
// given exactly when the model reads that modality; read and preprocessed like the training inputs),
// decoded greedily up to max_new_tokens or end of text.
std::string answer_about(const std::string& model_dir, const std::string& image_file, const std::string& audio_file,
                         const std::string& prompt, int64_t max_new_tokens = 16);

}  // namespace dsforge::vision
