// Weight-only int8 matrix products for XLA:CPU, called through JAX's FFI.
//
// Why a kernel of our own: XLA's CPU dot does not read int8, so it widens an int8 kernel to
// float32 first and a decode step reads (or writes) float32 after all; neither XLA's
// XNNPACK/YNNPACK nor its oneDNN paths take int8 weights with float32 activations, and no
// library JAX can call inside a compiled loop does. Here each int8 weight is widened in
// registers as it streams past, so a decode step reads a quarter of the float32 bytes.
//
//   gptjax_int8_columns: y (M, N) = (x (M, K) @ q (K, N)) * scale (N)   (an nnx.Linear kernel)
//   gptjax_int8_rows:    y (M, N) = (x (M, K) @ q (N, K)^T) * scale (N) (a tied embedding's head)
//
// M is small when decoding (a few rows), so the loops keep one weight row hot in cache while
// every input row uses it. Built at first use with the machine's own instruction set
// (gptjax/model/int8_matmul.py); the plain loops below are vectorised by the compiler.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kRowsAtOnce = 4;          // weight rows accumulated per pass over an output row
constexpr int64_t kColumnsAtOnce = 256;     // columns widened at a time for several input rows
constexpr int64_t kSplitFrom = int64_t{1} << 18;  // weights from which a product is shared out

// How many parts to share a product of `weights` int8 weights into: one below kSplitFrom (the
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

// out[m, :] += sum over k in [k0, k1) of x[m, k] q[k, :]: weight rows four at a time, read
// front to back (one stream through memory, which the prefetchers follow). With several input
// rows, each block of weights is widened once into `wide` (in L1) and used by every row.
void AddRows(const float* __restrict xs, const int8_t* __restrict qs, float* __restrict out, int64_t M,
             int64_t K, int64_t N, int64_t k0, int64_t k1) {
  alignas(64) float wide[kRowsAtOnce][kColumnsAtOnce];
  int64_t k = k0;
  for (; k + kRowsAtOnce <= k1; k += kRowsAtOnce) {
    const int8_t* __restrict q0 = qs + k * N;
    const int8_t* __restrict q1 = q0 + N;
    const int8_t* __restrict q2 = q1 + N;
    const int8_t* __restrict q3 = q2 + N;
    if (M == 1) {
      const float a0 = xs[k], a1 = xs[k + 1], a2 = xs[k + 2], a3 = xs[k + 3];
      for (int64_t n = 0; n < N; ++n) {
        out[n] += a0 * static_cast<float>(q0[n]) + a1 * static_cast<float>(q1[n]) +
                  a2 * static_cast<float>(q2[n]) + a3 * static_cast<float>(q3[n]);
      }
      continue;
    }
    for (int64_t n0 = 0; n0 < N; n0 += kColumnsAtOnce) {
      const int64_t width = std::min(kColumnsAtOnce, N - n0);
      for (int64_t j = 0; j < width; ++j) {
        wide[0][j] = q0[n0 + j];
        wide[1][j] = q1[n0 + j];
        wide[2][j] = q2[n0 + j];
        wide[3][j] = q3[n0 + j];
      }
      for (int64_t m = 0; m < M; ++m) {
        const float* a = xs + m * K + k;
        const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
        float* __restrict o = out + m * N + n0;
        for (int64_t j = 0; j < width; ++j) {
          o[j] += a0 * wide[0][j] + a1 * wide[1][j] + a2 * wide[2][j] + a3 * wide[3][j];
        }
      }
    }
  }
  for (; k < k1; ++k) {
    const int8_t* __restrict qk = qs + k * N;
    for (int64_t m = 0; m < M; ++m) {
      const float a = xs[m * K + k];
      float* __restrict o = out + m * N;
      for (int64_t n = 0; n < N; ++n) o[n] += a * static_cast<float>(qk[n]);
    }
  }
}

// Each part takes a contiguous share of q's rows into its own partial sums, added at the end.
ffi::Error Columns(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> q,
                   ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> y) {
  const int64_t M = x.dimensions()[0], K = x.dimensions()[1], N = q.dimensions()[1];
  if (q.dimensions()[0] != K || scale.dimensions()[0] != N) {
    return ffi::Error::InvalidArgument("int8 columns: shapes do not match");
  }
  float* out = y->typed_data();
  const int64_t parts = Parts(pool, K * N, K / kRowsAtOnce);
  const int64_t share = (K / parts) / kRowsAtOnce * kRowsAtOnce;
  std::vector<float> partial((parts - 1) * M * N, 0.0f);
  std::fill(out, out + M * N, 0.0f);
  Share(pool, parts, [&](int64_t t) {
    const int64_t k0 = t * share, k1 = t == parts - 1 ? K : k0 + share;
    AddRows(x.typed_data(), q.typed_data(), t == 0 ? out : partial.data() + (t - 1) * M * N, M, K, N, k0, k1);
  });
  const float* s = scale.typed_data();
  for (int64_t m = 0; m < M; ++m) {
    float* __restrict o = out + m * N;
    for (int64_t t = 1; t < parts; ++t) {
      const float* __restrict p = partial.data() + ((t - 1) * M + m) * N;
      for (int64_t n = 0; n < N; ++n) o[n] += p[n];
    }
    for (int64_t n = 0; n < N; ++n) o[n] *= s[n];
  }
  return ffi::Error::Success();
}

// out[:, n0:n1]: each row of q in turn, widened once into `wide` when several input rows use it.
void DotRows(const float* __restrict xs, const int8_t* __restrict qs, const float* __restrict s,
             float* __restrict out, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  std::vector<float> wide(M > 1 ? K : 0);
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* __restrict qn = qs + n * K;
    if (M == 1) {
      float total = 0.0f;
#pragma omp simd reduction(+ : total)
      for (int64_t k = 0; k < K; ++k) total += xs[k] * static_cast<float>(qn[k]);
      out[n] = total * s[n];
      continue;
    }
    for (int64_t k = 0; k < K; ++k) wide[k] = qn[k];
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

// Both products: (x, q, scale) -> y, with XLA's intra-op thread pool to share the work.
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
