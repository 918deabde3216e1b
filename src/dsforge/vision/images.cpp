#include "dsforge/vision/images.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <unordered_map>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/safetensors.h"
#include "dsforge/core/shuffle.h"
#include "dsforge/vision/opencv_mat.h"

namespace fs = std::filesystem;

namespace dsforge::vision {

void ImageDataset::add(const uint8_t* chw, int64_t c, int64_t h, int64_t w, int64_t label, std::string source) {
  if (labels.empty() && pixels.empty()) {
    channels = c;
    height = h;
    width = w;
  } else if (c != channels || h != height || w != width) {
    throw DataError(fmt(source, ": image is ", c, "x", h, "x", w, ", the data set's are ", channels, "x", height, "x", width));
  }
  pixels.insert(pixels.end(), chw, chw + c * h * w);
  labels.push_back(label);
  sources.push_back(std::move(source));
}

ImageDataset ImageDataset::subset(const std::vector<int64_t>& indices) const {
  ImageDataset out;
  out.channels = channels;
  out.height = height;
  out.width = width;
  out.classes = classes;
  out.mean = mean;
  out.stddev = stddev;
  out.pixels.reserve(indices.size() * static_cast<size_t>(image_bytes()));
  for (const int64_t i : indices) {
    out.pixels.insert(out.pixels.end(), image(i), image(i) + image_bytes());
    out.labels.push_back(labels[static_cast<size_t>(i)]);
    out.sources.push_back(sources.empty() ? std::string() : sources[static_cast<size_t>(i)]);
  }
  return out;
}

// ---------------------------------------------------------------- readers
namespace {

// The whole file, gunzipped when it is gzip (zlib reads plain files unchanged).
std::string read_maybe_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw IoError(fmt(path, ": cannot open"));
  std::string out;
  char buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  int err = 0;
  const char* msg = gzerror(f, &err);
  const bool bad = n < 0 || (err != Z_OK && err != Z_BUF_ERROR);
  const std::string why = bad ? std::string(msg ? msg : "read error") : "";
  gzclose(f);
  if (bad) throw DataError(fmt(path, ": ", why, " (truncated or corrupt gzip?)"));
  return out;
}

uint32_t be32(const std::string& s, size_t at) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(s[at])) << 24) | (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 2])) << 8) | static_cast<uint32_t>(static_cast<uint8_t>(s[at + 3]));
}

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

const std::set<std::string>& image_extensions() {
  static const std::set<std::string> ext = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"};
  return ext;
}

// A JPEG must end with its EOI marker and a PNG with its IEND chunk: decoders return the decoded part
// of a truncated file with only a warning, which would put a half-grey image in the data set.
std::string truncation(const std::string& bytes, const std::string& ext) {
  // (only for files that start like their format; anything else is left to the decoder to refuse)
  if ((ext == ".jpg" || ext == ".jpeg") && bytes.size() >= 2 && bytes.compare(0, 2, "\xFF\xD8") == 0) {
    size_t end = bytes.size();
    while (end > 2 && (bytes[end - 1] == '\0' || bytes[end - 1] == '\n' || bytes[end - 1] == '\r')) --end;  // padding
    if (!(static_cast<uint8_t>(bytes[end - 2]) == 0xFF && static_cast<uint8_t>(bytes[end - 1]) == 0xD9))
      return "truncated JPEG (no end-of-image marker)";
  }
  if (ext == ".png" && bytes.compare(0, 4, "\x89PNG") == 0 && (bytes.size() < 12 || bytes.compare(bytes.size() - 8, 4, "IEND") != 0))
    return "truncated PNG (no IEND chunk)";
  return "";
}

// cv::Mat (8 or 16 bit, 1/3/4 channels, BGR order) -> channel-major RGB or gray bytes.
void mat_to_chw(const cv::Mat& in, RawImage& out) {
  cv::Mat m = in;
  if (m.depth() == CV_16U) m.convertTo(m, CV_8U, 1.0 / 257.0);
  else if (m.depth() != CV_8U) m.convertTo(m, CV_8U);
  if (m.channels() == 4) cv::cvtColor(m, m, cv::COLOR_BGRA2BGR);
  if (m.channels() == 3) cv::cvtColor(m, m, cv::COLOR_BGR2RGB);
  const int c = m.channels();
  out.channels = c;
  out.height = m.rows;
  out.width = m.cols;
  out.chw.resize(static_cast<size_t>(c) * m.rows * m.cols);
  for (int y = 0; y < m.rows; ++y) {
    const uint8_t* row = m.ptr<uint8_t>(y);
    for (int x = 0; x < m.cols; ++x)
      for (int k = 0; k < c; ++k) out.chw[(static_cast<size_t>(k) * m.rows + y) * m.cols + x] = row[x * c + k];
  }
}

}  // namespace

cv::Mat chw_to_mat(const uint8_t* chw, int64_t c, int64_t h, int64_t w) {
  cv::Mat m(static_cast<int>(h), static_cast<int>(w), c == 1 ? CV_8UC1 : CV_8UC3);
  for (int64_t y = 0; y < h; ++y) {
    uint8_t* row = m.ptr<uint8_t>(static_cast<int>(y));
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = 0; k < c; ++k) row[x * c + k] = chw[(k * h + y) * w + x];
  }
  return m;
}

void mat_into_chw(const cv::Mat& m, uint8_t* chw) {
  const int c = m.channels();
  for (int y = 0; y < m.rows; ++y) {
    const uint8_t* row = m.ptr<uint8_t>(y);
    for (int x = 0; x < m.cols; ++x)
      for (int k = 0; k < c; ++k) chw[(static_cast<size_t>(k) * m.rows + y) * m.cols + x] = row[x * c + k];
  }
}

RawImages read_mnist_idx(const std::string& images_path, const std::string& labels_path) {
  const std::string im = read_maybe_gz(images_path), lb = read_maybe_gz(labels_path);
  if (im.size() < 16 || be32(im, 0) != 0x00000803)
    throw DataError(fmt(images_path, ": not an IDX image file (magic 0x00000803 expected)"));
  if (lb.size() < 8 || be32(lb, 0) != 0x00000801)
    throw DataError(fmt(labels_path, ": not an IDX label file (magic 0x00000801 expected)"));
  const int64_t n = be32(im, 4), h = be32(im, 8), w = be32(im, 12);
  if (static_cast<int64_t>(im.size()) < 16 + n * h * w)
    throw DataError(fmt(images_path, ": header says ", n, " images of ", h, "x", w, " but the file holds ", im.size() - 16,
                        " pixel bytes (truncated)"));
  if (be32(lb, 4) != static_cast<uint32_t>(n) || static_cast<int64_t>(lb.size()) < 8 + n)
    throw DataError(fmt(labels_path, ": ", be32(lb, 4), " labels (", lb.size() - 8, " bytes) for ", n, " images in ", images_path));
  RawImages r;
  r.format = "mnist-idx";
  int64_t max_label = 0;
  const std::string base = fs::path(images_path).filename().string();
  for (int64_t i = 0; i < n; ++i) {
    RawImage img;
    img.channels = 1;
    img.height = h;
    img.width = w;
    img.chw.assign(im.begin() + 16 + i * h * w, im.begin() + 16 + (i + 1) * h * w);
    img.label = static_cast<uint8_t>(lb[static_cast<size_t>(8 + i)]);
    max_label = std::max(max_label, img.label);
    img.source = fmt(base, ":", i);
    r.images.push_back(std::move(img));
  }
  for (int64_t k = 0; k <= max_label; ++k) r.classes.push_back(std::to_string(k));
  return r;
}

RawImages read_digits_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError(fmt(path, ": cannot open"));
  RawImages r;
  r.format = "digits-csv";
  std::vector<std::string> names;  // label text per image
  std::vector<std::vector<double>> rows;
  std::string line;
  int64_t line_no = 0, width = -1;
  double max_value = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::vector<std::string> fields;
    size_t start = 0;
    while (true) {
      const size_t comma = line.find(',', start);
      std::string f = line.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      while (!f.empty() && (f.back() == '\r' || f.back() == ' ')) f.pop_back();
      fields.push_back(f);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (fields.size() < 2) throw DataError(fmt(path, ":", line_no, ": expected pixel values and a class, comma separated"));
    std::vector<double> px;
    bool numeric = true;
    for (size_t k = 0; k + 1 < fields.size() && numeric; ++k) {
      char* end = nullptr;
      const double v = std::strtod(fields[k].c_str(), &end);
      numeric = end != fields[k].c_str() && *end == '\0';
      px.push_back(v);
    }
    if (!numeric) {
      if (rows.empty()) continue;  // a header row
      throw DataError(fmt(path, ":", line_no, ": a pixel value is not a number"));
    }
    const auto side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(px.size()))));
    if (side * side != static_cast<int64_t>(px.size()))
      throw DataError(fmt(path, ":", line_no, ": ", px.size(), " pixel values do not make a square image"));
    if (width >= 0 && side != width)
      throw DataError(fmt(path, ":", line_no, ": ", px.size(), " pixel values, line 1 has ", width * width));
    width = side;
    for (const double v : px) {
      if (v < 0) throw DataError(fmt(path, ":", line_no, ": negative pixel value ", v));
      max_value = std::max(max_value, v);
    }
    rows.push_back(std::move(px));
    names.push_back(fields.back());
  }
  if (rows.empty()) throw DataError(fmt(path, ": no image rows"));
  // Values 0..16 (scikit-learn's digits) or 0..255: scaled to 0..255 by the file's range.
  const double scale = max_value <= 16 ? 255.0 / 16.0 : max_value <= 255 ? 1.0 : 255.0 / max_value;
  std::vector<std::string> classes(names.begin(), names.end());
  std::sort(classes.begin(), classes.end(), [](const std::string& a, const std::string& b) {
    char* ea = nullptr;
    char* eb = nullptr;
    const double va = std::strtod(a.c_str(), &ea), vb = std::strtod(b.c_str(), &eb);
    if (*ea == '\0' && *eb == '\0' && !a.empty() && !b.empty()) return va < vb;  // numeric classes in numeric order
    return a < b;
  });
  classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
  r.classes = classes;
  for (size_t i = 0; i < rows.size(); ++i) {
    RawImage img;
    img.channels = 1;
    img.height = img.width = width;
    for (const double v : rows[i]) img.chw.push_back(static_cast<uint8_t>(std::lround(std::min(255.0, v * scale))));
    img.label = std::find(classes.begin(), classes.end(), names[i]) - classes.begin();
    img.source = fmt(fs::path(path).filename().string(), ":", i + 1);
    r.images.push_back(std::move(img));
  }
  return r;
}

RawImages read_image_folder(const std::string& dir) {
  RawImages r;
  r.format = "folder";
  std::vector<fs::path> class_dirs;
  int64_t loose = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    if (e.is_directory()) class_dirs.push_back(e.path());
    else if (image_extensions().count(lower(e.path().extension().string()))) ++loose;
  }
  std::sort(class_dirs.begin(), class_dirs.end());
  if (class_dirs.empty())
    throw DataError(fmt(dir, ": no class subfolders", loose ? fmt(" (", loose, " images lie directly in it)") : std::string(),
                        "; expected one subfolder of images per class, e.g. ", dir, "/cat/1.png"));
  for (const auto& cd : class_dirs) {
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(cd))
      if (e.is_regular_file() && e.path().filename().string()[0] != '.' &&
          image_extensions().count(lower(e.path().extension().string())))
        files.push_back(e.path());
    if (files.empty()) continue;
    std::sort(files.begin(), files.end());
    const auto label = static_cast<int64_t>(r.classes.size());
    r.classes.push_back(cd.filename().string());
    for (const auto& f : files) {
      const std::string rel = fs::relative(f, dir).string();
      RawImage img;
      try {
        img = read_image_file(f.string());
      } catch (const Error& e) {
        r.unreadable.push_back(e.what());  // "path: why"
        continue;
      }
      img.label = label;
      img.source = rel;
      r.images.push_back(std::move(img));
    }
  }
  if (r.images.empty())
    throw DataError(fmt(dir, ": no readable images in its ", class_dirs.size(), " class subfolders",
                        r.unreadable.empty() ? std::string() : fmt(" (", r.unreadable.size(), " unreadable, first: ", r.unreadable[0], ")")));
  return r;
}

RawImage read_image_file(const std::string& path) {
  const std::string bytes = read_file(path);
  const std::string cut = truncation(bytes, lower(fs::path(path).extension().string()));
  if (!cut.empty()) throw DataError(fmt(path, ": ", cut));
  cv::Mat m;
  try {
    m = cv::imdecode(cv::Mat(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data())), cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception&) {
    m = cv::Mat();
  }
  if (m.empty() || m.rows < 1 || m.cols < 1) throw DataError(fmt(path, ": not a decodable image"));
  RawImage img;
  mat_to_chw(m, img);
  img.source = path;
  return img;
}

RawImages read_images(const std::string& source) {
  if (!fs::exists(source)) throw IoError(fmt(source, ": no such file or folder"));
  auto labels_beside = [](const fs::path& images) {
    std::string name = images.filename().string();
    const size_t at = name.find("images-idx3-ubyte");
    name.replace(at, std::string("images-idx3-ubyte").size(), "labels-idx1-ubyte");
    const fs::path p = images.parent_path() / name;
    if (!fs::exists(p)) throw IoError(fmt(images.string(), ": its labels file ", p.string(), " is missing"));
    return p.string();
  };
  if (fs::is_directory(source)) {
    std::vector<fs::path> idx;
    for (const auto& e : fs::directory_iterator(source))
      if (e.is_regular_file() && e.path().filename().string().find("images-idx3-ubyte") != std::string::npos) idx.push_back(e.path());
    if (idx.size() == 1) return read_mnist_idx(idx[0].string(), labels_beside(idx[0]));
    if (idx.size() > 1) throw DataError(fmt(source, ": ", idx.size(), " IDX image files; name one of them"));
    return read_image_folder(source);
  }
  const fs::path p(source);
  if (p.filename().string().find("images-idx3-ubyte") != std::string::npos) return read_mnist_idx(source, labels_beside(p));
  if (lower(p.extension().string()) == ".csv") return read_digits_csv(source);
  throw DataError(fmt(source, ": not a folder of class subfolders, an MNIST images-idx3-ubyte file or a CSV of pixel rows"));
}

// ---------------------------------------------------------------- standardisation
ImageDataset standardise(RawImages raw, const StandardiseOptions& opt) {
  if (opt.equalize != "none" && opt.equalize != "hist" && opt.equalize != "clahe")
    throw ConfigError(fmt("image equalize '", opt.equalize, "': expected none, hist or clahe"));
  if (raw.images.empty()) throw DataError("no images to standardise");
  int64_t channels = 1;
  if (!opt.grayscale)
    for (const auto& im : raw.images) channels = std::max(channels, im.channels);
  const int64_t th = opt.size > 0 ? opt.size : opt.height, tw = opt.size > 0 ? opt.size : opt.width;
  const bool resize = th > 0 && tw > 0;
  if (!resize)
    for (const auto& im : raw.images)
      if (im.height != raw.images[0].height || im.width != raw.images[0].width)
        throw DataError(fmt("images have mixed sizes (", raw.images[0].source, " is ", raw.images[0].width, "x", raw.images[0].height, ", ",
                            im.source, " is ", im.width, "x", im.height, "): set a size to resize them to (--size N)"));
  cv::Ptr<cv::CLAHE> clahe = opt.equalize == "clahe" ? cv::createCLAHE(opt.clahe_clip, cv::Size(8, 8)) : nullptr;
  ImageDataset out;
  out.classes = raw.classes;
  for (auto& im : raw.images) {
    cv::Mat m = chw_to_mat(im.chw.data(), im.channels, im.height, im.width);
    if (channels == 1 && m.channels() == 3) cv::cvtColor(m, m, cv::COLOR_RGB2GRAY);
    if (channels == 3 && m.channels() == 1) cv::cvtColor(m, m, cv::COLOR_GRAY2RGB);
    if (resize && (m.rows != th || m.cols != tw)) {
      const bool shrink = m.rows > th || m.cols > tw;
      cv::resize(m, m, cv::Size(static_cast<int>(tw), static_cast<int>(th)), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
    }
    if (opt.equalize != "none") {
      auto eq = [&](cv::Mat& g) {
        if (clahe) clahe->apply(g, g);
        else cv::equalizeHist(g, g);
      };
      if (m.channels() == 1) {
        eq(m);
      } else {  // the luminance only, so colours keep their hue
        cv::Mat ycc;
        cv::cvtColor(m, ycc, cv::COLOR_RGB2YCrCb);
        std::vector<cv::Mat> planes;
        cv::split(ycc, planes);
        eq(planes[0]);
        cv::merge(planes, ycc);
        cv::cvtColor(ycc, m, cv::COLOR_YCrCb2RGB);
      }
    }
    std::vector<uint8_t> chw(static_cast<size_t>(m.channels()) * m.rows * m.cols);
    mat_into_chw(m, chw.data());
    out.add(chw.data(), m.channels(), m.rows, m.cols, im.label, std::move(im.source));
    std::vector<uint8_t>().swap(im.chw);
  }
  return out;
}

// ---------------------------------------------------------------- near-duplicates
uint64_t perceptual_hash(const uint8_t* chw, int64_t c, int64_t h, int64_t w) {
  cv::Mat m = chw_to_mat(chw, c, h, w);
  if (m.channels() == 3) cv::cvtColor(m, m, cv::COLOR_RGB2GRAY);
  cv::Mat small, f, d;
  cv::resize(m, small, cv::Size(32, 32), 0, 0, h > 32 || w > 32 ? cv::INTER_AREA : cv::INTER_LINEAR);
  small.convertTo(f, CV_32F);
  cv::dct(f, d);
  float v[64];
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x) v[y * 8 + x] = d.at<float>(y, x);
  std::vector<float> ac(v + 1, v + 64);  // the median of the 63 AC terms: the DC term only says how bright
  std::nth_element(ac.begin(), ac.begin() + 31, ac.end());
  const float median = ac[31];
  uint64_t hash = 0;
  for (int k = 1; k < 64; ++k)
    if (v[k] > median) hash |= uint64_t{1} << k;
  return hash;
}

double pixel_difference(const uint8_t* a, const uint8_t* b, int64_t bytes) {
  int64_t diff = 0, total = 0;
  for (int64_t i = 0; i < bytes; ++i) {
    diff += std::abs(static_cast<int>(a[i]) - static_cast<int>(b[i]));
    total += static_cast<int>(a[i]) + static_cast<int>(b[i]);
  }
  return total == 0 ? 0.0 : static_cast<double>(diff) / static_cast<double>(total);
}

std::vector<int64_t> near_duplicate_keep(const std::vector<uint64_t>& hashes, int max_distance,
                                         const std::function<bool(int64_t, int64_t)>& same, std::vector<int64_t>* duplicate_of) {
  std::vector<int64_t> keep;
  if (duplicate_of) duplicate_of->assign(hashes.size(), -1);
  if (max_distance < 0) {
    keep.resize(hashes.size());
    std::iota(keep.begin(), keep.end(), int64_t{0});
    return keep;
  }
  const int bands = std::min(64, max_distance + 1);
  std::vector<std::pair<int, int>> range;  // [first bit, bits) of each band
  for (int b = 0; b < bands; ++b) range.emplace_back(b * 64 / bands, (b + 1) * 64 / bands - b * 64 / bands);
  std::vector<std::unordered_map<uint64_t, std::vector<int64_t>>> index(static_cast<size_t>(bands));
  auto band = [&](uint64_t h, int b) {
    const auto [first, bits] = range[static_cast<size_t>(b)];
    return bits == 64 ? h : (h >> first) & ((uint64_t{1} << bits) - 1);
  };
  for (size_t i = 0; i < hashes.size(); ++i) {
    int64_t dup = -1;
    for (int b = 0; b < bands && dup < 0; ++b) {
      auto it = index[static_cast<size_t>(b)].find(band(hashes[i], b));
      if (it == index[static_cast<size_t>(b)].end()) continue;
      for (const int64_t j : it->second)
        if (hamming64(hashes[i], hashes[static_cast<size_t>(j)]) <= max_distance && (!same || same(j, static_cast<int64_t>(i)))) {
          dup = j;
          break;
        }
    }
    if (dup >= 0) {
      if (duplicate_of) (*duplicate_of)[i] = dup;
      continue;
    }
    keep.push_back(static_cast<int64_t>(i));
    for (int b = 0; b < bands; ++b) index[static_cast<size_t>(b)][band(hashes[i], b)].push_back(static_cast<int64_t>(i));
  }
  return keep;
}

// ---------------------------------------------------------------- prepare
namespace {

void channel_stats(const ImageDataset& d, std::vector<double>& mean, std::vector<double>& sd) {
  mean.assign(static_cast<size_t>(d.channels), 0.0);
  sd.assign(static_cast<size_t>(d.channels), 0.0);
  const int64_t plane = d.height * d.width;
  for (int64_t c = 0; c < d.channels; ++c) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < d.size(); ++i) {
      const uint8_t* p = d.image(i) + c * plane;
      for (int64_t k = 0; k < plane; ++k) {
        const double v = p[k] / 255.0;
        s += v;
        s2 += v * v;
      }
    }
    const double n = static_cast<double>(d.size() * plane);
    mean[static_cast<size_t>(c)] = s / n;
    sd[static_cast<size_t>(c)] = std::sqrt(std::max(0.0, s2 / n - (s / n) * (s / n)));
  }
}

nlohmann::ordered_json class_counts(const ImageDataset& d) {
  std::vector<int64_t> n(d.classes.size(), 0);
  for (const int64_t l : d.labels) ++n[static_cast<size_t>(l)];
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (size_t k = 0; k < n.size(); ++k) j[d.classes[k]] = n[k];
  return j;
}

std::vector<std::string> write_shards(const ImageDataset& d, const std::string& dir, const std::string& split, int64_t per_shard) {
  std::vector<std::string> files;
  const int64_t n = d.size();
  const int64_t shards = std::max<int64_t>(1, (n + per_shard - 1) / per_shard);
  for (int64_t s = 0; s < shards; ++s) {
    const int64_t first = s * per_shard, count = std::min(per_shard, n - first);
    std::vector<uint8_t> px(d.pixels.begin() + first * d.image_bytes(), d.pixels.begin() + (first + count) * d.image_bytes());
    std::vector<int64_t> lb(d.labels.begin() + first, d.labels.begin() + first + count);
    nlohmann::json sources(std::vector<std::string>(d.sources.begin() + first, d.sources.begin() + first + count));
    TensorMap t;
    t["images"] = at::from_blob(px.data(), {count, d.channels, d.height, d.width}, at::kByte).clone();
    t["labels"] = at::from_blob(lb.data(), {count}, at::kLong).clone();
    const std::string name = fmt(split, "-", std::string(5 - std::min<size_t>(5, std::to_string(s).size()), '0'), s, ".safetensors");
    save_safetensors(path_join(dir, name), t, {{"format", "dsforge-images"}, {"sources", sources.dump()}});
    files.push_back(name);
  }
  return files;
}

}  // namespace

ImagePrepareResult prepare_images(const std::string& source, const std::string& out_dir, const PrepareImagesOptions& opt) {
  if (opt.val_fraction < 0 || opt.test_fraction < 0 || opt.val_fraction + opt.test_fraction >= 1)
    throw ConfigError(fmt("image prepare: val fraction ", opt.val_fraction, " and test fraction ", opt.test_fraction,
                          " must be >= 0 and leave images for training"));
  if (opt.shard_images < 1) throw ConfigError("image prepare: shard size must be at least 1 image");
  if (file_exists(path_join(out_dir, "dataset.json")))
    throw IoError(fmt(out_dir, ": already holds a prepared image set (dataset.json); choose another --out or remove it"));
  RawImages raw = read_images(source);
  const std::string format = raw.format;
  const std::vector<std::string> unreadable = raw.unreadable;
  std::map<std::string, int64_t> sizes;  // "WxH" -> count, before standardisation
  int64_t colour = 0;
  for (const auto& im : raw.images) {
    ++sizes[fmt(im.width, "x", im.height)];
    colour += im.channels == 3;
  }
  const auto read_count = static_cast<int64_t>(raw.images.size());
  ImageDataset all = standardise(std::move(raw), opt.standardise);

  // Near-duplicates: the first of each group is kept (the order is the source's).
  std::vector<uint64_t> hashes;
  for (int64_t i = 0; i < all.size(); ++i) hashes.push_back(perceptual_hash(all.image(i), all.channels, all.height, all.width));
  auto same = [&](int64_t a, int64_t b) { return pixel_difference(all.image(a), all.image(b), all.image_bytes()) <= opt.dedup_pixels; };
  std::vector<int64_t> duplicate_of;
  const std::vector<int64_t> kept = near_duplicate_keep(hashes, opt.dedup_distance, same, &duplicate_of);
  nlohmann::ordered_json dup_examples = nlohmann::ordered_json::array();
  for (size_t i = 0; i < duplicate_of.size() && dup_examples.size() < 10; ++i) {
    const int64_t k = duplicate_of[i];
    if (k < 0) continue;
    dup_examples.push_back({{"dropped", all.sources[i]}, {"kept", all.sources[static_cast<size_t>(k)]},
                            {"hash_distance", hamming64(hashes[i], hashes[static_cast<size_t>(k)])},
                            {"pixel_difference", pixel_difference(all.image(static_cast<int64_t>(i)), all.image(k), all.image_bytes())}});
  }
  const int64_t duplicates = all.size() - static_cast<int64_t>(kept.size());
  ImageDataset unique = all.subset(kept);
  all = ImageDataset();

  // A stratified split: each class shuffled with the seed, its first share to val, the next to test.
  std::vector<std::vector<int64_t>> by_class(unique.classes.size());
  for (int64_t i = 0; i < unique.size(); ++i) by_class[static_cast<size_t>(unique.labels[static_cast<size_t>(i)])].push_back(i);
  std::vector<int64_t> tr, va, te;
  for (size_t k = 0; k < by_class.size(); ++k) {
    auto& idx = by_class[k];
    shuffle_in_place(idx, opt.seed * 0x9E3779B97F4A7C15ull + k + 1);
    const auto n = static_cast<double>(idx.size());
    const auto n_val = static_cast<size_t>(std::lround(n * opt.val_fraction));
    const auto n_test = std::min(idx.size() - n_val, static_cast<size_t>(std::lround(n * opt.test_fraction)));
    for (size_t j = 0; j < idx.size(); ++j) (j < n_val ? va : j < n_val + n_test ? te : tr).push_back(idx[j]);
  }
  for (auto* v : {&tr, &va, &te}) std::sort(v->begin(), v->end());
  if (tr.empty()) throw DataError(fmt(source, ": no image left for training after the split"));
  ImageDataset train = unique.subset(tr), val = unique.subset(va), test = unique.subset(te);
  channel_stats(train, train.mean, train.stddev);

  ImagePrepareResult r;
  r.out_dir = out_dir;
  r.train = train.size();
  r.val = val.size();
  r.test = test.size();
  nlohmann::ordered_json size_hist = nlohmann::ordered_json::object();
  for (const auto& [k, v] : sizes) size_hist[k] = v;
  nlohmann::ordered_json unread = nlohmann::ordered_json::array();
  for (size_t i = 0; i < unreadable.size() && i < 20; ++i) unread.push_back(unreadable[i]);
  r.stats = {{"source", source},
             {"format", format},
             {"images_read", read_count},
             {"unreadable", static_cast<int64_t>(unreadable.size())},
             {"unreadable_examples", unread},
             {"colour_images", colour},
             {"sizes_before", size_hist},
             {"near_duplicates_removed", duplicates},
             {"near_duplicate_examples", dup_examples},
             {"class_balance", {{"train", class_counts(train)}, {"val", class_counts(val)}, {"test", class_counts(test)}}},
             {"mean", train.mean},
             {"std", train.stddev}};

  std::string base = out_dir;  // "data/" stages beside the folder as "data.partial", not inside it
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  const std::string stage = base + ".partial";
  remove_all(stage);
  make_dirs(stage);
  nlohmann::ordered_json splits = nlohmann::ordered_json::object();
  for (const auto& [name, d] : {std::pair<std::string, const ImageDataset*>{"train", &train}, {"val", &val}, {"test", &test}})
    if (d->size() > 0) splits[name] = {{"images", d->size()}, {"files", write_shards(*d, stage, name, opt.shard_images)}};
  const auto& so = opt.standardise;
  nlohmann::ordered_json info = {
      {"format", "dsforge-images"}, {"version", 1},        {"channels", train.channels}, {"height", train.height},
      {"width", train.width},       {"classes", train.classes}, {"mean", train.mean},  {"std", train.stddev},
      {"splits", splits},
      {"options", {{"size", so.size}, {"grayscale", so.grayscale}, {"equalize", so.equalize}, {"dedup_distance", opt.dedup_distance}, {"dedup_pixels", opt.dedup_pixels},
                   {"val_fraction", opt.val_fraction}, {"test_fraction", opt.test_fraction}, {"seed", opt.seed}}},
      {"stats", r.stats}};
  write_file_atomic(path_join(stage, "dataset.json"), info.dump(2) + "\n");
  std::string grid_tiles;
  {  // the first image of each class, for a look at what was prepared
    std::vector<const uint8_t*> tiles;
    for (size_t k = 0; k < train.classes.size(); ++k)
      for (int64_t i = 0; i < train.size(); ++i)
        if (train.labels[static_cast<size_t>(i)] == static_cast<int64_t>(k)) {
          tiles.push_back(train.image(i));
          break;
        }
    write_file_atomic(path_join(stage, "classes.png"),
                      png_grid(tiles, train.channels, train.height, train.width, std::min<int64_t>(10, static_cast<int64_t>(tiles.size())),
                               train.height < 64 ? 3 : 1));
  }
  if (fs::exists(out_dir) && fs::is_directory(out_dir) && fs::is_empty(out_dir)) fs::remove(out_dir);
  publish_dir(stage, out_dir, "image data set");
  return r;
}

nlohmann::json read_dataset_info(const std::string& data_dir) {
  const std::string path = path_join(data_dir, "dataset.json");
  if (!file_exists(path)) throw IoError(fmt(data_dir, ": no dataset.json (prepare it with `dsforge image prepare`)"));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt(path, ": not valid JSON: ", e.what()));
  }
  if (j.value("format", "") != "dsforge-images") throw DataError(fmt(path, ": \"format\" is not \"dsforge-images\""));
  for (const char* key : {"channels", "height", "width", "classes", "mean", "std", "splits"})
    if (!j.contains(key)) throw DataError(fmt(path, ": key \"", key, "\" is missing"));
  return j;
}

std::string held_out_split(const nlohmann::json& info, const std::string& data_dir) {
  if (info["splits"].contains("val")) return "val";
  if (info["splits"].contains("test")) return "test";
  throw DataError(fmt(data_dir, ": no val or test split to score on (prepare it with --val 0.2)"));
}

ImageDataset load_image_split(const std::string& data_dir, const std::string& split) {
  const nlohmann::json info = read_dataset_info(data_dir);
  if (!info["splits"].contains(split))
    throw DataError(fmt(data_dir, ": has no '", split, "' split (it has ", info["splits"].size(), ": ", [&] {
                          std::string s;
                          for (const auto& [k, v] : info["splits"].items()) s += (s.empty() ? "" : ", ") + k;
                          return s;
                        }(), ")"));
  ImageDataset d;
  d.channels = info["channels"].get<int64_t>();
  d.height = info["height"].get<int64_t>();
  d.width = info["width"].get<int64_t>();
  d.classes = info["classes"].get<std::vector<std::string>>();
  d.mean = info["mean"].get<std::vector<double>>();
  d.stddev = info["std"].get<std::vector<double>>();
  for (const auto& f : info["splits"][split]["files"]) {
    const std::string path = path_join(data_dir, f.get<std::string>());
    const SafetensorsFile st = load_safetensors(path);
    auto it = st.tensors.find("images"), lt = st.tensors.find("labels");
    if (it == st.tensors.end() || lt == st.tensors.end()) throw DataError(fmt(path, ": needs tensors 'images' and 'labels'"));
    const at::Tensor& im = it->second;
    const at::Tensor& lb = lt->second;
    if (im.scalar_type() != at::kByte || im.dim() != 4 || im.size(1) != d.channels || im.size(2) != d.height || im.size(3) != d.width)
      throw DataError(fmt(path, ": 'images' is ", im.sizes(), " ", im.scalar_type(), ", dataset.json says uint8 [N, ", d.channels, ", ",
                          d.height, ", ", d.width, "]"));
    if (lb.scalar_type() != at::kLong || lb.dim() != 1 || lb.size(0) != im.size(0))
      throw DataError(fmt(path, ": 'labels' must be int64 [", im.size(0), "]"));
    const uint8_t* p = im.data_ptr<uint8_t>();
    d.pixels.insert(d.pixels.end(), p, p + im.numel());
    const int64_t* l = lb.data_ptr<int64_t>();
    for (int64_t i = 0; i < lb.size(0); ++i) {
      if (l[i] < 0 || l[i] >= static_cast<int64_t>(d.classes.size()))
        throw DataError(fmt(path, ": label ", l[i], " of image ", i, " is outside the ", d.classes.size(), " classes"));
      d.labels.push_back(l[i]);
    }
    std::vector<std::string> src;
    auto mt = st.metadata.find("sources");
    if (mt != st.metadata.end()) src = nlohmann::json::parse(mt->second).get<std::vector<std::string>>();
    src.resize(static_cast<size_t>(lb.size(0)));
    d.sources.insert(d.sources.end(), src.begin(), src.end());
  }
  return d;
}

std::string png_grid(const std::vector<const uint8_t*>& tiles, int64_t c, int64_t h, int64_t w, int64_t cols, int scale) {
  cols = std::max<int64_t>(1, cols);
  const int64_t rows = std::max<int64_t>(1, (static_cast<int64_t>(tiles.size()) + cols - 1) / cols);
  const int gap = 2, th = static_cast<int>(h) * scale, tw = static_cast<int>(w) * scale;
  cv::Mat canvas(static_cast<int>(rows) * (th + gap) + gap, static_cast<int>(cols) * (tw + gap) + gap, c == 1 ? CV_8UC1 : CV_8UC3,
                 cv::Scalar::all(40));
  for (size_t t = 0; t < tiles.size(); ++t) {
    cv::Mat m = chw_to_mat(tiles[t], c, h, w), big;
    cv::resize(m, big, cv::Size(tw, th), 0, 0, cv::INTER_NEAREST);
    const int r = static_cast<int>(t / static_cast<size_t>(cols)), k = static_cast<int>(t % static_cast<size_t>(cols));
    big.copyTo(canvas(cv::Rect(gap + k * (tw + gap), gap + r * (th + gap), tw, th)));
  }
  if (c == 3) cv::cvtColor(canvas, canvas, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> png;
  cv::imencode(".png", canvas, png);
  return std::string(png.begin(), png.end());
}

std::string base64(const std::string& bytes) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += abc[(v >> s) & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += abc[(v >> 18) & 63];
    out += abc[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? abc[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace dsforge::vision
