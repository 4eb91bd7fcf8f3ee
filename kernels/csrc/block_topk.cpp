// Block top-k sparse decode attention, CPU kernel (ttscale.kernels, JIT-built by cpu.py;
// registered as torch.ops.ttscale_kernels.block_topk_decode).
//
// Semantics are those of kernels/reference.py (the test oracle). One task per
// (batch row, KV head), parallelised with OpenMP; the G = Hq / Hkv query heads of a
// group share the KV head's block selection, so every selected K/V row is read once
// and used by all G heads. Inner loops run over the head dimension and are written
// for the compiler's auto-vectoriser (-O3 -march=native; `omp simd` reductions).
//
// Per task:
//   1. valid tokens are [start, seq_len); blocks fb..lb hold them (n = lb - fb + 1);
//   2. n <= k: every valid token is attended (exact dense attention);
//   3. otherwise the first num_sink and last num_local blocks are kept, and the other
//      k - num_sink - num_local blocks are the candidates with the largest group score
//        score(j) = sum_h softmax_j(bound_h(j)),  bound_h(j) = sum_d max(q_hd mn_jd, q_hd mx_jd)
//      (Quest's upper bound of q_h . k over block j, softmax over candidate blocks),
//      ties broken by the lower block index;
//   4. exact softmax attention of each head over the selected tokens (two passes).

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <omp.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

namespace {

struct Geometry {
  int64_t B, Hq, Hkv, G, D, NB;
  int64_t block_size, k, num_sink, num_local;
  float scale;
  int threads;
};

// Below this many K/V rows per call the kernel runs on one thread: waking the OpenMP team
// costs more than it saves on small (sparse, batch-1) work, and far more on a busy host
// where a descheduled worker stalls the whole team at the barrier.
constexpr int64_t kRowsPerThread = 16384;

// exp for x <= 0 (softmax arguments), Cephes expf polynomial: ~1 ulp, branch-free so the
// loops below vectorise (libm's expf does not without -ffast-math).
inline float fast_exp(float x) {
  x = std::max(x, -87.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, sizeof(scale));
  return p * scale;
}

// Softmax numerator in place; returns the sum.
inline float exp_shift(float* __restrict x, int64_t n) {
  float top = x[0];
  for (int64_t i = 1; i < n; ++i) top = std::max(top, x[i]);
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    x[i] = fast_exp(x[i] - top);
    sum += x[i];
  }
  return sum;
}

template <typename scalar_t>
inline void load_row(const scalar_t* __restrict src, float* __restrict dst, int64_t D) {
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<float>(src[d]);
}

// DC > 0: the head dimension as a compile-time constant (fully unrolled, accumulators kept
// in registers); DC == 0: runtime D.
template <int DC>
inline float dot(const float* __restrict a, const float* __restrict b, int64_t D) {
  const int64_t n = DC > 0 ? DC : D;
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

template <int DC>
inline float quest_bound(const float* __restrict q, const float* __restrict mn,
                         const float* __restrict mx, int64_t D) {
  const int64_t n = DC > 0 ? DC : D;
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t d = 0; d < n; ++d) s += std::max(q[d] * mn[d], q[d] * mx[d]);
  return s;
}

// acc[d] += sum_t p[t] * rows[t][d] over nrows rows spaced `stride` floats apart.
template <int DC>
inline void accumulate(float* __restrict acc, const float* __restrict p,
                       const float* __restrict rows, int64_t stride, int64_t nrows, int64_t D) {
  const int64_t n = DC > 0 ? DC : D;
  if constexpr (DC > 0) {
    float a[DC];
    for (int64_t d = 0; d < DC; ++d) a[d] = acc[d];
    for (int64_t t = 0; t < nrows; ++t) {
      const float w = p[t];
      const float* r = rows + t * stride;
#pragma omp simd
      for (int64_t d = 0; d < DC; ++d) a[d] += w * r[d];
    }
    for (int64_t d = 0; d < DC; ++d) acc[d] = a[d];
  } else {
    for (int64_t t = 0; t < nrows; ++t) {
      const float w = p[t];
      const float* r = rows + t * stride;
#pragma omp simd
      for (int64_t d = 0; d < n; ++d) acc[d] += w * r[d];
    }
  }
}

// Selected block indices (ascending) of one (row, KV head).
template <typename scalar_t, int DC>
std::vector<int64_t> select_blocks(const Geometry& g, const float* qs, const scalar_t* summ,
                                   int64_t s_blk, int64_t s_mm, int64_t fb, int64_t lb,
                                   std::vector<float>& scratch) {
  const int64_t n = lb - fb + 1;
  std::vector<int64_t> sel;
  if (n <= g.k) {
    sel.resize(n);
    std::iota(sel.begin(), sel.end(), fb);
    return sel;
  }
  const int64_t c0 = fb + g.num_sink, c1 = lb - g.num_local + 1, nc = c1 - c0;
  const int64_t m = g.k - g.num_sink - g.num_local;
  sel.reserve(g.k);
  for (int64_t j = fb; j < c0; ++j) sel.push_back(j);
  if (m > 0) {
    const int64_t D = g.D;
    scratch.assign(static_cast<size_t>(g.G * nc + nc + 2 * D), 0.f);
    float* bounds = scratch.data();  // [G][nc]
    float* group = bounds + g.G * nc;  // [nc]
    float* mn = group + nc;            // [D]
    float* mx = mn + D;                // [D]
    for (int64_t j = 0; j < nc; ++j) {
      const scalar_t* sj = summ + (c0 + j) * s_blk;
      const float *pmn, *pmx;
      if constexpr (std::is_same_v<scalar_t, float>) {
        pmn = sj;
        pmx = sj + s_mm;
      } else {
        load_row(sj, mn, D);
        load_row(sj + s_mm, mx, D);
        pmn = mn;
        pmx = mx;
      }
      for (int64_t h = 0; h < g.G; ++h)
        bounds[h * nc + j] = quest_bound<DC>(qs + h * D, pmn, pmx, D);
    }
    for (int64_t h = 0; h < g.G; ++h) {
      float* b = bounds + h * nc;
      const float inv = 1.f / exp_shift(b, nc);
#pragma omp simd
      for (int64_t j = 0; j < nc; ++j) group[j] += b[j] * inv;
    }
    std::vector<int64_t> idx(nc);
    std::iota(idx.begin(), idx.end(), 0);
    auto better = [group](int64_t a, int64_t b) {
      return group[a] > group[b] || (group[a] == group[b] && a < b);
    };
    std::nth_element(idx.begin(), idx.begin() + (m - 1), idx.end(), better);
    std::sort(idx.begin(), idx.begin() + m);
    for (int64_t i = 0; i < m; ++i) sel.push_back(c0 + idx[i]);
  }
  for (int64_t j = c1; j <= lb; ++j) sel.push_back(j);
  return sel;
}

template <typename scalar_t, int DC>
void decode_kernel(const Geometry& g, const at::Tensor& q, const at::Tensor& kc,
                   const at::Tensor& vc, const at::Tensor& summ, const int64_t* seq_lens,
                   const int64_t* starts, at::Tensor& out) {
  const scalar_t* qp = q.data_ptr<scalar_t>();
  const scalar_t* kp = kc.data_ptr<scalar_t>();
  const scalar_t* vp = vc.data_ptr<scalar_t>();
  const scalar_t* sp = summ.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const int64_t qs_b = q.stride(0), qs_h = q.stride(1);
  const int64_t ks_b = kc.stride(0), ks_h = kc.stride(1), ks_t = kc.stride(2);
  const int64_t vs_b = vc.stride(0), vs_h = vc.stride(1), vs_t = vc.stride(2);
  const int64_t ss_b = summ.stride(0), ss_h = summ.stride(1), ss_blk = summ.stride(2),
                ss_mm = summ.stride(3);
  const int64_t os_b = out.stride(0), os_h = out.stride(1);
  const int64_t D = g.D, G = g.G, bs = g.block_size;
  constexpr bool kFloat = std::is_same_v<scalar_t, float>;

  const int64_t tasks = g.B * g.Hkv;
#pragma omp parallel for schedule(dynamic, 1) num_threads(g.threads) if (g.threads > 1)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / g.Hkv, kvh = task % g.Hkv;
    const int64_t start = std::max<int64_t>(starts[b], 0);
    const int64_t len = seq_lens[b];
    scalar_t* ob = op + b * os_b;
    if (len <= start) {
      for (int64_t h = 0; h < G; ++h)
        for (int64_t d = 0; d < D; ++d) ob[(kvh * G + h) * os_h + d] = scalar_t(0);
      continue;
    }
    std::vector<float> qs(G * D), scratch;
    for (int64_t h = 0; h < G; ++h) {
      load_row(qp + b * qs_b + (kvh * G + h) * qs_h, qs.data() + h * D, D);
      for (int64_t d = 0; d < D; ++d) qs[h * D + d] *= g.scale;
    }
    const int64_t fb = start / bs, lb = (len - 1) / bs;
    const std::vector<int64_t> sel = select_blocks<scalar_t, DC>(
        g, qs.data(), sp + b * ss_b + kvh * ss_h, ss_blk, ss_mm, fb, lb, scratch);
    int64_t ntok = 0;  // tokens of the selected blocks, clipped to [start, len)
    for (int64_t j : sel) ntok += std::min(len, (j + 1) * bs) - std::max(start, j * bs);
    std::vector<float> logits(G * ntok), acc(G * D, 0.f);
    std::vector<float> rows(kFloat ? 0 : bs * D);  // one converted block (bf16/fp16)
    const scalar_t* kb = kp + b * ks_b + kvh * ks_h;
    const scalar_t* vb = vp + b * vs_b + kvh * vs_h;
    // Pass 1: logits of every head for every selected token (each K row read once).
    int64_t i = 0;
    for (int64_t j : sel) {
      const int64_t lo = std::max(start, j * bs), hi = std::min(len, (j + 1) * bs);
      const float* kr;
      int64_t stride;
      if constexpr (kFloat) {
        kr = kb + lo * ks_t;
        stride = ks_t;
      } else {
        for (int64_t t = lo; t < hi; ++t) load_row(kb + t * ks_t, rows.data() + (t - lo) * D, D);
        kr = rows.data();
        stride = D;
      }
      for (int64_t h = 0; h < G; ++h) {
        float* lg = logits.data() + h * ntok + i;
        const float* qh = qs.data() + h * D;
        for (int64_t t = 0; t < hi - lo; ++t) lg[t] = dot<DC>(qh, kr + t * stride, D);
      }
      i += hi - lo;
    }
    std::vector<float> inv_sum(G);
    for (int64_t h = 0; h < G; ++h) inv_sum[h] = 1.f / exp_shift(logits.data() + h * ntok, ntok);
    // Pass 2: probability-weighted sum of V rows (each V block read once, L1-resident
    // across the G heads).
    i = 0;
    for (int64_t j : sel) {
      const int64_t lo = std::max(start, j * bs), hi = std::min(len, (j + 1) * bs);
      const float* vr;
      int64_t stride;
      if constexpr (kFloat) {
        vr = vb + lo * vs_t;
        stride = vs_t;
      } else {
        for (int64_t t = lo; t < hi; ++t) load_row(vb + t * vs_t, rows.data() + (t - lo) * D, D);
        vr = rows.data();
        stride = D;
      }
      for (int64_t h = 0; h < G; ++h)
        accumulate<DC>(acc.data() + h * D, logits.data() + h * ntok + i, vr, stride, hi - lo, D);
      i += hi - lo;
    }
    for (int64_t h = 0; h < G; ++h) {
      scalar_t* o = ob + (kvh * G + h) * os_h;
      for (int64_t d = 0; d < D; ++d) o[d] = static_cast<scalar_t>(acc[h * D + d] * inv_sum[h]);
    }
  }
}

void check_last_dim_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.stride(-1) == 1, name,
              " must be contiguous in its last dimension; call .contiguous()");
}

}  // namespace

at::Tensor block_topk_decode(const at::Tensor& q, const at::Tensor& k_cache,
                             const at::Tensor& v_cache, const at::Tensor& summaries,
                             const at::Tensor& seq_lens, const at::Tensor& starts,
                             int64_t block_size, int64_t k, int64_t num_sink, int64_t num_local,
                             double scale) {
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4 && v_cache.dim() == 4 && summaries.dim() == 5,
              "expected q (B,Hq,D), k/v cache (B,Hkv,T,D), summaries (B,Hkv,NB,2,D)");
  TORCH_CHECK(q.device().is_cpu() && k_cache.device().is_cpu() && v_cache.device().is_cpu() &&
                  summaries.device().is_cpu(),
              "the CPU kernel needs CPU tensors");
  TORCH_CHECK(k_cache.scalar_type() == q.scalar_type() &&
                  v_cache.scalar_type() == q.scalar_type() &&
                  summaries.scalar_type() == q.scalar_type(),
              "q, k_cache, v_cache and summaries must share one dtype");
  for (auto* p : {&q, &k_cache, &v_cache, &summaries})
    check_last_dim_contiguous(*p, "every input");
  TORCH_CHECK(seq_lens.device().is_cpu() && starts.device().is_cpu() &&
                  seq_lens.scalar_type() == at::kLong && starts.scalar_type() == at::kLong,
              "seq_lens and starts must be int64 CPU tensors");
  auto lens = seq_lens.contiguous();
  auto st = starts.contiguous();
  Geometry g;
  g.B = q.size(0);
  g.Hq = q.size(1);
  g.D = q.size(2);
  g.Hkv = k_cache.size(1);
  TORCH_CHECK(g.Hq % g.Hkv == 0, "query heads must be a multiple of KV heads");
  g.G = g.Hq / g.Hkv;
  g.NB = summaries.size(2);
  g.block_size = block_size;
  g.k = k;
  g.num_sink = num_sink;
  g.num_local = num_local;
  g.scale = static_cast<float>(scale);
  TORCH_CHECK(lens.numel() == g.B && st.numel() == g.B,
              "seq_lens and starts need one entry per row");
  const int64_t* lp = lens.data_ptr<int64_t>();
  const int64_t* sp = st.data_ptr<int64_t>();
  int64_t rows = 0;  // K/V rows the call will read, for the thread count
  for (int64_t b = 0; b < g.B; ++b) {
    TORCH_CHECK(lp[b] <= k_cache.size(2) && lp[b] <= v_cache.size(2),
                "seq_lens exceed the cache length");
    TORCH_CHECK(lp[b] <= g.NB * block_size, "summaries hold too few blocks for seq_lens");
    rows += g.Hkv * std::min(std::max<int64_t>(lp[b] - sp[b], 0), (k + 1) * block_size);
  }
  g.threads = static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>({static_cast<int64_t>(omp_get_max_threads()), g.B * g.Hkv,
                            rows / kRowsPerThread})));
  auto out = at::empty({g.B, g.Hq, g.D}, q.options());
  const auto dtype = q.scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "block_topk_decode", [&] {
    if (g.D == 64)
      decode_kernel<scalar_t, 64>(g, q, k_cache, v_cache, summaries, lp, sp, out);
    else if (g.D == 128)
      decode_kernel<scalar_t, 128>(g, q, k_cache, v_cache, summaries, lp, sp, out);
    else
      decode_kernel<scalar_t, 0>(g, q, k_cache, v_cache, summaries, lp, sp, out);
  });
  return out;
}

TORCH_LIBRARY(ttscale_kernels, m) {
  m.def(
      "block_topk_decode(Tensor q, Tensor k_cache, Tensor v_cache, Tensor summaries, "
      "Tensor seq_lens, Tensor starts, int block_size, int k, int num_sink, int num_local, "
      "float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(ttscale_kernels, CPU, m) { m.impl("block_topk_decode", &block_topk_decode); }
