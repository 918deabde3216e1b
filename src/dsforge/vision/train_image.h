// Training and scoring image classifiers through the one training loop (train/trainer.h): AdamW, the
// schedule, clipping, bf16, checkpoints and exact resume, TensorBoard and early stopping all come from
// the run config (--train.key=value); the task supplies augmented, normalised batches.
//
//   ImageTrainOptions o;  o.model.arch = "cnn";  o.augment = parse_augment("rotate=10,translate=0.1");
//   ImageTrainResult r = train_image_model("runs/mnist/data", "runs/mnist/cnn", o);
//   // runs/mnist/cnn/model/{config.json, model.safetensors}, image.json, report.html
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "dsforge/eval/text_metrics.h"
#include "dsforge/train/attack_options.h"
#include "dsforge/vision/augment.h"
#include "dsforge/vision/images.h"
#include "dsforge/vision/model_config.h"

namespace at {
class Tensor;
}

namespace dsforge::vision {

class ImageClassifierImpl;

struct ImageTrainOptions {
  std::string arch = "cnn";
  nlohmann::json model;  // fields of ImageModelConfig that replace the architecture's defaults
  int64_t epochs = 10, batch = 64;
  double lr = 2e-3, weight_decay = 0.05;
  uint64_t seed = 0;
  AugmentOptions augment;
  std::vector<std::string> overrides;  // run-config overrides for the loop ("train.precision=bf16")
  // Adversarial training (Madry et al. 2018): each batch is attacked in pixel space [0, 1] (the model in
  // eval mode, seeded by step and row) and the loss is adversarial_weight x CE(attacked) +
  // (1 - adversarial_weight) x CE(clean).
  std::optional<train::AttackOptions> adversarial;
  double adversarial_weight = 1.0;
};

struct HardExample {
  int64_t index = 0;
  std::string source, gold, predicted;
  double loss = 0, confidence = 0;  // the predicted class's probability
};
struct ImageEvalResult {
  eval::ClassificationReport report;
  double loss = 0;  // mean cross-entropy
  int64_t images = 0;
  double images_per_second = 0;  // forward passes in batches of 64
  std::vector<HardExample> hardest;  // highest loss first
  std::vector<int64_t> predictions;
};
struct ImageTrainResult {
  ImageModelConfig config;
  int64_t parameters = 0;
  double forward_flops = 0;
  int64_t train_images = 0;
  double train_seconds = 0;
  std::vector<double> epoch_losses;
  ImageEvalResult val;
  std::string out_dir;
};

// Normalised float batch [n, C, H, W] of the images at `indices` ((x / 255 - mean) / std), each augmented
// with image_seed(seed, step, first_row + k) when `augment` is given; pixels in [0, 1] (x / 255) when
// not `normalise`.
at::Tensor image_batch(const ImageDataset& d, const std::vector<int64_t>& indices, const AugmentOptions* augment = nullptr,
                       uint64_t seed = 0, int64_t step = 0, int64_t first_row = 0, bool normalise = true);
// (x - mean) / std per channel of pixels [n, C, H, W] in [0, 1]: what a model reads.
at::Tensor normalise_pixels(const at::Tensor& x01, const std::vector<double>& mean, const std::vector<double>& stddev);

// Trains on `data_dir`'s train split, scores the val split (test when there is no val), writes
// out_dir/model/, out_dir/image.json and out_dir/report.html. Checkpoints go to out_dir/checkpoints (the
// same command resumes an interrupted run).
ImageTrainResult train_image_model(const std::string& data_dir, const std::string& out_dir, const ImageTrainOptions& opt);

// Accuracy, F1, the confusion matrix, throughput and the `hard` highest-loss images of `d`.
ImageEvalResult evaluate_image_model(ImageClassifierImpl& model, const ImageDataset& d, int64_t hard = 16);

// A saved classifier: the model, its classes and the preprocessing of the data it was trained on.
struct LoadedImageModel {
  std::shared_ptr<ImageClassifierImpl> model;
  std::vector<std::string> classes;
  std::vector<double> mean, stddev;
  StandardiseOptions preprocess;
  nlohmann::json config;
};
LoadedImageModel load_image_model(const std::string& model_dir);
// load_image_model, then evaluate_image_model on `split` of a prepared folder (its image size, channels
// and classes must be the model's).
ImageEvalResult evaluate_loaded_model(const std::string& model_dir, const std::string& data_dir, const std::string& split);
// Class probabilities of image files (read, standardised like the training data, normalised).
struct ImagePrediction {
  std::string file, label;
  double confidence = 0;
};
std::vector<ImagePrediction> predict_image_files(const LoadedImageModel& m, const std::vector<std::string>& files);

nlohmann::ordered_json image_eval_json(const ImageEvalResult& e);
nlohmann::ordered_json image_train_json(const ImageTrainResult& r);
// The report page: data, augmentation preview, loss per epoch, confusion matrix, per-class F1, hardest images.
std::string image_report_html(const ImageTrainResult& r, const ImageDataset& train, const ImageDataset& val,
                              const AugmentOptions& augment, uint64_t seed);

}  // namespace dsforge::vision
