// Training and scoring audio classifiers (audio/models.h) through the one training loop
// (train/trainer.h): AdamW, the schedule, clipping, bf16, checkpoints and exact resume, TensorBoard and
// early stopping come from the run config (--train.key=value); the task supplies batches of feature
// frames, each clip augmented in the loader (time shift, speed, noise at an SNR, SpecAugment masks)
// with a seed of (run seed, step, row), so a resumed run sees the same batches.
//
//   AudioTrainOptions o;  o.arch = "lstm";  o.augment = parse_audio_augment("shift=0.1,speed=0.9:1.1");
//   AudioTrainResult r = train_audio_model("runs/spoken-words-16k", "runs/audio-lstm", o);
//   // runs/audio-lstm/model/{config.json, model.safetensors}, audio_train.json, report.html, hardest/*.wav
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsforge/audio/augment.h"
#include "dsforge/audio/model_config.h"
#include "dsforge/audio/prepare.h"
#include "dsforge/eval/text_metrics.h"

namespace at {
class Tensor;
}

namespace dsforge::audio {

class AudioClassifierImpl;

// What the loader does to each training clip: the wave first (speed, shift, noise), then SpecAugment
// on its features.
struct AudioAugment {
  WaveAugment wave;
  SpecAugment spec;
  bool any() const;
  std::string describe() const;  // "none" or the spec parse_audio_augment reads back
};
// "none" or comma-separated: shift=SECONDS, speed=MIN:MAX, snr=DB, freq-mask=COUNTxWIDTH,
// time-mask=COUNTxWIDTH. ConfigError naming the item otherwise.
AudioAugment parse_audio_augment(const std::string& spec);

// Clips to normalised feature frames: the window (the clip centred in clip_samples), the optional
// augmentation, MFCC or log-mel, then (x - mean) / std per row.
class AudioFeaturizer {
 public:
  AudioFeaturizer(const AudioModelConfig& c, std::vector<double> mean = {}, std::vector<double> stddev = {});
  ~AudioFeaturizer();
  // The clip centred in the window: silence on both sides of a shorter clip, the middle of a longer one.
  std::vector<float> window(const float* x, int64_t n) const;
  // [n, rows, frames] float; clip k augmented with audio_seed(seed, step, first_row + k) when `augment`.
  at::Tensor batch(const AudioSplit& s, const std::vector<int64_t>& indices, const AudioAugment* augment = nullptr, uint64_t seed = 0,
                   int64_t step = 0, int64_t first_row = 0) const;
  at::Tensor batch(const std::vector<std::vector<float>>& clips) const;
  // The per-row mean and standard deviation of the split's (unaugmented) features: what training uses.
  void fit_normalisation(const AudioSplit& s);
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& stddev() const { return std_; }

 private:
  Features features(std::vector<float> window, const AudioAugment* augment, uint64_t seed) const;
  AudioModelConfig c_;
  std::unique_ptr<FeatureExtractor> fx_;
  std::vector<double> mean_, std_;
};
uint64_t audio_seed(uint64_t seed, int64_t step, int64_t row);

struct AudioTrainOptions {
  std::string arch = "lstm";  // lstm | gru | cnn
  nlohmann::json model;       // fields of AudioModelConfig that replace the architecture's defaults
  double clip_seconds = 0;    // the window; 0 = the longest training clip
  int64_t epochs = 20, batch = 32;
  double lr = 3e-3, weight_decay = 0.01;
  uint64_t seed = 0;
  AudioAugment augment;
  std::vector<std::string> overrides;  // run-config overrides for the loop ("train.precision=bf16")
};

struct HardClip {
  int64_t index = 0;
  std::string source, speaker, gold, predicted;
  double loss = 0, confidence = 0;  // the predicted class's probability
};
struct SpeakerScore {
  std::string speaker;
  int64_t clips = 0, correct = 0;
  double accuracy() const { return clips ? static_cast<double>(correct) / static_cast<double>(clips) : 0.0; }
};
struct AudioEvalResult {
  std::string split;
  eval::ClassificationReport report;
  double loss = 0;  // mean cross-entropy
  int64_t clips = 0;
  double clips_per_second = 0;        // features and forward, batches of 64
  std::vector<SpeakerScore> speakers;  // accuracy per voice
  std::vector<HardClip> hardest;       // highest loss first
  std::vector<int64_t> predictions;
};
struct AudioTrainResult {
  AudioModelConfig config;
  int64_t parameters = 0;
  double forward_flops = 0;
  int64_t train_clips = 0;
  double train_seconds = 0;
  std::vector<double> epoch_losses, val_accuracy;  // val_accuracy: after each epoch
  AudioEvalResult val, test;                       // test: empty when the data has no test split
  std::string out_dir;
};

// Trains on `data_dir`'s train split (validating after each epoch), scores val and test (voices never
// heard in training), writes out_dir/model/, out_dir/audio_train.json, out_dir/report.html and the
// hardest test clips as out_dir/hardest/*.wav. Checkpoints go to out_dir/checkpoints (the same command
// resumes an interrupted run).
AudioTrainResult train_audio_model(const std::string& data_dir, const std::string& out_dir, const AudioTrainOptions& opt);

// Accuracy, F1, the confusion matrix, accuracy per speaker and the `hard` highest-loss clips of `s`.
AudioEvalResult evaluate_audio_model(AudioClassifierImpl& model, const AudioFeaturizer& f, const AudioSplit& s, int64_t hard = 12);

// How the clips of a prepared folder were made ready (audio prepare's silence trim and loudness), kept
// with every model trained on them so that new files are read the same way.
struct AudioPreprocess {
  double trim_db = 40, target_dbfs = -20;  // trim_db < 0: no trimming
};
// A prepared folder's audio.json (the defaults where there is none); DataError naming the file when it
// is not valid JSON.
AudioPreprocess prepared_preprocess(const std::string& data_dir);
nlohmann::json to_json(const AudioPreprocess& p);
AudioPreprocess audio_preprocess_from_json(const nlohmann::json& j);  // missing keys keep the defaults

// A saved classifier: the model, its classes, the feature normalisation and the preprocessing of the
// data it was trained on.
struct LoadedAudioModel {
  std::shared_ptr<AudioClassifierImpl> model;
  std::shared_ptr<AudioFeaturizer> featurizer;
  std::vector<std::string> classes;
  AudioPreprocess preprocess;
  nlohmann::json config;
};
LoadedAudioModel load_audio_model(const std::string& model_dir);
AudioEvalResult evaluate_loaded_audio_model(const std::string& model_dir, const std::string& data_dir, const std::string& split);
// Audio files read, resampled, trimmed and normalised as the training data was; the class and its probability.
struct AudioPrediction {
  std::string file, label;
  double confidence = 0;
};
std::vector<AudioPrediction> predict_audio_files(const LoadedAudioModel& m, const std::vector<std::string>& files);
// A file made ready for a model: decoded, resampled to `rate`, its silence trimmed and its loudness
// normalised as `p` says (what `audio prepare` did). DataError naming the file when nothing is left.
std::vector<float> read_clip_for_model(const std::string& file, int64_t rate, const AudioPreprocess& p);

nlohmann::ordered_json audio_eval_json(const AudioEvalResult& e);
nlohmann::ordered_json audio_train_json(const AudioTrainResult& r);
// The report page: data, loss and validation accuracy per epoch, confusion matrix, per-class F1,
// accuracy per held-out voice, the hardest clips (to listen to: hardest/*.wav beside the page).
std::string audio_report_html(const AudioTrainResult& r, const AudioAugment& augment);

}  // namespace dsforge::audio
