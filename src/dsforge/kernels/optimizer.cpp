// The optimizer kernel family: the squared L2 norm of a tensor (fixed blocks, double accumulation, no
// copy) and the one-pass AdamW update, around the vector loops.
#include "dsforge/kernels/internal.h"

#include <algorithm>
#include <vector>

namespace dsforge::kernels {

double sum_of_squares(const at::Tensor& t) {
  if (!fast_path({&t})) return t.to(at::kDouble).pow(2).sum().item<double>();
  const float* p = t.data_ptr<float>();
  const int64_t n = t.numel(), n_blocks = (n + kGrain - 1) / kGrain;
  std::vector<double> partial(static_cast<size_t>(n_blocks), 0.0);  // fixed blocks: deterministic
  at::parallel_for(0, n_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t begin = blk * kGrain, end = std::min(n, begin + kGrain);
      partial[static_cast<size_t>(blk)] = vector_loops().sum_of_squares(p + begin, end - begin);
    }
  });
  double total = 0;
  for (double v : partial) total += v;
  return total;
}

void adamw_update(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                  const AdamWStep& s) {
  if (!fast_path({&param, &grad, &exp_avg, &exp_avg_sq})) {
    at::NoGradGuard no_grad;
    at::Tensor g = s.grad_scale != 1.0 ? grad * s.grad_scale : grad;
    if (s.weight_decay > 0) param.mul_(1.0 - s.lr * s.weight_decay);
    exp_avg.mul_(s.beta1).add_(g, 1.0 - s.beta1);
    exp_avg_sq.mul_(s.beta2).addcmul_(g, g, 1.0 - s.beta2);
    param.addcdiv_(exp_avg, (exp_avg_sq / s.bias_correction2).sqrt_().add_(s.eps), -s.lr / s.bias_correction1);
    return;
  }
  float *p = param.data_ptr<float>(), *m = exp_avg.data_ptr<float>(), *v = exp_avg_sq.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  AdamWScalars a;
  a.beta1 = static_cast<float>(s.beta1);
  a.beta2 = static_cast<float>(s.beta2);
  a.grad_scale = static_cast<float>(s.grad_scale);
  a.decay = static_cast<float>(1.0 - s.lr * s.weight_decay);
  a.step = static_cast<float>(s.lr / s.bias_correction1);
  a.inv_bc2 = static_cast<float>(1.0 / s.bias_correction2);
  a.eps = static_cast<float>(s.eps);
  at::parallel_for(0, param.numel(), kGrain,
                   [&](int64_t b, int64_t e) { vector_loops().adamw(p, g, m, v, a, b, e); });
}

}  // namespace dsforge::kernels
