// Classic image features with a linear classifier, the baselines the learned models must beat:
// HOG (Dalal and Triggs 2005: gradient-orientation histograms of cells, normalised over 2x2 blocks) and
// SIFT bag of visual words (Lowe 2004 descriptors on a dense grid, a k-means vocabulary, histograms over a
// 1 + 2x2 spatial pyramid, Lazebnik et al. 2006). The classifier is multinomial logistic regression on
// standardised features, trained by the one training loop.
//
//   FeatureBaselineResult r = feature_baseline("runs/mnist/data", {.kind = "hog"});
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsforge/eval/text_metrics.h"
#include "dsforge/vision/images.h"

namespace dsforge::vision {

struct FeatureOptions {
  std::string kind = "hog";  // hog | sift
  int64_t words = 256;       // sift: vocabulary size (64 words: 70% on MNIST, 256: 87%)
  int64_t kmeans_sample = 20000;  // sift: descriptors the vocabulary is clustered from
  int64_t epochs = 30, batch = 128;
  double lr = 1e-2, weight_decay = 1e-4;
  uint64_t seed = 0;
  std::vector<std::string> overrides;
};

// HOG of every image: cells of max(4, side / 4) pixels (the image resized to 4 x 4 cells), 2x2-cell
// blocks with a one-cell stride, 9 orientation bins: 324 values per image. [N, 324] float.
std::vector<std::vector<float>> hog_features(const ImageDataset& d);
// Dense SIFT descriptors of one image (grayscale, upscaled to at least 32 pixels a side; a 6x6 grid of
// keypoints), with each keypoint's position in [0, 1)^2.
struct DenseSift {
  std::vector<std::vector<float>> descriptors;  // 128 each
  std::vector<std::pair<float, float>> where;
};
DenseSift dense_sift(const uint8_t* chw, int64_t c, int64_t h, int64_t w);

struct FeatureBaselineResult {
  std::string kind;
  int64_t dims = 0, train_images = 0;
  double extract_images_per_second = 0, train_seconds = 0;
  eval::ClassificationReport report;
  int64_t images = 0;
};
// Features of the train split, a linear classifier on them, scored on val (test when there is no val).
FeatureBaselineResult feature_baseline(const std::string& data_dir, const FeatureOptions& opt);
nlohmann::ordered_json feature_baseline_json(const FeatureBaselineResult& r);

}  // namespace dsforge::vision
