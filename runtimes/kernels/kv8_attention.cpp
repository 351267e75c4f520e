// qwen_edge::kv8_update and qwen_edge::kv8_sdpa: ExecuTorch kernels for an int8 KV cache with static per-channel
// scales, and causal grouped-query attention that reads only the cache's filled positions.
//
//   kv8_update.out(value f32 [1, T, kv_heads, D], cache i8 [1, kv_heads, C, D] (in place), scales f32 [kv_heads, D],
//                  start_pos, *, out)
//       cache[0, h, start_pos + t, d] = clamp(round_half_even(value[0, t, h, d] / scales[h, d]), -128, 127)
//   kv8_sdpa.out(query f32 [1, T, heads, D], key_cache i8, value_cache i8, key_scales f32, value_scales f32,
//                start_pos, *, out f32 [1, T, heads, D])
//       query t (position start_pos + t) attends to positions 0 .. start_pos + t of its kv head (heads / kv_heads
//       query heads share one), keys and values read as code x scale; softmax scale 1 / sqrt(D).
//
// The same rounding as runtimes/quant/kv.py (the parity reference's fake-quant cache) and the ONNX CPU graph's int8
// cache. Each kv head's positions are contiguous ([kv_heads, C, D]): a step reads start_pos + T rows of D bytes per
// head, a quarter of a float32 cache's bytes. Work is split over kv heads (and blocks of queries for a prompt) on
// ExecuTorch's thread pool. The loops are written for the compiler to vectorize (fixed-width accumulators, an exp
// without library calls); built with -O3 by runtimes/backends/executorch_kernels.py for the Python runtime and by
// tools/et_runner/build.sh into the native runner.

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/core/function_ref.h>
#include <executorch/runtime/kernel/kernel_includes.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace executorch {
namespace extension {
// libexecutorch_threadpool's (extension/threadpool): runs f over [begin, end) in chunks on the shared pool
bool parallel_for(int64_t begin, int64_t end, int64_t grain_size, runtime::FunctionRef<void(int64_t, int64_t)> f);
}  // namespace extension
}  // namespace executorch

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

namespace {

constexpr int kLanes = 8;       // accumulator width: one AVX2 register, two NEON registers
constexpr int kQueryBlock = 4;  // a prompt's queries per task: each key row read serves them all
constexpr int64_t kPromptPath = 16;  // from this many tokens per call the head's cache is widened once, for all

// e^x for x <= 0 (arguments after the max is subtracted): 2^n x p(r), r = x - n ln 2 in [-ln2/2, ln2/2], a degree-6
// polynomial (relative error ~2e-7); arguments below -87 count as -87 (e^-87 ~ 2e-38, nothing beside the max's 1).
// A plain loop the compiler vectorizes.
void exp_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::max(x[i], -87.0f);
    const float k = std::nearbyint(v * 1.44269504088896341f);
    const float r = (v - k * 0.693145751953125f) - k * 1.428606765330187e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits;
    std::memcpy(&bits, &p, sizeof bits);
    bits += static_cast<int32_t>(k) << 23;
    std::memcpy(&x[i], &bits, sizeof bits);
  }
}

// Eight lanes as a GCC / Clang vector type: one AVX2 register, two NEON registers (no intrinsics: one source for
// both). Codes are widened by a plain loop, which the compiler vectorizes (a widening convert of a vector type is not
// always lowered well).
typedef float F8 __attribute__((vector_size(32)));

inline F8 load8(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void widen(const int8_t* code, int64_t dim, float* row) {
  for (int64_t d = 0; d < dim; ++d) row[d] = static_cast<float>(code[d]);
}

inline float sum8(F8 a) { return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])); }

// row[0..n) ← softmax(row[0..n)): the max and the sum in eight lanes (a float loop's reduction is not vectorized
// without reassociation, which this file does not allow the compiler)
void softmax_inplace(float* row, int64_t n) {
  float top = -INFINITY;
  int64_t t = 0;
  if (n >= kLanes) {
    F8 m = load8(row);
    for (t = kLanes; t + kLanes <= n; t += kLanes) {
      const F8 x = load8(row + t);
      m = x > m ? x : m;
    }
    for (int u = 0; u < kLanes; ++u) top = std::max(top, m[u]);
  }
  for (; t < n; ++t) top = std::max(top, row[t]);
  for (t = 0; t < n; ++t) row[t] -= top;
  exp_inplace(row, n);
  F8 lanes = {0, 0, 0, 0, 0, 0, 0, 0};
  for (t = 0; t + kLanes <= n; t += kLanes) lanes += load8(row + t);
  float total = sum8(lanes);
  for (; t < n; ++t) total += row[t];
  const float inverse = 1.0f / total;
  for (t = 0; t < n; ++t) row[t] *= inverse;
}

// scores[v * stride + t] = dot(qs[v], code row t) for the `nq` scaled query vectors against rows [0, rows) of one
// kv head (rows of `dim` codes, dim a multiple of 32); qs already carries the key scales and the softmax scale.
void key_scores(const float* qs, int nq, const int8_t* keys, int64_t rows, int64_t dim, float* scores,
                int64_t stride) {
  std::vector<float> row(dim);
  for (int64_t t = 0; t < rows; ++t) {
    widen(keys + t * dim, dim, row.data());
    for (int v = 0; v < nq; ++v) {
      const float* q = qs + v * dim;
      F8 a0 = {0, 0, 0, 0, 0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0;  // four chains: FMA latency, not throughput
      for (int64_t d = 0; d < dim; d += 4 * kLanes) {
        a0 += load8(q + d) * load8(row.data() + d);
        a1 += load8(q + d + kLanes) * load8(row.data() + d + kLanes);
        a2 += load8(q + d + 2 * kLanes) * load8(row.data() + d + 2 * kLanes);
        a3 += load8(q + d + 3 * kLanes) * load8(row.data() + d + 3 * kLanes);
      }
      scores[v * stride + t] = sum8((a0 + a1) + (a2 + a3));
    }
  }
}

// out[v] = sum over rows t < visible[v] of weights[v * stride + t] x code row t (the caller applies the value
// scales). Rows are widened a tile at a time (or read from `widened`, the codes already as floats); each query's sum
// over a tile stays in registers, 32 channels at once.
void weighted_values(const float* weights, int64_t stride, const int64_t* visible, int nq, const int8_t* values,
                     const float* widened, int64_t dim, float* out) {
  constexpr int64_t kTile = 64;
  std::fill(out, out + nq * dim, 0.0f);
  std::vector<float> buffer(widened ? 0 : kTile * dim);
  int64_t rows = 0;
  for (int v = 0; v < nq; ++v) rows = std::max(rows, visible[v]);
  for (int64_t t0 = 0; t0 < rows; t0 += kTile) {
    const int64_t n = std::min(kTile, rows - t0);
    const float* tile = widened ? widened + t0 * dim : buffer.data();
    if (!widened) widen(values + t0 * dim, n * dim, buffer.data());
    for (int v = 0; v < nq; v += 2) {  // two queries share each row chunk they load
      const int pair = std::min(2, nq - v);
      const int64_t used0 = std::max<int64_t>(0, std::min(n, visible[v] - t0));  // rows of this tile each sees
      const int64_t used1 = pair == 2 ? std::max<int64_t>(0, std::min(n, visible[v + 1] - t0)) : 0;
      const int64_t both = std::min(used0, used1);
      const float* w0 = weights + v * stride + t0;
      const float* w1 = weights + (v + pair - 1) * stride + t0;
      float* o0 = out + v * dim;
      float* o1 = out + (v + pair - 1) * dim;
      for (int64_t d = 0; d < dim; d += 4 * kLanes) {  // eight sums in flight: FMA latency, not loads, bounds it
        F8 a[4], b[4];
        for (int c = 0; c < 4; ++c) {
          a[c] = load8(o0 + d + c * kLanes);
          b[c] = load8(o1 + d + c * kLanes);
        }
        int64_t t = 0;
        for (; t < both; ++t) {
          const float* r = tile + t * dim + d;
          for (int c = 0; c < 4; ++c) {
            const F8 x = load8(r + c * kLanes);
            a[c] += w0[t] * x;
            b[c] += w1[t] * x;
          }
        }
        for (int64_t u = t; u < used0; ++u)
          for (int c = 0; c < 4; ++c) a[c] += w0[u] * load8(tile + u * dim + d + c * kLanes);
        for (int64_t u = t; u < used1; ++u)
          for (int c = 0; c < 4; ++c) b[c] += w1[u] * load8(tile + u * dim + d + c * kLanes);
        for (int c = 0; c < 4; ++c) {
          std::memcpy(o0 + d + c * kLanes, &a[c], sizeof a[c]);
          if (pair == 2) std::memcpy(o1 + d + c * kLanes, &b[c], sizeof b[c]);
        }
      }
    }
  }
}

// A prompt's path: the head's keys widened once per call into panels of sixteen rows, transposed within the panel,
// kt[(t / 16) * 16 * dim + d * 16 + t % 16] (rows padded to 16 with zeros; a panel is contiguous), so eight rows'
// scores are one vector and no horizontal sum is needed: scores[v * stride + t] for t < rows, sixteen rows by four
// queries at a time (six loads per eight multiply-adds).
void key_scores_transposed(const float* qs, int nq, const float* kt, int64_t rows, int64_t dim, float* scores,
                           int64_t stride) {
  for (int64_t t0 = 0; t0 < rows; t0 += 2 * kLanes) {
    for (int v0 = 0; v0 < nq; v0 += 4) {
      const int nv = std::min(4, nq - v0);
      F8 acc[4][2] = {};
      const float* q[4];
      for (int j = 0; j < 4; ++j) q[j] = qs + (v0 + std::min(j, nv - 1)) * dim;  // spare lanes repeat the last
      for (int64_t d = 0; d < dim; ++d) {
        const float* panel = kt + t0 * dim + d * 2 * kLanes;
        const F8 k0 = load8(panel), k1 = load8(panel + kLanes);
        for (int j = 0; j < 4; ++j) {
          acc[j][0] += q[j][d] * k0;
          acc[j][1] += q[j][d] * k1;
        }
      }
      for (int j = 0; j < nv; ++j) {
        float* out = scores + (v0 + j) * stride + t0;
        for (int u = 0; u < kLanes && t0 + u < rows; ++u) out[u] = acc[j][0][u];
        for (int u = 0; u < kLanes && t0 + kLanes + u < rows; ++u) out[kLanes + u] = acc[j][1][u];
      }
    }
  }
}

struct Shapes {
  int64_t steps, heads, kv_heads, dim, capacity;
};

// The head's cache as floats, for a prompt's many queries: keys in transposed panels (kt, `padded` rows), values as
// rows.
struct Widened {
  std::vector<float> kt, values;
  int64_t padded = 0;
};

Widened widen_head(const int8_t* keys, const int8_t* values, int64_t rows, int64_t dim) {
  Widened w;
  w.padded = (rows + 2 * kLanes - 1) / (2 * kLanes) * (2 * kLanes);
  w.kt.assign(dim * w.padded, 0.0f);
  w.values.resize(rows * dim);
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t d = 0; d < dim; ++d)
      w.kt[(t / (2 * kLanes)) * 2 * kLanes * dim + d * 2 * kLanes + t % (2 * kLanes)] = static_cast<float>(keys[t * dim + d]);
  widen(values, rows * dim, w.values.data());
  return w;
}

// One task: kv head g, queries [first, last) of this call, all the query heads that read g; `widened` (a prompt's
// path) or nullptr (decode: the codes are read directly).
void attend_block(const Shapes& s, int64_t g, int64_t first, int64_t last, int64_t start_pos, const float* query,
                  const int8_t* key_cache, const int8_t* value_cache, const float* key_scales,
                  const float* value_scales, const Widened* widened, float* out) {
  const int64_t group = s.heads / s.kv_heads, dim = s.dim;
  const int nq = static_cast<int>((last - first) * group);
  const float softmax_scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const int64_t rows = start_pos + last;  // the last query's view: every other query sees a prefix of it
  std::vector<float> qs(nq * dim), scores(nq * rows), mixed(nq * dim);
  std::vector<int64_t> visible(nq);
  const float* ks = key_scales + g * dim;
  for (int64_t i = first; i < last; ++i) {
    for (int64_t j = 0; j < group; ++j) {
      const int v = static_cast<int>((i - first) * group + j);
      const float* q = query + (i * s.heads + g * group + j) * dim;
      for (int64_t d = 0; d < dim; ++d) qs[v * dim + d] = q[d] * ks[d] * softmax_scale;
      visible[v] = start_pos + i + 1;
    }
  }
  if (widened)
    key_scores_transposed(qs.data(), nq, widened->kt.data(), rows, dim, scores.data(), rows);
  else
    key_scores(qs.data(), nq, key_cache + g * s.capacity * dim, rows, dim, scores.data(), rows);
  for (int v = 0; v < nq; ++v) softmax_inplace(scores.data() + v * rows, visible[v]);
  weighted_values(scores.data(), rows, visible.data(), nq, value_cache + g * s.capacity * dim,
                  widened ? widened->values.data() : nullptr, dim, mixed.data());
  const float* vs = value_scales + g * dim;
  for (int64_t i = first; i < last; ++i) {
    for (int64_t j = 0; j < group; ++j) {
      const int v = static_cast<int>((i - first) * group + j);
      float* o = out + (i * s.heads + g * group + j) * dim;
      for (int64_t d = 0; d < dim; ++d) o[d] = mixed[v * dim + d] * vs[d];
    }
  }
}

bool cache_shapes_fit(const Tensor& cache, const Tensor& scales, int64_t kv_heads, int64_t dim) {
  return cache.scalar_type() == ScalarType::Char && cache.dim() == 4 && cache.size(0) == 1 &&
         cache.size(1) == kv_heads && cache.size(3) == dim && scales.scalar_type() == ScalarType::Float &&
         scales.dim() == 2 && scales.size(0) == kv_heads && scales.size(1) == dim;
}

Tensor& kv8_update_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache, const Tensor& scales,
                       int64_t start_pos, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, value.scalar_type() == ScalarType::Float && value.dim() == 4 && value.size(0) == 1,
                      InvalidArgument, out, "kv8_update: value must be float32 [1, T, kv_heads, head_dim]");
  const int64_t steps = value.size(1), kv_heads = value.size(2), dim = value.size(3);
  ET_KERNEL_CHECK_MSG(ctx, cache_shapes_fit(cache, scales, kv_heads, dim), InvalidArgument, out,
                      "kv8_update: cache must be int8 [1, kv_heads, positions, head_dim], scales float32 "
                      "[kv_heads, head_dim]");
  const int64_t capacity = cache.size(2);
  ET_KERNEL_CHECK_MSG(ctx, start_pos >= 0 && start_pos + steps <= capacity, InvalidArgument, out,
                      "kv8_update: positions past the cache");
  const float* x = value.const_data_ptr<float>();
  const float* sc = scales.const_data_ptr<float>();
  int8_t* codes = cache.mutable_data_ptr<int8_t>();
  for (int64_t t = 0; t < steps; ++t) {
    for (int64_t h = 0; h < kv_heads; ++h) {
      const float* in = x + (t * kv_heads + h) * dim;
      int8_t* row = codes + (h * capacity + start_pos + t) * dim;
      for (int64_t d = 0; d < dim; ++d) {
        const float q = std::nearbyint(in[d] / sc[h * dim + d]);  // half to even (the default rounding mode)
        row[d] = static_cast<int8_t>(std::min(127.0f, std::max(-128.0f, q)));
      }
    }
  }
  return out;
}

Tensor& kv8_sdpa_out(KernelRuntimeContext& ctx, const Tensor& query, const Tensor& key_cache,
                     const Tensor& value_cache, const Tensor& key_scales, const Tensor& value_scales,
                     int64_t start_pos, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, query.scalar_type() == ScalarType::Float && query.dim() == 4 && query.size(0) == 1 &&
                               out.scalar_type() == ScalarType::Float,
                      InvalidArgument, out, "kv8_sdpa: query must be float32 [1, T, heads, head_dim]");
  const Shapes s{query.size(1), query.size(2), key_cache.dim() == 4 ? key_cache.size(1) : 0, query.size(3),
                 key_cache.dim() == 4 ? key_cache.size(2) : 0};
  ET_KERNEL_CHECK_MSG(ctx, s.kv_heads > 0 && s.heads % s.kv_heads == 0 && s.dim % (4 * kLanes) == 0 &&
                               cache_shapes_fit(key_cache, key_scales, s.kv_heads, s.dim) &&
                               cache_shapes_fit(value_cache, value_scales, s.kv_heads, s.dim) &&
                               value_cache.size(2) == s.capacity,
                      InvalidArgument, out, "kv8_sdpa: caches and scales do not fit the query");
  ET_KERNEL_CHECK_MSG(ctx, start_pos >= 0 && start_pos + s.steps <= s.capacity, InvalidArgument, out,
                      "kv8_sdpa: positions past the cache");
  // the planned output holds the longest prompt: it takes this call's shape, as the views after it expect
  ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::resize_tensor(out, query.sizes()) == Error::Ok, InvalidArgument,
                      out, "kv8_sdpa: cannot resize the output");
  const int64_t blocks = (s.steps + kQueryBlock - 1) / kQueryBlock;
  const float* q = query.const_data_ptr<float>();
  const int8_t* kc = key_cache.const_data_ptr<int8_t>();
  const int8_t* vc = value_cache.const_data_ptr<int8_t>();
  const float* ks = key_scales.const_data_ptr<float>();
  const float* vs = value_scales.const_data_ptr<float>();
  float* o = out.mutable_data_ptr<float>();
  if (s.steps < kPromptPath) {  // decode: tasks are (kv head, query block), reading the codes row by row
    executorch::extension::parallel_for(0, s.kv_heads * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t g = task % s.kv_heads, block = task / s.kv_heads;
        const int64_t first = block * kQueryBlock, last = std::min(s.steps, first + kQueryBlock);
        attend_block(s, g, first, last, start_pos, q, kc, vc, ks, vs, nullptr, o);
      }
    });
  } else {  // a prompt: tasks are kv heads, each widening its head's cache once for all its queries
    const int64_t rows = start_pos + s.steps;
    executorch::extension::parallel_for(0, s.kv_heads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        const Widened w = widen_head(kc + g * s.capacity * s.dim, vc + g * s.capacity * s.dim, rows, s.dim);
        for (int64_t block = 0; block < blocks; ++block) {
          const int64_t first = block * kQueryBlock, last = std::min(s.steps, first + kQueryBlock);
          attend_block(s, g, first, last, start_pos, q, kc, vc, ks, vs, &w, o);
        }
      }
    });
  }
  return out;
}

}  // namespace

EXECUTORCH_LIBRARY(qwen_edge, "kv8_update.out", kv8_update_out);
EXECUTORCH_LIBRARY(qwen_edge, "kv8_sdpa.out", kv8_sdpa_out);
