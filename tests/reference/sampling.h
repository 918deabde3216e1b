// The sampling rule of model::sample_token by its definition, for checks (tests/test_model.cpp) and the
// decode benchmark (bench/bench_decode.cpp): temperature, top-k, then sort the probabilities descending
// (ties by id), keep the shortest prefix of mass >= top_p and invert its renormalised CDF at u. With
// neither top-k nor top-p truncating, the CDF is inverted in id order (no sort).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <vector>

#include "dsforge/model/generate.h"

namespace dsforge::reference {

inline int64_t sample_by_sorting(const std::vector<double>& logits, const model::SampleOptions& o, double u) {
  const int64_t V = static_cast<int64_t>(logits.size());
  std::vector<double> l = logits;
  for (double& v : l) v /= o.temperature;
  if ((o.top_k <= 0 || o.top_k >= V) && o.top_p >= 1.0) {
    const double top = *std::max_element(l.begin(), l.end());
    std::vector<double> e(l.size());
    double z = 0;
    for (size_t i = 0; i < l.size(); ++i) z += e[i] = std::exp(l[i] - top);
    double acc = 0;
    int64_t last = 0;
    for (int64_t i = 0; i < V; ++i)
      if (e[i] > 0) {
        last = i;
        acc += e[i];
        if (u * z < acc) return i;
      }
    return last;
  }
  if (o.top_k > 0 && o.top_k < V) {
    std::vector<double> d = l;
    std::sort(d.begin(), d.end(), std::greater<double>());
    for (double& v : l)
      if (v < d[static_cast<size_t>(o.top_k - 1)]) v = -INFINITY;
  }
  const double top = *std::max_element(l.begin(), l.end());
  double z = 0;
  for (double& v : l) z += v = std::exp(v - top);
  std::vector<int64_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
  int64_t keep = V;
  double acc = 0;
  for (int64_t i = 0; i < V && o.top_p < 1.0; ++i)
    if ((acc += l[order[i]] / z) >= o.top_p) {
      keep = i + 1;
      break;
    }
  double mass = 0;
  for (int64_t i = 0; i < keep; ++i) mass += l[order[i]] / z;
  acc = 0;
  for (int64_t i = 0; i < keep; ++i)
    if (u * mass < (acc += l[order[i]] / z)) return order[i];
  return order[keep - 1];
}

}  // namespace dsforge::reference
