// Between the data sets' channel-major bytes and OpenCV's interleaved cv::Mat (RGB order, not BGR).
// For the vision .cpp files only: OpenCV's headers stay out of everything else.
#pragma once
#include <cstdint>
#include <opencv2/core.hpp>

namespace dsforge::vision {

// C x H x W bytes (C = 1 or 3) -> an 8-bit H x W matrix with C interleaved channels.
cv::Mat chw_to_mat(const uint8_t* chw, int64_t c, int64_t h, int64_t w);
// The inverse: writes rows x cols x channels bytes channel-major into `chw`.
void mat_into_chw(const cv::Mat& m, uint8_t* chw);

}  // namespace dsforge::vision
