// Image augmentation applied on the fly by the loader, seeded per image: the same (seed, step, row)
// gives the same picture on every machine and after a resume, whatever the batch or rank split.
//
//   AugmentOptions a = parse_augment("rotate=10,translate=0.1,crop=0.8,hflip,brightness=0.2,cutout=0.25");
//   augment_image(src, c, h, w, dst, a, image_seed(seed, step, row));
//
// Order: random resized crop (area share in [crop, 1], aspect 3/4..4/3, resized back), one affine warp
// (rotation, scale, shear, translation about the centre; the border is black or reflected), flips,
// brightness and contrast, cutout (a square of `cutout` x side set to black).
#pragma once
#include <cstdint>
#include <string>

namespace dsforge::vision {

struct AugmentOptions {
  double rotate = 0;      // degrees, uniform in [-rotate, rotate]
  double translate = 0;   // fraction of the side, uniform in [-t, t] per axis
  double scale = 0;       // zoom uniform in [1 - scale, 1 + scale]
  double shear = 0;       // degrees
  double crop = 1;        // random resized crop's smallest area share (1 = off)
  bool hflip = false, vflip = false;  // each with probability 1/2
  double brightness = 0;  // added, uniform in [-b, b] x 255
  double contrast = 0;    // factor uniform in [1 - c, 1 + c] about the image mean
  double cutout = 0;      // side of the square, as a fraction of the image side (probability 1/2)
  bool reflect = false;   // warp border: reflect instead of black
  bool any() const;
  std::string describe() const;  // the spec parse_augment reads back
};
// "rotate=10,translate=0.1,scale=0.1,shear=5,crop=0.8,hflip,vflip,brightness=0.2,contrast=0.2,cutout=0.25,reflect"
// ("" or "none" = no augmentation). Unknown keys and out-of-range values are a ConfigError naming them.
AugmentOptions parse_augment(const std::string& spec);

// The seed of one image's augmentation.
uint64_t image_seed(uint64_t seed, int64_t step, int64_t row);
// src and dst: C x H x W bytes (C = 1 or 3); they may not alias.
void augment_image(const uint8_t* src, int64_t c, int64_t h, int64_t w, uint8_t* dst, const AugmentOptions& a, uint64_t seed);

}  // namespace dsforge::vision
