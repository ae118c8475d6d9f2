"""Probe (not part of the package): a direct CPU kernel for the grouped
convs with few inputs per group that oneDNN runs far below its dense speed
(PSA's 5x5-9x9 part convs with 4 inputs per output; SK's grouped dilated 3x3
branches). Stride 1, 'same' padding, any dilation, input channels a multiple
of 16 and 1, 2, 4, 8 or 16 inputs per group; fp32 arithmetic, fp32 or bf16
tensors. Written to find out whether PSA's <= 2.0x target is within reach
of a hand-written kernel; `direct_conv_probe.py` beside it checks it against
the conv and times it against what `nas.kernels.choice.run_fastest` chooses. The
shape limits are not checked (a probe).

One AVX-512 vector holds 16 input channels of a pixel, i.e. 16 / cg whole
groups, so every lane of every multiply-add is useful work, and a group's
lanes are summed once per output pixel. Every buffer is NHWC (channels_last
memory); each image is copied into a zero-bordered fp32 scratch buffer
first. Weights are rearranged per (output within group r, block of 16 input
channels, tap a, tap b, lane): lane l of block k belongs to group
g = 16 k / cg + l / cg, input l % cg, and multiplies weight[g og + r, l % cg,
a, b]. Compiled on first use with `torch.utils.cpp_extension.load_inline`
(g++ with OpenMP).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

_SOURCE = r"""
#include <torch/extension.h>
#include <omp.h>
#include <vector>

namespace {
constexpr int L = 16;   // lanes: input channels per block
constexpr int T = 8;    // output pixels per register block

// acc[t][l] = sum_{a, b} w[(a K + b) L + l] * src[((i + a D) Wp + j0 + t + b D) C + l]: the shared inner loop
inline void taps(const float* src, const float* w, long Wp, long C, long K, long D, int tn, float acc[T][L]) {
  for (long a = 0; a < K; ++a) {
    const float* row = src + a * D * Wp * C;
    for (long b = 0; b < K; ++b) {
      const float* wt = w + (a * K + b) * L;
      const float* pb = row + b * D * C;
      for (int t = 0; t < tn; ++t) {
        const float* px = pb + (long)t * C;
        #pragma omp simd
        for (int l = 0; l < L; ++l) acc[t][l] += wt[l] * px[l];
      }
    }
  }
}

// image n of x (H, W, C) into the interior of a zero-bordered (Hp, Wp, C) fp32 buffer
template <typename S>
inline void fill_padded(const S* x, float* buf, long H, long W, long C, long P, long Wp) {
  for (long i = 0; i < H; ++i) {
    const S* src = x + i * W * C;
    float* dst = buf + ((i + P) * Wp + P) * C;
    for (long e = 0; e < W * C; ++e) dst[e] = static_cast<float>(src[e]);
  }
}

// image n of the output gradient (H, W, Cout) spread on input lanes, for each r:
// buf[r][i + P][j + P][c] = g[i][j][(c / cg) og + r]
template <typename S>
inline void fill_spread(const S* g, float* buf, long H, long W, long C, long Cout, long cg, long og,
                        long P, long Hp, long Wp) {
  for (long r = 0; r < og; ++r)
    for (long i = 0; i < H; ++i)
      for (long j = 0; j < W; ++j) {
        const S* src = g + (i * W + j) * Cout + r;
        float* dst = buf + ((r * Hp + i + P) * Wp + j + P) * C;
        for (long c = 0; c < C; ++c) dst[c] = static_cast<float>(src[(c / cg) * og]);
      }
}
}  // namespace

// y[n, i, j, g og + r] = sum_{a, b, l < cg} w[g og + r, l, a, b] x[n, i + a D - P, j + b D - P, g cg + l]
template <typename S>
void forward_impl(const torch::Tensor& x, const torch::Tensor& wv, torch::Tensor& y, long K, long D, long cg, long og) {
  const long N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3), Cout = y.size(3);
  const long P = D * (K - 1) / 2, Hp = H + 2 * P, Wp = W + 2 * P, blocks = C / L, per = L / cg;
  const S* xs = x.data_ptr<S>();
  const float* w = wv.data_ptr<float>();
  S* out = y.data_ptr<S>();
  #pragma omp parallel
  {
    std::vector<float> buf(Hp * Wp * C, 0.f);
    #pragma omp for schedule(static)
    for (long n = 0; n < N; ++n) {
      fill_padded(xs + n * H * W * C, buf.data(), H, W, C, P, Wp);
      for (long i = 0; i < H; ++i)
        for (long j0 = 0; j0 < W; j0 += T) {
          const int tn = (int)std::min<long>(T, W - j0);
          for (long r = 0; r < og; ++r)
            for (long k = 0; k < blocks; ++k) {
              float acc[T][L] = {};
              taps(buf.data() + (i * Wp + j0) * C + k * L, w + (r * blocks + k) * K * K * L, Wp, C, K, D, tn, acc);
              for (int t = 0; t < tn; ++t) {
                S* o = out + ((n * H + i) * W + j0 + t) * Cout;
                for (long q = 0; q < per; ++q) {
                  float s = 0.f;
                  for (long l = 0; l < cg; ++l) s += acc[t][q * cg + l];
                  o[(k * per + q) * og + r] = static_cast<S>(s);
                }
              }
            }
        }
    }
  }
}

// dx[n, i, j, c] = sum_r sum_{a, b} wf[r][a][b][c] spread_r[n, i + a D, j + b D, c] (wf: taps flipped)
template <typename S>
void backward_input_impl(const torch::Tensor& g, const torch::Tensor& wf, torch::Tensor& dx, long K, long D,
                         long cg, long og) {
  const long N = g.size(0), H = g.size(1), W = g.size(2), Cout = g.size(3), C = dx.size(3);
  const long P = D * (K - 1) / 2, Hp = H + 2 * P, Wp = W + 2 * P, blocks = C / L;
  const S* gs = g.data_ptr<S>();
  const float* w = wf.data_ptr<float>();
  S* out = dx.data_ptr<S>();
  #pragma omp parallel
  {
    std::vector<float> buf(og * Hp * Wp * C, 0.f);
    #pragma omp for schedule(static)
    for (long n = 0; n < N; ++n) {
      fill_spread(gs + n * H * W * Cout, buf.data(), H, W, C, Cout, cg, og, P, Hp, Wp);
      for (long i = 0; i < H; ++i)
        for (long j0 = 0; j0 < W; j0 += T) {
          const int tn = (int)std::min<long>(T, W - j0);
          for (long k = 0; k < blocks; ++k) {
            float acc[T][L] = {};
            for (long r = 0; r < og; ++r)
              taps(buf.data() + ((r * Hp + i) * Wp + j0) * C + k * L, w + (r * blocks + k) * K * K * L,
                   Wp, C, K, D, tn, acc);
            for (int t = 0; t < tn; ++t) {
              S* o = out + ((n * H + i) * W + j0 + t) * C + k * L;
              for (int l = 0; l < L; ++l) o[l] = static_cast<S>(acc[t][l]);
            }
          }
        }
    }
  }
}

// dw[r][k][a][b][l] = sum_{n, i, j} spread_r[n, i, j, k L + l] x[n, i + a D - P, j + b D - P, k L + l]
template <typename S, typename G>
void backward_weight_impl(const torch::Tensor& x, const torch::Tensor& g, torch::Tensor& dw, long K, long D,
                          long cg, long og) {
  const long N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3), Cout = g.size(3);
  const long P = D * (K - 1) / 2, Hp = H + 2 * P, Wp = W + 2 * P, blocks = C / L;
  const long size = og * blocks * K * K * L;
  const S* xs = x.data_ptr<S>();
  const G* gs = g.data_ptr<G>();
  const int threads = omp_get_max_threads();
  std::vector<float> partial((size_t)threads * size, 0.f);
  #pragma omp parallel
  {
    float* mine = partial.data() + (size_t)omp_get_thread_num() * size;
    std::vector<float> xb(Hp * Wp * C, 0.f), gb(og * H * W * C, 0.f);
    #pragma omp for schedule(static)
    for (long n = 0; n < N; ++n) {
      fill_padded(xs + n * H * W * C, xb.data(), H, W, C, P, Wp);
      fill_spread(gs + n * H * W * Cout, gb.data(), H, W, C, Cout, cg, og, 0, H, W);
      for (long r = 0; r < og; ++r)
        for (long k = 0; k < blocks; ++k)
          for (long i = 0; i < H; ++i) {
            const float* grow = gb.data() + ((r * H + i) * W) * C + k * L;
            for (long a = 0; a < K; ++a) {
              const float* xrow = xb.data() + ((i + a * D) * Wp) * C + k * L;
              for (long b = 0; b < K; ++b) {
                float acc[4][L] = {};
                const float* xs_ = xrow + b * D * C;
                long j = 0;
                for (; j + 4 <= W; j += 4)
                  for (int u = 0; u < 4; ++u) {
                    #pragma omp simd
                    for (int l = 0; l < L; ++l) acc[u][l] += grow[(j + u) * C + l] * xs_[(j + u) * C + l];
                  }
                for (; j < W; ++j) {
                  #pragma omp simd
                  for (int l = 0; l < L; ++l) acc[0][l] += grow[j * C + l] * xs_[j * C + l];
                }
                float* d = mine + (((r * blocks + k) * K + a) * K + b) * L;
                #pragma omp simd
                for (int l = 0; l < L; ++l) d[l] += (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
              }
            }
          }
    }
  }
  float* d = dw.data_ptr<float>();
  for (long e = 0; e < size; ++e) {
    float s = 0.f;
    for (int t = 0; t < threads; ++t) s += partial[(size_t)t * size + e];
    d[e] = s;
  }
}

torch::Tensor forward(torch::Tensor x, torch::Tensor wv, int64_t K, int64_t D, int64_t cg, int64_t og) {
  auto y = torch::empty({x.size(0), x.size(1), x.size(2), x.size(3) / cg * og}, x.options());
  if (x.scalar_type() == at::kBFloat16) forward_impl<at::BFloat16>(x, wv, y, K, D, cg, og);
  else forward_impl<float>(x, wv, y, K, D, cg, og);
  return y;
}

torch::Tensor backward_input(torch::Tensor g, torch::Tensor wf, int64_t K, int64_t D, int64_t cg, int64_t og) {
  auto dx = torch::empty({g.size(0), g.size(1), g.size(2), g.size(3) / og * cg}, g.options());
  if (g.scalar_type() == at::kBFloat16) backward_input_impl<at::BFloat16>(g, wf, dx, K, D, cg, og);
  else backward_input_impl<float>(g, wf, dx, K, D, cg, og);
  return dx;
}

torch::Tensor backward_weight(torch::Tensor x, torch::Tensor g, int64_t K, int64_t D, int64_t cg, int64_t og) {
  auto dw = torch::empty({og, x.size(3) / L, K, K, L}, x.options().dtype(torch::kFloat32));
  const bool xb = x.scalar_type() == at::kBFloat16, gb = g.scalar_type() == at::kBFloat16;
  if (xb && gb) backward_weight_impl<at::BFloat16, at::BFloat16>(x, g, dw, K, D, cg, og);
  else if (xb) backward_weight_impl<at::BFloat16, float>(x, g, dw, K, D, cg, og);
  else if (gb) backward_weight_impl<float, at::BFloat16>(x, g, dw, K, D, cg, og);
  else backward_weight_impl<float, float>(x, g, dw, K, D, cg, og);
  return dw;
}
"""

_LANES = 16
_extension = None


def _load():
    """The compiled extension (built on the first call, then cached)."""
    global _extension
    if _extension is None:
        from torch.utils.cpp_extension import load_inline
        with warnings.catch_warnings():  # torch's note that no CUDA runtime exists
            warnings.simplefilter("ignore")
            _extension = load_inline("nas_direct_conv", cpp_sources=_SOURCE,
                                     functions=["forward", "backward_input", "backward_weight"],
                                     extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"])
    return _extension


def _lane_weights(weight: Tensor, groups: int) -> Tensor:
    """weight (C_out, cg, K, K) -> (og, C / 16, K, K, 16): lane l of block k is
    input channel 16 k + l, of group g = (16 k + l) / cg; for output g og + r."""
    out, cg, k, _ = weight.shape
    og = out // groups
    # (groups, og, cg, K, K) -> (og, groups, cg, K, K) -> (og, C, K, K): channel c = g cg + l
    per_channel = weight.view(groups, og, cg, k, k).transpose(0, 1).reshape(og, groups * cg, k, k)
    return per_channel.view(og, -1, _LANES, k, k).permute(0, 1, 3, 4, 2).contiguous()


def _from_lane_weights(lanes: Tensor, groups: int, cg: int) -> Tensor:
    """The inverse of :func:`_lane_weights`."""
    og, blocks, k = lanes.shape[:3]
    per_channel = lanes.permute(0, 1, 4, 2, 3).reshape(og, groups, cg, k, k)
    return per_channel.transpose(0, 1).reshape(groups * og, cg, k, k)


def _nhwc(t: Tensor) -> Tensor:
    """NCHW-indexed ``t`` as an NHWC tensor over channels_last memory (a view
    where ``t`` is channels_last already, as in this project's networks);
    fp32 or bf16, the dtypes the kernel reads."""
    if t.dtype not in (torch.float32, torch.bfloat16):
        t = t.float()
    return t.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)


class _DirectConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, dilation: int, groups: int) -> Tensor:
        k = weight.shape[-1]
        cg, og = x.shape[1] // groups, weight.shape[0] // groups
        xs = _nhwc(x)
        y = _load().forward(xs, _lane_weights(weight.float(), groups), k, dilation, cg, og)
        ctx.save_for_backward(xs, weight)
        ctx.settings = (dilation, groups, x.dtype)
        return y.permute(0, 3, 1, 2).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        ext = _load()
        xs, weight = ctx.saved_tensors
        dilation, groups, dtype = ctx.settings
        k = weight.shape[-1]
        cg, og = weight.shape[1], weight.shape[0] // groups
        gs = _nhwc(grad)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            flipped = _lane_weights(weight.float().flip(-1, -2), groups)
            grad_x = ext.backward_input(gs, flipped, k, dilation, cg, og).permute(0, 3, 1, 2).to(dtype)
        if ctx.needs_input_grad[1]:
            lanes = ext.backward_weight(xs, gs, k, dilation, cg, og)
            grad_w = _from_lane_weights(lanes, groups, cg).to(weight.dtype)
        return grad_x, grad_w, None, None


def direct_conv(x: Tensor, weight: Tensor, dilation: int, groups: int) -> Tensor:
    """``F.conv2d(x, weight, None, 1, dilation (k - 1) / 2, dilation, groups)``
    by the direct kernel (the shapes of the module docstring), in x's dtype and channels_last
    memory."""
    return _DirectConv.apply(x, weight, dilation, groups)
