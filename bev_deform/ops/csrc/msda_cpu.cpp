// Multi-scale deformable attention on CPU: forward and backward.
//
// Semantics are mmcv's (and bev_deform.ops.reference's): a location in [0, 1] on a level of
// size H x W samples pixel (loc_y * H - 0.5, loc_x * W - 0.5) bilinearly, corners outside the
// level read zero, i.e. grid_sample(align_corners=False, padding_mode='zeros').
//
// Shapes (all tensors contiguous, value / locations / weights / grad_output of one dtype):
//   value               (B, S, M, D)        S = sum of H_l * W_l
//   spatial_shapes      (L, 2) int64        (H_l, W_l)
//   level_start_index   (L,) int64          first row of level l in S (running sum of H_l * W_l)
//   sampling_locations  (B, Q, M, L, P, 2)  (x, y) in [0, 1]
//   attention_weights   (B, Q, M, L, P)
//   valid_shapes        (B, L, 2) int64     optional (H_v, W_v) <= (H_l, W_l): of row b's level l
//                                           only the first H_v rows and W_v columns are read, the
//                                           other cells read zero (an image's padding) and get
//                                           zero gradient, as if value were zero there
//   output              (B, Q, M * D)
//
// Parallelism (at::parallel_for, so the extension is compiled with -fopenmp):
//   forward  over (batch, head, query chunk) units, each owning its rows of the output;
//   backward over the B * M * L (batch, head, level) units: a unit owns the slice
//   grad_value[b, start_l : start_l + H_l * W_l, m, :] and the location / weight gradients of
//   its samples, so no two threads ever write the same element (no atomics, no buffers), and
//   every unit has the same Q * P samples, so the work is balanced.
// Memory: the samples of one (batch, head, level) are processed together. The rows of one head
// lie M * D elements apart in value (a power of two such as 1 KiB, which maps them onto a
// fraction of the cache sets), so when there are several heads and enough samples fall on a
// level, the unit first copies the level's rows of that head into a contiguous per-thread
// scratch (and accumulates its gradient in another, written back once): the random bilinear
// reads then hit the cache. One head's rows are contiguous already and are read in place.
// The per-query data (locations, weights, output rows) of a head lies M * L * P samples per query
// apart, so it is prefetched a few queries ahead. grad_value, as large as value, is allocated
// with transparent-huge-page advice, which saves most of the page-fault time of its first write.
// ISA: the channel loops vectorise; on x86-64 Linux with GCC the range functions are compiled
// once per ISA level (x86-64-v4 = AVX-512, v3 = AVX2 + FMA, baseline) and the loader picks the
// best for the running CPU (function multi-versioning), so no -march flag is needed.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <tuple>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MSDA_ISA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#else
#define MSDA_ISA_CLONES
#endif

namespace {

// A level is copied to scratch when its samples' corners are expected to touch each of its
// pixels at least 1 / kScratchFactor times: 4 corners * Q * P * kScratchFactor >= H * W.
constexpr int64_t kScratchFactor = 2;

// Sizes and read-only inputs shared by the forward and backward passes.
template <typename scalar_t>
struct MsdaInputs {
  const scalar_t* value;
  const scalar_t* loc;
  const scalar_t* attn;
  const int64_t* shapes;  // (L, 2): H_l, W_l
  const int64_t* start;   // (L,)
  const int64_t* valid;   // (B, L, 2): H_v, W_v per row and level, or nullptr (whole levels)
  int64_t B, S, M, D, Q, L, P;
  int64_t max_level_pixels;  // max of H_l * W_l
};

// Gradient outputs, written by the backward pass.
template <typename scalar_t>
struct MsdaGrads {
  scalar_t* value;  // (B, S, M, D), every element written by the backward
  scalar_t* loc;    // (B, Q, M, L, P, 2), every element written by the backward
  scalar_t* attn;   // (B, Q, M, L, P), every element written by the backward
};

// The rows of one (batch, head, level): pixel i at rows + i * stride.
template <typename T>
struct Rows {
  T* rows;
  int64_t stride;
};

// Bilinear footprint of one location on one level. Corners are ordered top-left, top-right,
// bottom-left, bottom-right; a corner outside the level has pixel -1 and weight 0.
template <typename scalar_t>
struct Corners {
  int64_t pixel[4];  // h * W + w inside the level
  scalar_t weight[4];
  scalar_t lh, lw;  // fractional position inside the pixel cell
};

// The real extent of row b's level l: (H_v, W_v) from valid_shapes, or the whole level.
template <typename scalar_t>
inline void valid_extent(const MsdaInputs<scalar_t>& in, int64_t b, int64_t l, int64_t H, int64_t W, int64_t& Hv,
                         int64_t& Wv) {
  Hv = in.valid ? in.valid[2 * (b * in.L + l)] : H;
  Wv = in.valid ? in.valid[2 * (b * in.L + l) + 1] : W;
}

// Fills `c` for a location (loc_x, loc_y) on an H x W level whose cells past row Hv or column Wv
// read zero. Returns false when no corner can touch the level (this also rejects NaN and values
// too large to convert to an integer).
template <typename scalar_t>
inline bool bilinear_corners(scalar_t loc_x, scalar_t loc_y, int64_t H, int64_t W, int64_t Hv, int64_t Wv,
                             Corners<scalar_t>& c) {
  const scalar_t h = loc_y * static_cast<scalar_t>(H) - static_cast<scalar_t>(0.5);
  const scalar_t w = loc_x * static_cast<scalar_t>(W) - static_cast<scalar_t>(0.5);
  if (!(h > -2 && w > -2 && h < H + 1 && w < W + 1)) {
    return false;
  }
  const scalar_t h0f = std::floor(h);
  const scalar_t w0f = std::floor(w);
  const int64_t h0 = static_cast<int64_t>(h0f);
  const int64_t w0 = static_cast<int64_t>(w0f);
  c.lh = h - h0f;
  c.lw = w - w0f;
  const scalar_t hh = 1 - c.lh;
  const scalar_t hw = 1 - c.lw;
  const scalar_t weights[4] = {hh * hw, hh * c.lw, c.lh * hw, c.lh * c.lw};
  for (int k = 0; k < 4; ++k) {
    const int64_t y = h0 + (k >> 1);
    const int64_t x = w0 + (k & 1);
    const bool inside = y >= 0 && y < Hv && x >= 0 && x < Wv;
    c.pixel[k] = inside ? y * W + x : -1;
    c.weight[k] = inside ? weights[k] : static_cast<scalar_t>(0);
  }
  return true;
}

// Rows already contiguous (one head: stride D) are read in place, as a copy would gain nothing.
inline bool use_scratch(int64_t pixels, int64_t samples, int64_t stride, int64_t D) {
  return stride != D && 4 * samples * kScratchFactor >= pixels;
}

// Queries ahead whose per-sample data (locations, weights, output rows) is prefetched: that
// data lies one query apart by M * L * P samples, a stride the hardware prefetchers follow
// poorly across pages.
constexpr int64_t kQueriesAhead = 4;

// Prefetches [ptr, ptr + n) (n elements) for reading (write = 0) or writing (write = 1).
template <int write, typename T>
inline void prefetch(const T* ptr, int64_t n) {
#if defined(__GNUC__) || defined(__clang__)
  for (int64_t i = 0; i < n; i += 64 / static_cast<int64_t>(sizeof(T))) {
    __builtin_prefetch(ptr + i, write, 3);
  }
#endif
}

// Copies `pixels` rows of D elements from `src` (row stride src_stride) to `dst` (dst_stride).
template <typename scalar_t>
inline void copy_rows(const scalar_t* src, int64_t src_stride, scalar_t* dst, int64_t dst_stride, int64_t pixels,
                      int64_t D) {
  for (int64_t i = 0; i < pixels; ++i) {
    const scalar_t* from = src + i * src_stride;
    scalar_t* to = dst + i * dst_stride;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) {
      to[d] = from[d];
    }
  }
}

// acc (D,) += attn * bilinear sample of `c` in `src`.
template <typename scalar_t>
inline void forward_sample(scalar_t* acc, Rows<const scalar_t> src, const Corners<scalar_t>& c, scalar_t attn,
                           const scalar_t* zeros, int64_t D) {
  const scalar_t* v[4];
  scalar_t w[4];
  for (int k = 0; k < 4; ++k) {
    v[k] = c.pixel[k] >= 0 ? src.rows + c.pixel[k] * src.stride : zeros;
    w[k] = attn * c.weight[k];
  }
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) {
    acc[d] += w[0] * v[0][d] + w[1] * v[1][d] + w[2] * v[2][d] + w[3] * v[3][d];
  }
}

// Forward of head m of batch b for queries [q_begin, q_end), all levels: adds into out[b, q, m, :].
// `scratch` holds max_level_pixels * D elements, `zeros` D zeros.
template <typename scalar_t>
void forward_unit(const MsdaInputs<scalar_t>& in, scalar_t* out, int64_t b, int64_t m, int64_t q_begin,
                  int64_t q_end, scalar_t* scratch, const scalar_t* zeros) {
  const int64_t M = in.M, D = in.D, L = in.L, P = in.P;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t H = in.shapes[2 * l], W = in.shapes[2 * l + 1];
    int64_t Hv, Wv;
    valid_extent(in, b, l, H, W, Hv, Wv);
    // value (B, S, M, D): the rows of head m on level l, M * D apart
    Rows<const scalar_t> src{in.value + ((b * in.S + in.start[l]) * M + m) * D, M * D};
    if (use_scratch(H * W, (q_end - q_begin) * P, src.stride, D)) {
      copy_rows(src.rows, src.stride, scratch, D, H * W, D);
      src = {scratch, D};
    }
    for (int64_t q = q_begin; q < q_end; ++q) {
      scalar_t* acc = out + ((b * in.Q + q) * M + m) * D;  // out (B, Q, M * D)
      const int64_t first = (((b * in.Q + q) * M + m) * L + l) * P;  // sample (b, q, m, l, 0)
      if (q + kQueriesAhead < q_end) {
        const int64_t ahead = first + kQueriesAhead * M * L * P;
        prefetch<0>(in.loc + 2 * ahead, 2 * P);
        prefetch<0>(in.attn + ahead, P);
        prefetch<1>(acc + kQueriesAhead * M * D, D);
      }
      for (int64_t s = first; s < first + P; ++s) {
        Corners<scalar_t> c;
        if (bilinear_corners(in.loc[2 * s], in.loc[2 * s + 1], H, W, Hv, Wv, c)) {
          forward_sample(acc, src, c, in.attn[s], zeros, D);
        }
      }
    }
  }
}

// Forward units [begin, end) of the flattened (B * M * chunks) axis, chunks splitting Q.
template <typename scalar_t>
void forward_range_impl(const MsdaInputs<scalar_t>& in, scalar_t* out, int64_t chunks, int64_t begin, int64_t end) {
  const std::unique_ptr<scalar_t[]> scratch(new scalar_t[in.max_level_pixels * in.D]);
  const std::vector<scalar_t> zeros(in.D, 0);  // the row read by corners outside the level
  for (int64_t u = begin; u < end; ++u) {
    const int64_t chunk = u % chunks, m = (u / chunks) % in.M, b = u / (chunks * in.M);
    forward_unit(in, out, b, m, chunk * in.Q / chunks, (chunk + 1) * in.Q / chunks, scratch.get(), zeros.data());
  }
}

// Backward of sample s with footprint `c` on an H x W level: adds into the rows `dst` of
// grad_value and writes the sample's location and weight gradients. `src` are the value rows,
// `go` the (D,) output gradient; `zeros` / `sink` stand in for corners outside the level.
template <typename scalar_t>
inline void backward_sample(const MsdaInputs<scalar_t>& in, const MsdaGrads<scalar_t>& g, const Corners<scalar_t>& c,
                            int64_t s, int64_t H, int64_t W, Rows<const scalar_t> src, Rows<scalar_t> dst,
                            const scalar_t* go, const scalar_t* zeros, scalar_t* sink) {
  const int64_t D = in.D;
  const scalar_t attn = in.attn[s];
  const scalar_t* v[4];
  scalar_t* gv[4];
  scalar_t coef[4];
  for (int k = 0; k < 4; ++k) {
    const bool inside = c.pixel[k] >= 0;
    v[k] = inside ? src.rows + c.pixel[k] * src.stride : zeros;
    gv[k] = inside ? dst.rows + c.pixel[k] * dst.stride : sink;
    coef[k] = attn * c.weight[k];
  }
  // corner value . grad_output; vectorised across channels thanks to -fassociative-math (setup.py)
  scalar_t dot0 = 0, dot1 = 0, dot2 = 0, dot3 = 0;
  for (int64_t d = 0; d < D; ++d) {
    const scalar_t gd = go[d];
    dot0 += v[0][d] * gd;
    dot1 += v[1][d] * gd;
    dot2 += v[2][d] * gd;
    dot3 += v[3][d] * gd;
  }
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) {
    const scalar_t gd = go[d];
    gv[0][d] += coef[0] * gd;
    gv[1][d] += coef[1] * gd;
    gv[2][d] += coef[2] * gd;
    gv[3][d] += coef[3] * gd;
  }
  g.attn[s] = c.weight[0] * dot0 + c.weight[1] * dot1 + c.weight[2] * dot2 + c.weight[3] * dot3;
  // d sample / d w and d sample / d h in pixels, then chain rule through pixel = loc * size - 0.5
  const scalar_t grad_w = (1 - c.lh) * (dot1 - dot0) + c.lh * (dot3 - dot2);
  const scalar_t grad_h = (1 - c.lw) * (dot2 - dot0) + c.lw * (dot3 - dot1);
  g.loc[2 * s] = attn * grad_w * static_cast<scalar_t>(W);
  g.loc[2 * s + 1] = attn * grad_h * static_cast<scalar_t>(H);
}

// Scratch and stand-in rows of one thread's backward range.
template <typename scalar_t>
struct BackwardBuffers {
  std::unique_ptr<scalar_t[]> value, grad;  // max_level_pixels * D each
  std::vector<scalar_t> zeros, sink;        // D each: read / written by corners outside the level
};

// Backward of batch b, head m, level l: writes grad_value[b, level l, m, :] whole and the
// location / weight gradients of the unit's samples.
template <typename scalar_t>
void backward_unit(const MsdaInputs<scalar_t>& in, const scalar_t* grad_out, const MsdaGrads<scalar_t>& g,
                   int64_t b, int64_t m, int64_t l, BackwardBuffers<scalar_t>& buf) {
  const int64_t M = in.M, D = in.D, L = in.L, P = in.P, H = in.shapes[2 * l], W = in.shapes[2 * l + 1];
  int64_t Hv, Wv;
  valid_extent(in, b, l, H, W, Hv, Wv);
  const int64_t offset = ((b * in.S + in.start[l]) * M + m) * D;  // (b, start_l, m, 0) in (B, S, M, D)
  Rows<const scalar_t> src{in.value + offset, M * D};
  Rows<scalar_t> dst{g.value + offset, M * D};
  const bool scratch = use_scratch(H * W, in.Q * P, M * D, D);
  if (scratch) {
    copy_rows(src.rows, src.stride, buf.value.get(), D, H * W, D);
    src = {buf.value.get(), D};
    dst = {buf.grad.get(), D};
  }
  for (int64_t i = 0; i < H * W; ++i) {
    std::fill_n(dst.rows + i * dst.stride, D, static_cast<scalar_t>(0));
  }
  for (int64_t q = 0; q < in.Q; ++q) {
    const scalar_t* go = grad_out + ((b * in.Q + q) * M + m) * D;  // grad_output (B, Q, M * D)
    const int64_t first = (((b * in.Q + q) * M + m) * L + l) * P;  // sample (b, q, m, l, 0)
    if (q + kQueriesAhead < in.Q) {
      const int64_t ahead = first + kQueriesAhead * M * L * P;
      prefetch<0>(in.loc + 2 * ahead, 2 * P);
      prefetch<0>(in.attn + ahead, P);
      prefetch<0>(go + kQueriesAhead * M * D, D);
      prefetch<1>(g.loc + 2 * ahead, 2 * P);
      prefetch<1>(g.attn + ahead, P);
    }
    for (int64_t s = first; s < first + P; ++s) {
      Corners<scalar_t> c;
      if (bilinear_corners(in.loc[2 * s], in.loc[2 * s + 1], H, W, Hv, Wv, c)) {
        backward_sample(in, g, c, s, H, W, src, dst, go, buf.zeros.data(), buf.sink.data());
      } else {  // no corner on the level: no gradient
        g.loc[2 * s] = g.loc[2 * s + 1] = g.attn[s] = 0;
      }
    }
  }
  if (scratch) {
    copy_rows<scalar_t>(buf.grad.get(), D, g.value + offset, M * D, H * W, D);
  }
}

// Backward units [begin, end) of the flattened (B * M * L) axis of (batch, head, level).
template <typename scalar_t>
void backward_range_impl(const MsdaInputs<scalar_t>& in, const scalar_t* grad_out, const MsdaGrads<scalar_t>& g,
                         int64_t begin, int64_t end) {
  const int64_t n = in.max_level_pixels * in.D;
  BackwardBuffers<scalar_t> buf{std::unique_ptr<scalar_t[]>(new scalar_t[n]),
                                std::unique_ptr<scalar_t[]>(new scalar_t[n]), std::vector<scalar_t>(in.D, 0),
                                std::vector<scalar_t>(in.D, 0)};
  for (int64_t u = begin; u < end; ++u) {
    backward_unit(in, grad_out, g, u / (in.L * in.M), (u / in.L) % in.M, u % in.L, buf);
  }
}

// The entry points of the parallel loops, one copy per ISA level where supported (MSDA_ISA_CLONES).
MSDA_ISA_CLONES void forward_range(const MsdaInputs<float>& in, float* out, int64_t chunks, int64_t begin,
                                   int64_t end) {
  forward_range_impl(in, out, chunks, begin, end);
}

MSDA_ISA_CLONES void forward_range(const MsdaInputs<double>& in, double* out, int64_t chunks, int64_t begin,
                                   int64_t end) {
  forward_range_impl(in, out, chunks, begin, end);
}

MSDA_ISA_CLONES void backward_range(const MsdaInputs<float>& in, const float* grad_out, const MsdaGrads<float>& g,
                                    int64_t begin, int64_t end) {
  backward_range_impl(in, grad_out, g, begin, end);
}

MSDA_ISA_CLONES void backward_range(const MsdaInputs<double>& in, const double* grad_out,
                                    const MsdaGrads<double>& g, int64_t begin, int64_t end) {
  backward_range_impl(in, grad_out, g, begin, end);
}

// Asks Linux to back a freshly allocated tensor with transparent huge pages (honoured where THP is
// in "madvise" or "always" mode): the first write then faults once per 2 MiB instead of once per
// 4 KiB, which for grad_value (as large as value) saves most of the time spent in the kernel.
// Purely advisory, limited to the 2 MiB-aligned part of this tensor's own memory.
void advise_huge_pages(const at::Tensor& fresh) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t first = reinterpret_cast<uintptr_t>(fresh.data_ptr());
  const uintptr_t begin = (first + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (first + fresh.nbytes()) & ~(kHuge - 1);
  if (end > begin) {
    madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advice only: a refusal is harmless
  }
#endif
}

// Memory-safety checks (bev_deform.ops.checks gives the user-facing errors before this).
void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                  const at::Tensor& loc, const at::Tensor& attn, const c10::optional<at::Tensor>& valid) {
  for (const at::Tensor* t : {&value, &spatial_shapes, &level_start_index, &loc, &attn}) {
    TORCH_CHECK(t->device().is_cpu(), "msda_cpu: all tensors must be on the CPU");
    TORCH_CHECK(t->is_contiguous(), "msda_cpu: all tensors must be contiguous");
  }
  TORCH_CHECK(value.dim() == 4 && loc.dim() == 6 && attn.dim() == 5 && spatial_shapes.dim() == 2,
              "msda_cpu: bad ranks");
  TORCH_CHECK(loc.scalar_type() == value.scalar_type() && attn.scalar_type() == value.scalar_type(),
              "msda_cpu: value, sampling_locations and attention_weights must share one dtype");
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "msda_cpu: spatial_shapes and level_start_index must be int64");
  const int64_t B = value.size(0), S = value.size(1), M = value.size(2), L = spatial_shapes.size(0);
  const int64_t Q = loc.size(1), P = loc.size(4);
  TORCH_CHECK(loc.sizes() == at::IntArrayRef({B, Q, M, L, P, 2}), "msda_cpu: bad sampling_locations shape");
  TORCH_CHECK(attn.sizes() == at::IntArrayRef({B, Q, M, L, P}), "msda_cpu: bad attention_weights shape");
  TORCH_CHECK(spatial_shapes.size(1) == 2 && level_start_index.numel() == L,
              "msda_cpu: bad spatial_shapes / level_start_index shape");
  const int64_t* shapes = spatial_shapes.data_ptr<int64_t>();
  const int64_t* start = level_start_index.data_ptr<int64_t>();
  int64_t rows = 0;
  for (int64_t l = 0; l < L; ++l) {  // the levels tile value's S rows exactly
    TORCH_CHECK(shapes[2 * l] > 0 && shapes[2 * l + 1] > 0 && start[l] == rows,
                "msda_cpu: level_start_index must be the running sum of the positive H * W of spatial_shapes");
    rows += shapes[2 * l] * shapes[2 * l + 1];
  }
  TORCH_CHECK(rows == S, "msda_cpu: spatial_shapes sum to ", rows, " rows but value has S = ", S);
  if (valid) {
    TORCH_CHECK(valid->device().is_cpu() && valid->is_contiguous() && valid->scalar_type() == at::kLong &&
                    valid->sizes() == at::IntArrayRef({B, L, 2}),
                "msda_cpu: valid_shapes must be a contiguous int64 (B, L, 2) CPU tensor");
    const int64_t* v = valid->data_ptr<int64_t>();
    for (int64_t i = 0; i < B * L; ++i) {  // a real extent inside its level
      const int64_t l = i % L;
      TORCH_CHECK(v[2 * i] >= 0 && v[2 * i] <= shapes[2 * l] && v[2 * i + 1] >= 0 && v[2 * i + 1] <= shapes[2 * l + 1],
                  "msda_cpu: valid_shapes must lie in [0, H_l] x [0, W_l]");
    }
  }
}

template <typename scalar_t>
MsdaInputs<scalar_t> make_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index, const at::Tensor& loc,
                                 const at::Tensor& attn, const c10::optional<at::Tensor>& valid) {
  const int64_t max_level_pixels = (spatial_shapes.select(1, 0) * spatial_shapes.select(1, 1)).max().item<int64_t>();
  return {value.data_ptr<scalar_t>(),
          loc.data_ptr<scalar_t>(),
          attn.data_ptr<scalar_t>(),
          spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(),
          valid ? valid->data_ptr<int64_t>() : nullptr,
          value.size(0),
          value.size(1),
          value.size(2),
          value.size(3),
          loc.size(1),
          loc.size(3),
          loc.size(4),
          max_level_pixels};
}

}  // namespace

at::Tensor msda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                        const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
                        const c10::optional<at::Tensor>& valid_shapes) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, valid_shapes);
  const int64_t B = value.size(0), M = value.size(2), D = value.size(3), Q = sampling_locations.size(1);
  at::Tensor out = at::zeros({B, Q, M * D}, value.options());
  if (out.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "msda_forward_cpu", [&] {
    const auto in = make_inputs<scalar_t>(value, spatial_shapes, level_start_index, sampling_locations,
                                          attention_weights, valid_shapes);
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    // units (b, m, query chunk) own disjoint output rows; chunk Q only when B * M is too few units
    const int64_t chunks = std::min(Q, (4 * at::get_num_threads() + B * M - 1) / (B * M));
    at::parallel_for(0, B * M * chunks, 1,
                     [&](int64_t begin, int64_t end) { forward_range(in, out_ptr, chunks, begin, end); });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> msda_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                             const at::Tensor& level_start_index,
                                                             const at::Tensor& sampling_locations,
                                                             const at::Tensor& attention_weights,
                                                             const at::Tensor& grad_output,
                                                             const c10::optional<at::Tensor>& valid_shapes) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, valid_shapes);
  const int64_t B = value.size(0), M = value.size(2), D = value.size(3), Q = sampling_locations.size(1);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.sizes() == at::IntArrayRef({B, Q, M * D}),
              "msda_cpu: grad_output must be a contiguous (B, Q, M * D) tensor of value's dtype");
  at::Tensor grad_value = at::empty_like(value);  // every element written by its (b, m, l) unit
  advise_huge_pages(grad_value);
  // every sample (b, q, m, l, p) belongs to exactly one (b, m, l) unit, which writes its gradients
  at::Tensor grad_loc = at::empty_like(sampling_locations);
  at::Tensor grad_attn = at::empty_like(attention_weights);
  if (grad_value.numel() == 0) {
    return {grad_value, grad_loc.zero_(), grad_attn.zero_()};
  }
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "msda_backward_cpu", [&] {
    const auto in = make_inputs<scalar_t>(value, spatial_shapes, level_start_index, sampling_locations,
                                          attention_weights, valid_shapes);
    const MsdaGrads<scalar_t> g{grad_value.data_ptr<scalar_t>(), grad_loc.data_ptr<scalar_t>(),
                                grad_attn.data_ptr<scalar_t>()};
    const scalar_t* go = grad_output.data_ptr<scalar_t>();
    at::parallel_for(0, B * M * in.L, 1,
                     [&](int64_t begin, int64_t end) { backward_range(in, go, g, begin, end); });
  });
  return {grad_value, grad_loc, grad_attn};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Multi-scale deformable attention, CPU forward and backward (bev_deform.ops)";
  m.def("forward", &msda_forward, "MSDA forward: (B, S, M, D) value -> (B, Q, M * D) output", py::arg("value"),
        py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"), py::arg("valid_shapes") = py::none());
  m.def("backward", &msda_backward, "MSDA backward: -> (grad_value, grad_sampling_locations, grad_attention_weights)",
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"), py::arg("grad_output"), py::arg("valid_shapes") = py::none());
  m.def("num_threads", &at::get_num_threads, "threads that at::parallel_for uses in this extension");
  m.def(
      "openmp",
      [] {
#ifdef _OPENMP
        return true;
#else
        return false;
#endif
      },
      "whether the extension was compiled with OpenMP (otherwise at::parallel_for runs serially)");
}
