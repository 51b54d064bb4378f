// Matrix products of a decode step (a few input rows) for XLA:CPU, called through JAX's FFI.
//
// float32: a decode step streams every weight matrix from memory once, and XLA's CPU dot of a
// few rows by a large matrix reads it below the memory's speed (GPT-2's 768 x 3,072 from
// memory on a 2-core machine: 22-24 GB/s against 27 here at one row, 12 against 18 at eight);
// here the matrix's rows are streamed front to back and shared among XLA's intra-op threads.
//
//   gptjax_f32_columns:  y (M, N) = x (M, K) @ w (K, N)
//
// int8: XLA's CPU dot does not read int8, so it widens an int8 kernel to
// float32 first and a decode step reads (or writes) float32 after all; neither XLA's
// XNNPACK/YNNPACK nor its oneDNN paths take int8 weights with float32 activations, and no
// library JAX can call inside a compiled loop does. Here each int8 weight is widened in
// registers as it streams past, so a decode step reads a quarter of the float32 bytes.
//
//   gptjax_int8_columns: y (M, N) = (x (M, K) @ q (K, N)) * scale (N)   (an nnx.Linear kernel)
//   gptjax_int8_rows:    y (M, N) = (x (M, K) @ q (N, K)^T) * scale (N) (a tied embedding's head)
//
// M is small when decoding (a few rows), so the loops keep a block of weights hot in cache
// while every input row uses it. Built at first use with the machine's own instruction set
// (gptjax/model/cpu_matmul.py); the plain loops below are vectorised by the compiler, and on
// AVX-512 the int8 widening is written out (see Widen16).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kRowsAtOnce = 8;              // weight rows accumulated per pass over an output row
constexpr int64_t kColumnsAtOnce = 256;     // columns widened at a time for several input rows
constexpr int64_t kSplitFrom = int64_t{1} << 18;  // weights from which a product is shared out

// How many parts to share a product of `weights` weights into: one below kSplitFrom (the
// hand-over would cost more than it saves), else one per thread of XLA's intra-op pool.
int64_t Parts(ffi::ThreadPool& pool, int64_t weights, int64_t most) {
  if (weights < kSplitFrom) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), most));
}

// work(0), ..., work(parts - 1), shared between this thread and XLA's intra-op pool (whose
// threads are awake while a program runs: no second pool of threads beside them). Parts are
// claimed from a counter by whichever thread comes first, this one included, so a pool that is
// busy elsewhere only means this thread does more parts itself: it never waits on a task that
// has not started. A task that starts after every part is claimed finds none and returns.
struct Claims {
  std::atomic<int64_t> next{0}, done{0};
};

template <typename F>
void RunClaimed(Claims& claims, int64_t parts, const F& work) {
  for (int64_t t; (t = claims.next.fetch_add(1, std::memory_order_relaxed)) < parts;) {
    work(t);
    claims.done.fetch_add(1, std::memory_order_release);
  }
}

template <typename F>
void Share(ffi::ThreadPool& pool, int64_t parts, const F& work) {
  auto claims = std::make_shared<Claims>();
  for (int64_t t = 1; t < parts; ++t) {
    pool.Schedule([claims, parts, &work] { RunClaimed(*claims, parts, work); });
  }
  RunClaimed(*claims, parts, work);
  while (claims->done.load(std::memory_order_acquire) < parts) std::this_thread::yield();
}

// Why intrinsics here: GCC vectorises an int8 -> float32 conversion through 16-bit
// intermediates (64 weights at a time, two sign extensions each), which left the int8 products
// compute-bound well below the memory's speed (GPT-2's 768 x 3,072 at 10.6 against 15 GB/s on
// one core); loading 16 weights straight into 32-bit lanes does not. Other CPUs take the plain
// loops, which the compiler vectorises as it can.
#if defined(__AVX512F__)
inline __m512 Widen16(const int8_t* q) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))));
}
#endif

// out[0:n] = q[0:n] as float32.
inline void Widen(const int8_t* __restrict q, float* __restrict out, int64_t n) {
  int64_t j = 0;
#if defined(__AVX512F__)
  for (; j + 16 <= n; j += 16) _mm512_storeu_ps(out + j, Widen16(q + j));
#endif
  for (; j < n; ++j) out[j] = q[j];
}

// out[0:n] += a[0] q[0][0:n] + ... + a[R-1] q[R-1][0:n] (R = kRowsAtOnce), the weights widened
// as they are read.
template <typename W>
void AddSeveral(float* __restrict out, const W* const* q, const float* a, int64_t n) {
  int64_t j = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<W, int8_t>) {
    __m512 scale[kRowsAtOnce];
    for (int r = 0; r < kRowsAtOnce; ++r) scale[r] = _mm512_set1_ps(a[r]);
    for (; j + 16 <= n; j += 16) {
      __m512 acc = _mm512_loadu_ps(out + j);
      for (int r = 0; r < kRowsAtOnce; ++r) acc = _mm512_fmadd_ps(scale[r], Widen16(q[r] + j), acc);
      _mm512_storeu_ps(out + j, acc);
    }
  }
#endif
  for (; j < n; ++j) {
    float total = out[j];
    for (int r = 0; r < kRowsAtOnce; ++r) total += a[r] * static_cast<float>(q[r][j]);
    out[j] = total;
  }
}

// out[m, :] += sum over k in [k0, k1) of x[m, k] q[k, :]: weight rows eight at a time, read
// front to back (one stream through memory, which the prefetchers follow). With several input
// rows, the columns go in blocks that stay in L1 while every row uses them: an int8 block is
// widened once into `wide` first, a float32 block is used where it is.
template <typename W>
void AddRows(const float* __restrict xs, const W* __restrict qs, float* __restrict out, int64_t M,
             int64_t K, int64_t N, int64_t k0, int64_t k1) {
  alignas(64) float wide[kRowsAtOnce][kColumnsAtOnce];
  int64_t k = k0;
  for (; k + kRowsAtOnce <= k1; k += kRowsAtOnce) {
    const W* q[kRowsAtOnce];
    for (int r = 0; r < kRowsAtOnce; ++r) q[r] = qs + (k + r) * N;
    if (M == 1) {
      AddSeveral(out, q, xs + k, N);
      continue;
    }
    for (int64_t n0 = 0; n0 < N; n0 += kColumnsAtOnce) {
      const int64_t width = std::min(kColumnsAtOnce, N - n0);
      const float* block[kRowsAtOnce];
      for (int r = 0; r < kRowsAtOnce; ++r) {
        if constexpr (std::is_same_v<W, float>) {
          block[r] = q[r] + n0;
        } else {
          Widen(q[r] + n0, wide[r], width);
          block[r] = wide[r];
        }
      }
      for (int64_t m = 0; m < M; ++m) AddSeveral(out + m * N + n0, block, xs + m * K + k, width);
    }
  }
  for (; k < k1; ++k) {
    const W* __restrict qk = qs + k * N;
    for (int64_t m = 0; m < M; ++m) {
      const float a = xs[m * K + k];
      float* __restrict o = out + m * N;
      for (int64_t n = 0; n < N; ++n) o[n] += a * static_cast<float>(qk[n]);
    }
  }
}

// y = x @ q, times scale when there is one: each part takes a contiguous share of q's rows into
// its own partial sums, added at the end.
template <typename W>
void ColumnsProduct(ffi::ThreadPool& pool, const float* x, const W* q, const float* scale, float* out, int64_t M,
                    int64_t K, int64_t N) {
  const int64_t parts = Parts(pool, K * N, K / kRowsAtOnce);
  const int64_t share = (K / parts) / kRowsAtOnce * kRowsAtOnce;
  std::vector<float> partial((parts - 1) * M * N, 0.0f);
  std::fill(out, out + M * N, 0.0f);
  Share(pool, parts, [&](int64_t t) {
    const int64_t k0 = t * share, k1 = t == parts - 1 ? K : k0 + share;
    AddRows(x, q, t == 0 ? out : partial.data() + (t - 1) * M * N, M, K, N, k0, k1);
  });
  for (int64_t m = 0; m < M; ++m) {
    float* __restrict o = out + m * N;
    for (int64_t t = 1; t < parts; ++t) {
      const float* __restrict p = partial.data() + ((t - 1) * M + m) * N;
      for (int64_t n = 0; n < N; ++n) o[n] += p[n];
    }
    if (scale != nullptr) {
      for (int64_t n = 0; n < N; ++n) o[n] *= scale[n];
    }
  }
}

ffi::Error Columns(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> q,
                   ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> y) {
  const int64_t M = x.dimensions()[0], K = x.dimensions()[1], N = q.dimensions()[1];
  if (q.dimensions()[0] != K || scale.dimensions()[0] != N) {
    return ffi::Error::InvalidArgument("int8 columns: shapes do not match");
  }
  ColumnsProduct(pool, x.typed_data(), q.typed_data(), scale.typed_data(), y->typed_data(), M, K, N);
  return ffi::Error::Success();
}

ffi::Error F32Columns(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                      ffi::ResultBuffer<ffi::F32> y) {
  const int64_t M = x.dimensions()[0], K = x.dimensions()[1], N = w.dimensions()[1];
  if (w.dimensions()[0] != K) return ffi::Error::InvalidArgument("float32 columns: shapes do not match");
  ColumnsProduct<float>(pool, x.typed_data(), w.typed_data(), nullptr, y->typed_data(), M, K, N);
  return ffi::Error::Success();
}

// sum over k of x[k] q[k], q widened as it is read.
inline float Dot(const float* __restrict x, const int8_t* __restrict q, int64_t K) {
  int64_t k = 0;
  float total = 0.0f;
#if defined(__AVX512F__)
  __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
  for (; k + 32 <= K; k += 32) {
    even = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), Widen16(q + k), even);
    odd = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), Widen16(q + k + 16), odd);
  }
  total = _mm512_reduce_add_ps(_mm512_add_ps(even, odd));
#endif
  for (; k < K; ++k) total += x[k] * static_cast<float>(q[k]);
  return total;
}

// out[:, n0:n1]: each row of q in turn, widened once into `wide` when several input rows use it.
void DotRows(const float* __restrict xs, const int8_t* __restrict qs, const float* __restrict s,
             float* __restrict out, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  std::vector<float> wide(M > 1 ? K : 0);
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* __restrict qn = qs + n * K;
    if (M == 1) {
      out[n] = Dot(xs, qn, K) * s[n];
      continue;
    }
    Widen(qn, wide.data(), K);
    for (int64_t m = 0; m < M; ++m) {
      const float* __restrict a = xs + m * K;
      float total = 0.0f;
#pragma omp simd reduction(+ : total)
      for (int64_t k = 0; k < K; ++k) total += a[k] * wide[k];
      out[m * N + n] = total * s[n];
    }
  }
}

// The rows of q (output columns) are shared out in contiguous blocks.
ffi::Error Rows(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> q,
                ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> y) {
  const int64_t M = x.dimensions()[0], K = x.dimensions()[1], N = q.dimensions()[0];
  if (q.dimensions()[1] != K || scale.dimensions()[0] != N) {
    return ffi::Error::InvalidArgument("int8 rows: shapes do not match");
  }
  const int64_t parts = Parts(pool, K * N, N);
  const int64_t share = (N + parts - 1) / parts;
  Share(pool, parts, [&](int64_t t) {
    DotRows(x.typed_data(), q.typed_data(), scale.typed_data(), y->typed_data(), M, K, N, t * share,
            std::min(N, (t + 1) * share));
  });
  return ffi::Error::Success();
}

// Both int8 products: (x, q, scale) -> y, with XLA's intra-op thread pool to share the work.
auto Binding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::S8>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GptjaxInt8Columns, Columns, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(GptjaxInt8Rows, Rows, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(GptjaxF32Columns, F32Columns,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
