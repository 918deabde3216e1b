// Image data sets: reading (folders of PNG/JPEG with one subfolder per class, MNIST IDX files, the
// scikit-learn digits CSV), standardisation (resize, grayscale, histogram equalisation or CLAHE),
// near-duplicate removal by perceptual hash, statistics, a seeded stratified split, and shards
// (safetensors: uint8 images [N, C, H, W] and int64 labels) with a dataset.json beside them.
//
//   PrepareImagesOptions opt;  opt.size = 28;
//   ImagePrepareResult r = prepare_images("../shared/data/mnist", "runs/mnist/data", opt);
//   ImageDataset train = load_image_split("runs/mnist/data", "train");
//
// Pixels stay uint8 on disk; the data set's per-channel mean and standard deviation (of the training
// split, in [0, 1] units) travel in dataset.json and the loader normalises with them.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dsforge::vision {

// Images of one size, channel-major: pixel (i, c, y, x) at ((i * C + c) * H + y) * W + x.
struct ImageDataset {
  int64_t channels = 0, height = 0, width = 0;
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  std::vector<std::string> classes;  // label -> name
  std::vector<std::string> sources;  // where each image came from ("file.png", "t10k-images:17")
  std::vector<double> mean, stddev;  // per channel, [0, 1] units (of the training split)

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t image_bytes() const { return channels * height * width; }
  const uint8_t* image(int64_t i) const { return pixels.data() + i * image_bytes(); }
  uint8_t* image(int64_t i) { return pixels.data() + i * image_bytes(); }
  // Appends one image (its size must match; the first image sets it).
  void add(const uint8_t* chw, int64_t c, int64_t h, int64_t w, int64_t label, std::string source);
  // The images at `indices`, in that order.
  ImageDataset subset(const std::vector<int64_t>& indices) const;
};

// What a raw read returns before standardisation: images may differ in size and channels.
struct RawImage {
  int64_t channels = 0, height = 0, width = 0;
  std::vector<uint8_t> chw;
  int64_t label = 0;
  std::string source;
};
struct RawImages {
  std::vector<RawImage> images;
  std::vector<std::string> classes;
  std::vector<std::string> unreadable;  // "path: why", counted and skipped
  std::string format;                   // "folder", "mnist-idx", "digits-csv"
};

// Reads `source`: a folder with one subfolder of images per class (PNG, JPEG, BMP, TIFF, WebP), an MNIST
// images file (`*-images-idx3-ubyte[.gz]`, its labels file beside it, or a folder holding the pair), or a
// CSV of pixel rows with the class in the last column (scikit-learn's digits.csv: 8x8 values 0..16,
// scaled to 0..255). Unreadable or truncated image files are listed in `unreadable`, not fatal; a source
// with no images is a DataError naming it.
RawImages read_images(const std::string& source);
RawImages read_mnist_idx(const std::string& images_path, const std::string& labels_path);
RawImages read_digits_csv(const std::string& path);
RawImages read_image_folder(const std::string& dir);
// One image file (DataError naming it when it is unreadable or truncated).
RawImage read_image_file(const std::string& path);

struct StandardiseOptions {
  int64_t size = 0;          // resize to size x size (0 = keep; mixed sizes then are an error)
  int64_t height = 0, width = 0;  // or to width x height, when size is 0 and both are set
  bool grayscale = false;    // one channel (colour images are converted; gray stays gray)
  std::string equalize = "none";  // "none" | "hist" (global histogram equalisation) | "clahe" (contrast-limited, 8x8 tiles)
  double clahe_clip = 2.0;
};
// One size and channel count for every image (colour images are 3 channels, gray ones 1; a mix becomes
// 3 unless grayscale). Resizing uses area interpolation when shrinking, bilinear when growing.
ImageDataset standardise(RawImages raw, const StandardiseOptions& opt);

// 64-bit perceptual hash (DCT of the 32x32 grayscale image, the 8x8 lowest frequencies against their
// median; Zauner 2010) and Hamming distance.
uint64_t perceptual_hash(const uint8_t* chw, int64_t c, int64_t h, int64_t w);
inline int hamming64(uint64_t a, uint64_t b) { return __builtin_popcountll(a ^ b); }
// Indices of the images to keep: each image whose hash is within `max_distance` bits of an earlier
// kept image's (and, when `same` is given, for which same(earlier, image) holds) is dropped.
// Multi-index hashing: the 64 bits in max_distance + 1 bands, one of which must match exactly, so the
// work grows with the near pairs, not with N^2.
// `duplicate_of`, when given, receives for each image the kept image it duplicates (-1 for kept ones).
std::vector<int64_t> near_duplicate_keep(const std::vector<uint64_t>& hashes, int max_distance,
                                         const std::function<bool(int64_t, int64_t)>& same = nullptr,
                                         std::vector<int64_t>* duplicate_of = nullptr);
// How much two images of one size differ: sum |a - b| / sum (a + b), 0 for equal images, 1 for images
// with no bright pixel in common. Relative to the bright pixels, so that two thin strokes on a black
// background that do not overlap count as different (a mean difference would call them nearly equal).
double pixel_difference(const uint8_t* a, const uint8_t* b, int64_t bytes);

struct PrepareImagesOptions {
  StandardiseOptions standardise;
  // Near-duplicates: a pHash within dedup_distance bits (-1 = no dedup) and a pixel_difference of at most
  // dedup_pixels: on small images such as MNIST's, different digits of one class often share a hash,
  // so the hash alone only proposes candidates.
  int dedup_distance = 4;
  double dedup_pixels = 0.05;
  double val_fraction = 0.2;  // per class, after a seeded shuffle
  double test_fraction = 0.0;
  uint64_t seed = 0;
  int64_t shard_images = 50000;  // images per shard file
};
struct ImagePrepareResult {
  std::string out_dir;
  nlohmann::ordered_json stats;  // what dataset.json holds under "stats"
  int64_t train = 0, val = 0, test = 0;
};
// read -> standardise -> dedup -> split -> shards in `out_dir` (written to a staging folder and
// published whole: nothing half written). `out_dir` must not hold a data set already.
ImagePrepareResult prepare_images(const std::string& source, const std::string& out_dir, const PrepareImagesOptions& opt);

// dataset.json of a prepared folder (IoError / DataError naming it when absent or malformed).
nlohmann::json read_dataset_info(const std::string& data_dir);
// The split models are scored on: "val", else "test" (DataError naming the folder when it has neither).
std::string held_out_split(const nlohmann::json& info, const std::string& data_dir);
// "train", "val" or "test" of a prepared folder, with the classes, mean and std of dataset.json.
ImageDataset load_image_split(const std::string& data_dir, const std::string& split);

// Writes images as one PNG grid (rows x cols tiles, `scale` pixels per pixel, 2-pixel gaps), returns the
// PNG bytes. Tiles past the end stay dark.
std::string png_grid(const std::vector<const uint8_t*>& tiles, int64_t c, int64_t h, int64_t w, int64_t cols, int scale);
std::string base64(const std::string& bytes);

}  // namespace dsforge::vision
