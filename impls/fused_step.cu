// Fused fp32 SGD steps and epochs of d2l ch. 3 on one CUDA stream, for the `cuda`, `cuda_graph`, `cuda_epoch`
// and `cuda_cluster` forms (impls/cuda.py, impls/cuda_graph.py, impls/cuda_epoch.py, impls/cuda_cluster.py).
//
// A batch is rows idx[0..n) of X (N, d), gathered inside the kernels, each value divided by `divisor`
// (uint8 pixels / 255, as ToTensor scales them, read from a table of the 256 quotients: exact and one shared
// load; float rows / 1), or rows 0..n of X when there is no idx.
//
// linreg: 1 launch a step, one block: residuals, loss, gradient and the update of w and b.
// softmax: 2 launches a step. softmax_grad: one warp per row (W staged in shared memory with 16-byte loads):
// logits X@W+b, stable softmax, the row's cross-entropy and dO = (softmax - onehot) / n. softmax_update: one
// block per tile of FEATS features, its threads over the rows (FEATS x LANES), the batch's indices and dO
// staged in shared memory 256 rows at a time, reduces X^T dO and updates W; one more block updates b and
// writes the batch-mean loss.
// Epochs: linreg_epoch is one block looping over the steps; softmax_epoch is one persistent cooperative
// kernel: per step the grad phase, a grid-wide barrier, the update phase, a barrier. softmax_cluster_epoch
// (sm_90 and up) is one thread-block cluster persistent for the epoch: each CTA keeps a slice of W's features
// in shared memory, the partial logits are reduced through distributed shared memory, two cluster barriers a
// step, no global memory but the rows, labels and indices read and the losses written.
//
// Every sum runs in one fixed order, the same in every kernel, so the forms give the same bits. A row's logit
// j is 32 partial sums, partial l over the features of chunk l ([l * C, (l + 1) * C) with C = chunk(d)) in
// ascending order, added by warp_all_sum's butterfly, then b[j]. W[i, j]'s gradient is 32 partial sums,
// partial l over the rows l, l + 32, ... in order, added in order l = 0..31; b's is block_sum's tree over the
// rows t, t + 256, ... of 256 threads. lr is read on the device. A row whose label is outside 0..k-1 (or whose
// index is outside 0..N-1) gets a NaN loss and a NaN gradient, so the loss and the parameters show it (a host
// check would sync every step). The host checks the arguments as impls/common.py does (one-line ValueErrors);
// Python checks them first.
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cooperative_groups.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <utility>

namespace cg = cooperative_groups;

namespace {

constexpr int MAX_OUT = 16;  // most softmax classes / linreg features a thread keeps in registers
constexpr int THREADS = 256;
constexpr int ROW_WARPS = THREADS / 32;  // rows a block of softmax_grad takes at once
constexpr int FEATS = 8;                 // features per block of softmax_update
constexpr int LANES = THREADS / FEATS;   // its threads per feature, over the rows
constexpr int SMEM_RESERVED = 40 * 1024;  // static shared memory of the softmax kernels, beside W (impls/cuda.py)

// The features of a logit's partial sum: ceil(d / 32) rounded up to 16 (16-byte loads of pixels, 64 of floats).
__host__ __device__ inline int chunk_of(int d) { return ((d + 31) / 32 + 15) / 16 * 16; }

// 16 bytes of a row: 16 pixels or 4 floats, read in one load.
template <typename T>
union Pack {
  static constexpr int size = 16 / sizeof(T);
  uint4 raw;
  T v[16 / sizeof(T)];
};

template <typename T>
struct Batch {
  const T* X;
  const int64_t* idx;  // null: rows 0..n
  int64_t N;
  int n, d;
  float divisor;
  bool packed;  // every row starts 16-byte aligned (d * sizeof(T) % 16 == 0, X aligned): chunks read 16 bytes a load

  __device__ int64_t src(int r) const { return idx ? idx[r] : r; }
  __device__ bool ok(int64_t s) const { return s >= 0 && s < N; }
  __device__ float x(int64_t s, int i) const { return static_cast<float>(X[s * d + i]) / divisor; }
};

// A value as the step reads it: a pixel from the table of v / divisor (the same bits as the division), a float
// divided.
__device__ inline float scale(uint8_t v, const float* table, float) { return table[v]; }
__device__ inline float scale(float v, const float*, float divisor) { return v / divisor; }

// The table of v / divisor for v = 0..255, in shared memory (blockDim.x >= 256), and a barrier.
__device__ void fill_table(float* table, float divisor) {
  if (threadIdx.x < 256) table[threadIdx.x] = static_cast<float>(threadIdx.x) / divisor;
  __syncthreads();
}

__device__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffff, v, offset);
  return v;
}

// Every lane gets the same total (the butterfly pairs the same values in every lane, in the same order).
__device__ float warp_all_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffff, v, offset);
  return v;
}

// Sums each v[j] over the block (blockDim.x a multiple of 32); the totals land in thread 0's v.
template <int M>
__device__ void block_sum(float (&v)[M]) {
  __shared__ float part[32][M];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int j = 0; j < M; ++j) v[j] = warp_sum(v[j]);
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < M; ++j) part[warp][j] = v[j];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
#pragma unroll
    for (int j = 0; j < M; ++j) {
      float s = 0.f;
      for (int w = 0; w < blockDim.x / 32; ++w) s += part[w][j];
      v[j] = s;
    }
  }
  __syncthreads();
}

// One linreg step by one block. acc[0..d): sum of r*x, acc[MAX_OUT]: sum of r, acc[MAX_OUT+1]: sum of r^2/2.
template <typename T>
__device__ void linreg_batch(float* w, float* b, const Batch<T>& batch, const float* y, float rate, float* loss) {
  float acc[MAX_OUT + 2] = {};
  const float bias = b[0];
  for (int r = threadIdx.x; r < batch.n; r += blockDim.x) {
    const int64_t s = batch.src(r);
    if (!batch.ok(s)) {
#pragma unroll
      for (int i = 0; i < MAX_OUT + 2; ++i) acc[i] = NAN;
      continue;
    }
    float res = bias - y[s];
#pragma unroll
    for (int i = 0; i < MAX_OUT; ++i)
      if (i < batch.d) res += batch.x(s, i) * w[i];
#pragma unroll
    for (int i = 0; i < MAX_OUT; ++i)
      if (i < batch.d) acc[i] += res * batch.x(s, i);
    acc[MAX_OUT] += res;
    acc[MAX_OUT + 1] += res * res / 2;
  }
  block_sum(acc);  // every thread has read w and b before thread 0 writes them
  if (threadIdx.x == 0) {
    const float step = rate / batch.n;
#pragma unroll
    for (int i = 0; i < MAX_OUT; ++i)
      if (i < batch.d) w[i] -= step * acc[i];
    b[0] -= step * acc[MAX_OUT];
    *loss = acc[MAX_OUT + 1] / batch.n;
  }
  __syncthreads();  // the next step reads the new w and b
}

template <typename T>
__global__ void linreg_step_kernel(float* w, float* b, Batch<T> batch, const float* y, const float* lr,
                                   float* loss) {
  linreg_batch(w, b, batch, y, *lr, loss);
}

template <typename T>
__global__ void linreg_epoch_kernel(float* w, float* b, Batch<T> all, const float* y, const float* lr,
                                    float* losses, int64_t rows, int batch_size) {
  const float rate = *lr;
  for (int64_t r0 = 0, s = 0; r0 < rows; r0 += batch_size, ++s) {
    Batch<T> batch = all;
    batch.idx = all.idx + r0;
    batch.n = static_cast<int>(rows - r0 < batch_size ? rows - r0 : batch_size);
    linreg_batch(w, b, batch, y, rate, losses + s);
  }
}

// Asks L2 for `bytes` bytes from p, one 128-byte line per lane of the calling threads (`first`, `stride`): the
// next step's rows, while this step's update runs.
__device__ inline void prefetch(const void* p, size_t bytes, int first, int stride) {
  for (size_t at = static_cast<size_t>(first) * 128; at < bytes; at += static_cast<size_t>(stride) * 128)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(static_cast<const char*>(p) + at));
}

// W (d, k) into shared memory by the whole block, 16 bytes a load where W is aligned (read through L2: other
// blocks of an epoch wrote it).
__device__ void stage(float* Ws, const float* W, int size) {
  int start = 0;
  if ((reinterpret_cast<uintptr_t>(W) & 15) == 0) {
    const int quads = size / 4;
    for (int e = threadIdx.x; e < quads; e += blockDim.x)
      reinterpret_cast<float4*>(Ws)[e] = __ldcg(reinterpret_cast<const float4*>(W) + e);
    start = quads * 4;
  }
  for (int e = start + threadIdx.x; e < size; e += blockDim.x) Ws[e] = __ldcg(W + e);
  __syncthreads();
}

// A pack of values from `at`: one 16-byte load where `packed` and `count` fill it, else value by value (past
// `count`: 0).
template <typename T>
__device__ inline Pack<T> load_pack(const T* at, int count, bool packed) {
  Pack<T> p;
  if (packed && count >= Pack<T>::size) {
    p.raw = *reinterpret_cast<const uint4*>(at);
  } else {
#pragma unroll
    for (int u = 0; u < Pack<T>::size; ++u) p.v[u] = u < count ? at[u] : T(0);
  }
  return p;
}

// o[j] += the row's values [lo, hi) times W's rows (Ws[i * k + j]), in ascending order: 16 bytes a load where
// the rows allow it, the chunk's loads issued ahead of the products that need them.
template <typename T>
__device__ void chunk_sum(const T* row, int lo, int hi, bool packed, const float* Ws, const float* table,
                          float divisor, int k, float (&o)[MAX_OUT]) {
  constexpr int P = Pack<T>::size;
#pragma unroll 2
  for (int i = lo; i < hi; i += P) {
    const Pack<T> v = load_pack(row + i, hi - i, packed);
#pragma unroll
    for (int u = 0; u < P; ++u)
      if (i + u < hi) {
        const float xi = scale(v.v[u], table, divisor);
#pragma unroll
        for (int j = 0; j < MAX_OUT; ++j)
          if (j < k) o[j] += xi * Ws[(i + u) * k + j];
      }
  }
}

// A row's logits o (b added) to its loss (the same in every lane) and lane j's dO value (j < k; NaN elsewhere).
__device__ void softmax_tail(float (&o)[MAX_OUT], int64_t label, bool good, int n, int k, float& loss, float& grad) {
  const int lane = threadIdx.x % 32;
  float top = -INFINITY, picked = 0.f;
#pragma unroll
  for (int j = 0; j < MAX_OUT; ++j)
    if (j < k) {
      top = fmaxf(top, o[j]);
      if (j == label) picked = o[j];
    }
  float total = 0.f;
#pragma unroll
  for (int j = 0; j < MAX_OUT; ++j)
    if (j < k) total += (o[j] = expf(o[j] - top));
  loss = good ? top + logf(total) - picked : NAN;
  grad = NAN;
#pragma unroll
  for (int j = 0; j < MAX_OUT; ++j)
    if (j < k && j == lane) grad = good ? (o[j] / total - (j == label ? 1.f : 0.f)) / n : NAN;
}

// Row r of the batch by one warp: lane l's partial logits over chunk l, their butterfly sum, softmax, the
// row's loss and its row of dO.
template <typename T>
__device__ void softmax_row(const float* Ws, const float* b, const Batch<T>& batch, const float* table,
                            const int64_t* y, int r, float* dO, float* row_loss, int k) {
  const int lane = threadIdx.x % 32, chunk = chunk_of(batch.d);
  const int64_t s = batch.src(r);
  const bool found = batch.ok(s);
  float o[MAX_OUT] = {};
  if (found)
    chunk_sum(batch.X + s * batch.d, min(batch.d, lane * chunk), min(batch.d, (lane + 1) * chunk), batch.packed, Ws,
              table, batch.divisor, k, o);
#pragma unroll
  for (int j = 0; j < MAX_OUT; ++j)
    if (j < k) o[j] = warp_all_sum(o[j]) + __ldcg(b + j);
  const int64_t label = found ? y[s] : -1;
  float loss, grad;
  softmax_tail(o, label, found && label >= 0 && label < k, batch.n, k, loss, grad);
  if (lane == 0) row_loss[r] = loss;
  if (lane < k) dO[(size_t)r * k + lane] = grad;
}

// The rows this block's warps take: r = first + warp, first + warp + stride, ...
template <typename T>
__device__ void softmax_rows(float* Ws, const float* W, const float* b, const Batch<T>& batch, const float* table,
                             const int64_t* y, float* dO, float* row_loss, int k, int first, int stride) {
  if (first >= batch.n) return;  // the same for the whole block
  stage(Ws, W, batch.d * k);
  for (int r = first + threadIdx.x / 32; r < batch.n; r += stride)
    softmax_row(Ws, b, batch, table, y, r, dO, row_loss, k);
}

// W[tile*FEATS ... +FEATS, :] -= rate * X^T dO, by one block: thread (f, lane) sums over rows lane, lane+LANES...;
// the rows' indices and dO staged in shared memory THREADS rows at a time (LANES divides THREADS: each thread's
// rows and their order are those of one pass over the batch).
template <typename T>
__device__ void softmax_update_tile(int tile, const Batch<T>& batch, const float* table, const float* dO, float* W,
                                    float rate, int k) {
  __shared__ float part[LANES][FEATS][MAX_OUT];
  __shared__ float dOs[THREADS * MAX_OUT];
  __shared__ int64_t srcs[THREADS];
  const int f = threadIdx.x % FEATS, lane = threadIdx.x / FEATS, i = tile * FEATS + f;
  float g[MAX_OUT] = {};
  for (int r0 = 0; r0 < batch.n; r0 += THREADS) {
    const int m = min(THREADS, batch.n - r0);
    if (threadIdx.x < m) srcs[threadIdx.x] = batch.src(r0 + threadIdx.x);
    for (int e = threadIdx.x; e < m * k; e += THREADS) dOs[e] = __ldcg(dO + (size_t)r0 * k + e);
    __syncthreads();
    if (i < batch.d)
      for (int r = lane; r < m; r += LANES) {
        const int64_t s = srcs[r];
        const float xi = batch.ok(s) ? scale(batch.X[s * batch.d + i], table, batch.divisor) : 0.f;  // dO: NaN
#pragma unroll
        for (int j = 0; j < MAX_OUT; ++j)
          if (j < k) g[j] += xi * dOs[r * k + j];
      }
    __syncthreads();
  }
#pragma unroll
  for (int j = 0; j < MAX_OUT; ++j) part[lane][f][j] = g[j];
  __syncthreads();
  if (threadIdx.x < FEATS * k) {
    const int ff = threadIdx.x % FEATS, j = threadIdx.x / FEATS, ii = tile * FEATS + ff;
    float sum = 0.f;
    for (int l = 0; l < LANES; ++l) sum += part[l][ff][j];
    if (ii < batch.d) W[(size_t)ii * k + j] = __ldcg(W + (size_t)ii * k + j) - rate * sum;
  }
  __syncthreads();
}

// b -= rate * sum(dO) and the batch-mean loss, by one block.
__device__ void softmax_update_bias(const float* dO, const float* row_loss, float* b, float rate, float* loss, int n,
                                    int k) {
  float acc[MAX_OUT + 1] = {};
  for (int r = threadIdx.x; r < n; r += blockDim.x) {
#pragma unroll
    for (int j = 0; j < MAX_OUT; ++j)
      if (j < k) acc[j] += __ldcg(dO + (size_t)r * k + j);
    acc[MAX_OUT] += __ldcg(row_loss + r);
  }
  block_sum(acc);
  if (threadIdx.x == 0) {
    for (int j = 0; j < k; ++j) b[j] = __ldcg(b + j) - rate * acc[j];
    *loss = acc[MAX_OUT] / n;
  }
  __syncthreads();
}

template <typename T>
__global__ void softmax_grad_kernel(const float* W, const float* b, Batch<T> batch, const int64_t* y, float* dO,
                                    float* row_loss, int k) {
  extern __shared__ __align__(16) float Ws[];
  __shared__ float table[256];
  fill_table(table, batch.divisor);
  softmax_rows(Ws, W, b, batch, table, y, dO, row_loss, k, blockIdx.x * ROW_WARPS, gridDim.x * ROW_WARPS);
}

template <typename T>
__global__ void softmax_update_kernel(Batch<T> batch, const float* dO, const float* row_loss, float* W, float* b,
                                      const float* lr, float* loss, int k) {
  __shared__ float table[256];
  fill_table(table, batch.divisor);
  const int tiles = (batch.d + FEATS - 1) / FEATS;
  if (blockIdx.x < tiles)
    softmax_update_tile(blockIdx.x, batch, table, dO, W, *lr, k);
  else
    softmax_update_bias(dO, row_loss, b, *lr, loss, batch.n, k);
}

// One whole epoch: the steps of softmax_grad and softmax_update in one cooperative launch.
template <typename T>
__global__ void softmax_epoch_kernel(float* W, float* b, Batch<T> all, const int64_t* y, const float* lr,
                                     float* dO, float* row_loss, float* losses, int64_t rows, int batch_size, int k) {
  extern __shared__ __align__(16) float Ws[];
  __shared__ float table[256];
  fill_table(table, all.divisor);
  cg::grid_group grid = cg::this_grid();
  const float rate = *lr;
  const int tiles = (all.d + FEATS - 1) / FEATS;
  for (int64_t r0 = 0, s = 0; r0 < rows; r0 += batch_size, ++s) {
    Batch<T> batch = all;
    batch.idx = all.idx + r0;
    batch.n = static_cast<int>(rows - r0 < batch_size ? rows - r0 : batch_size);
    softmax_rows(Ws, W, b, batch, table, y, dO, row_loss, k, blockIdx.x * ROW_WARPS, gridDim.x * ROW_WARPS);
    grid.sync();  // dO and the row losses of every row are written
    // the rows this warp takes next step, asked of L2 while the update runs
    const int next = static_cast<int>(rows - r0 - batch_size < batch_size ? rows - r0 - batch_size : batch_size);
    for (int r = blockIdx.x * ROW_WARPS + threadIdx.x / 32; r < next; r += gridDim.x * ROW_WARPS) {
      const int64_t src = all.idx[r0 + batch_size + r];
      if (all.ok(src)) prefetch(all.X + src * all.d, all.d * sizeof(T), threadIdx.x % 32, 32);
    }
    for (int t = blockIdx.x; t <= tiles; t += gridDim.x) {
      if (t < tiles)
        softmax_update_tile(t, batch, table, dO, W, rate, k);
      else
        softmax_update_bias(dO, row_loss, b, rate, losses + s, batch.n, k);
    }
    grid.sync();  // W and b are updated before the next step reads them
  }
}

// Shared memory of softmax_cluster_kernel beside its static tables: the step's indices (n int64), then floats:
// W's slice (width x k), b (MAX_OUT), the partial logits (n x per x k), every row's dO (n x k) and loss (n), the
// warps' scratch (ROW_WARPS x 32 x MAX_OUT); then the slice of every row (n x width values of X's type).
__host__ __device__ inline size_t cluster_smem(int n, int per, int chunk, int k, size_t value_bytes) {
  const size_t width = static_cast<size_t>(per) * chunk;
  const size_t floats = width * k + MAX_OUT + static_cast<size_t>(n) * per * k + static_cast<size_t>(n) * k + n +
                        ROW_WARPS * 32 * MAX_OUT;
  return static_cast<size_t>(n) * 8 + floats * 4 + static_cast<size_t>(n) * width * value_bytes;
}

// One whole epoch by one thread-block cluster of `ctas` CTAs (32 / ctas of the logit's 32 chunks each, and the
// features of those chunks: W's rows, kept in shared memory for the epoch). A step: (1) each CTA reads its slice
// of the batch's rows; (2) each thread the partial logits of its rows' chunks; a cluster barrier; (3) the rows
// r = rank (mod ctas), a warp each: the 32 partials read through distributed shared memory, summed as
// softmax_row sums them, softmax, loss and dO pushed into every CTA; a cluster barrier; (4) each CTA updates
// its W rows and (the same sums in every CTA) its copy of b. The sums are those of the other kernels, in
// their order.
template <typename T>
__global__ void __launch_bounds__(THREADS) softmax_cluster_kernel(float* W, float* b, Batch<T> all, const int64_t* y,
                                                                  const float* lr, float* losses, int64_t rows,
                                                                  int batch_size, int k) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank()), ctas = static_cast<int>(cluster.num_blocks());
  const int per = 32 / ctas, chunk = chunk_of(all.d), width = per * chunk, lo = rank * width;
  const int feats = max(0, min(all.d - lo, width));  // this CTA's features: lo .. lo + feats
  const int most = static_cast<int>(rows < batch_size ? rows : batch_size);
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  extern __shared__ __align__(16) unsigned char smem[];
  int64_t* srcs = reinterpret_cast<int64_t*>(smem);
  float* Ws = reinterpret_cast<float*>(srcs + most);
  float* bs = Ws + width * k;
  float* part = bs + MAX_OUT;
  float* dOs = part + most * per * k;
  float* row_loss = dOs + most * k;
  float* scratch = row_loss + most;
  T* xs = reinterpret_cast<T*>(scratch + ROW_WARPS * 32 * MAX_OUT);
  __shared__ float table[256];
  fill_table(table, all.divisor);
  for (int e = t; e < feats * k; e += THREADS) Ws[e] = W[(size_t)lo * k + e];
  if (t < k) bs[t] = b[t];
  const float rate = *lr;
  constexpr int P = Pack<T>::size;
  for (int64_t r0 = 0, s = 0; r0 < rows; r0 += batch_size, ++s) {
    const int n = static_cast<int>(rows - r0 < batch_size ? rows - r0 : batch_size);
    for (int r = t; r < n; r += THREADS) srcs[r] = all.idx[r0 + r];
    __syncthreads();
    // (1) this CTA's features of each row (zeros for a bad index), 16 bytes a load where the rows allow it
    const int packs = (feats + P - 1) / P;
    for (int e = t; e < n * packs; e += THREADS) {
      const int r = e / packs, f = P * (e % packs);
      const int64_t src = srcs[r];
      const Pack<T> v = all.ok(src) ? load_pack(all.X + src * all.d + lo + f, feats - f, all.packed) : Pack<T>{};
#pragma unroll
      for (int u = 0; u < P; ++u)
        if (f + u < feats) xs[(size_t)r * width + f + u] = v.v[u];
    }
    __syncthreads();
    // (2) the partial logits of this CTA's chunks of each row (a chunk past d: 0, as a lane without features)
    for (int r = t; r < n; r += THREADS) {
      const bool found = all.ok(srcs[r]);
      for (int c = 0; c < per; ++c) {
        float o[MAX_OUT] = {};
        const int clo = min(feats, c * chunk), chi = min(feats, (c + 1) * chunk);
        if (found)
          for (int f = clo; f < chi; ++f) {
            const float xi = scale(xs[(size_t)r * width + f], table, all.divisor);
#pragma unroll
            for (int j = 0; j < MAX_OUT; ++j)
              if (j < k) o[j] += xi * Ws[f * k + j];
          }
#pragma unroll
        for (int j = 0; j < MAX_OUT; ++j)
          if (j < k) part[((size_t)r * per + c) * k + j] = o[j];
      }
    }
    cluster.sync();  // every CTA's partial logits are written
    // (3) this CTA's rows, a warp each: lane l holds chunk l's partial (CTA l / per's), then as softmax_row
    const float* theirs = cluster.map_shared_rank(part, lane / per);
    for (int r = rank + ctas * warp; r < n; r += ctas * ROW_WARPS) {
      const int64_t src = srcs[r];
      const bool found = all.ok(src);
      float o[MAX_OUT];
#pragma unroll
      for (int j = 0; j < MAX_OUT; ++j)
        if (j < k) o[j] = warp_all_sum(theirs[((size_t)r * per + lane % per) * k + j]) + bs[j];
      const int64_t label = found ? y[src] : -1;
      float loss, grad;
      softmax_tail(o, label, found && label >= 0 && label < k, n, k, loss, grad);
      for (int q = 0; q < ctas; ++q) {
        if (lane < k) cluster.map_shared_rank(dOs, q)[(size_t)r * k + lane] = grad;
        if (lane == 0) cluster.map_shared_rank(row_loss, q)[r] = loss;
      }
    }
    cluster.sync();  // every row's dO and loss are in every CTA
    // this CTA's slices of the next step's rows, asked of L2 while the update runs
    const int next = static_cast<int>(rows - r0 - batch_size < batch_size ? rows - r0 - batch_size : batch_size);
    for (int r = t; r < next; r += THREADS) {
      const int64_t src = all.idx[r0 + batch_size + r];
      if (all.ok(src)) prefetch(all.X + src * all.d + lo, feats * sizeof(T), 0, 1);
    }
    // (4) W's rows of this CTA: warp w the features w, w + ROW_WARPS, ...; lane l the rows l, l + 32, ...
    float* mine = scratch + warp * 32 * MAX_OUT;
    for (int f = warp; f < feats; f += ROW_WARPS) {
      float g[MAX_OUT] = {};
      for (int r = lane; r < n; r += 32) {
        const float xi = scale(xs[(size_t)r * width + f], table, all.divisor);  // 0 for a bad index: dO is NaN
#pragma unroll
        for (int j = 0; j < MAX_OUT; ++j)
          if (j < k) g[j] += xi * dOs[(size_t)r * k + j];
      }
#pragma unroll
      for (int j = 0; j < MAX_OUT; ++j) mine[lane * MAX_OUT + j] = g[j];
      __syncwarp();
      if (lane < k) {
        float sum = 0.f;
        for (int l = 0; l < 32; ++l) sum += mine[l * MAX_OUT + lane];
        Ws[f * k + lane] = Ws[f * k + lane] - rate * sum;
      }
      __syncwarp();
    }
    // b and the step's loss, as softmax_update_bias sums them
    float acc[MAX_OUT + 1] = {};
    for (int r = t; r < n; r += THREADS) {
#pragma unroll
      for (int j = 0; j < MAX_OUT; ++j)
        if (j < k) acc[j] += dOs[(size_t)r * k + j];
      acc[MAX_OUT] += row_loss[r];
    }
    block_sum(acc);  // ends with a barrier: W's rows and b are updated before the next step reads them
    if (t == 0) {
      for (int j = 0; j < k; ++j) bs[j] = bs[j] - rate * acc[j];
      if (rank == 0) losses[s] = acc[MAX_OUT] / n;
    }
    __syncthreads();
  }
  for (int e = t; e < feats * k; e += THREADS) W[(size_t)lo * k + e] = Ws[e];
  if (rank == 0 && t < k) b[t] = bs[t];
  cluster.sync();  // no CTA leaves while another may still address its shared memory
#endif
}

// A shape as Python prints it, "(8, 2)" or "(8,)". Messages are built from plain strings: streaming an
// IntArrayRef into TORCH_CHECK crashed the process on an H100 (torch 2.11 + nvcc 13), so none is streamed.
std::string shape(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + (t.dim() == 1 ? ",)" : ")");
}

// The checks of impls/common.py: same device as X, dtypes, contiguity, shapes. X is (N, d) float32 (or
// uint8 when `pixels`); y (N,); idx (n,) int64 with n >= 1 (without idx: X's rows, N >= 1).
void check_args(const char* op, const at::Tensor& weight, const char* weight_name, const at::Tensor& b,
                const at::Tensor& X, const at::Tensor& y, at::ScalarType label_dtype, const at::Tensor& lr,
                const at::Tensor* idx, int max_out) {
  TORCH_CHECK_VALUE(X.dim() == 2 && (idx || X.size(0) >= 1), op, ": X must be (n, d) with n >= 1, got ", shape(X));
  const std::pair<const at::Tensor*, const char*> args[] = {{&weight, weight_name}, {&b, "b"}, {&X, "X"},
                                                            {&y, "y"}, {&lr, "lr"}, {idx ? idx : &X, "idx"}};
  for (const auto& [t, name] : args) {
    const auto dtype = t == &y ? label_dtype : t == idx ? at::kLong : at::kFloat;
    TORCH_CHECK_VALUE(t->device() == X.device(), op, ": ", name, " is on ", t->device(), " but X is on ", X.device());
    TORCH_CHECK_VALUE(t->scalar_type() == dtype || (t == &X && idx && dtype == at::kFloat && t->scalar_type() == at::kByte),
                      op, ": ", name, " must be ", dtype, ", got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->is_contiguous(), op, ": ", name, " must be contiguous");
  }
  TORCH_CHECK_VALUE(X.is_cuda(), op, ": X must be on a CUDA device, got ", X.device());
  const int64_t N = X.size(0), d = X.size(1);
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) == d, op, ": ", weight_name, " must be (", d,
                    ", k) for X ", shape(X), ", got ", shape(weight));
  const int64_t k = weight.size(1);
  TORCH_CHECK_VALUE(k >= 1 && k <= max_out, op, ": ", weight_name, " must be (d, k) with k <= ", max_out,
                    " for this kernel, got ", shape(weight));
  TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == k, op, ": b must be (", k, ",), got ", shape(b));
  TORCH_CHECK_VALUE(y.dim() == 1 && y.size(0) == N, op, ": y must be (", N, ",), got ", shape(y));
  TORCH_CHECK_VALUE(!idx || (idx->dim() == 1 && idx->size(0) >= 1), op, ": idx must be (n,) with n >= 1");
  TORCH_CHECK_VALUE(lr.numel() == 1, op, ": lr must have one element, got ", shape(lr));
  TORCH_CHECK_VALUE(N * std::max<int64_t>(d, k) < (int64_t(1) << 31), op, ": X ", shape(X), " is too large");
}

// An attribute of the current GPU (cudaDevAttr...).
int attribute(cudaDeviceAttr what) {
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, what, c10::cuda::current_device()));
  return value;
}

template <typename T>
Batch<T> batch_of(const at::Tensor& X, const at::Tensor* idx, double divisor) {
  const bool packed = X.size(1) * sizeof(T) % 16 == 0 && reinterpret_cast<uintptr_t>(X.data_ptr()) % 16 == 0;
  return Batch<T>{X.data_ptr<T>(), idx ? idx->data_ptr<int64_t>() : nullptr, X.size(0),
                  static_cast<int>(idx ? idx->size(0) : X.size(0)), static_cast<int>(X.size(1)),
                  static_cast<float>(divisor), packed};
}

// f.template operator()<T>() with T the C++ type of X's values (float or uint8_t).
template <typename F>
auto by_type(const at::Tensor& X, F&& f) {
  return X.scalar_type() == at::kByte ? f(uint8_t{}) : f(float{});
}

// Dynamic shared memory for W (d, k), opted in to the most this GPU allows (the kernels' own static
// shared memory counts against 48 KiB otherwise); set once per kernel and device.
template <typename K>
size_t w_smem(K kernel, const at::Tensor& W, const char* op) {
  static std::set<std::pair<int, const void*>> opted;
  const size_t bytes = W.numel() * sizeof(float);
  const size_t optin = attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
  TORCH_CHECK_VALUE(bytes + SMEM_RESERVED <= optin, op, ": W ", shape(W), " does not fit in this GPU's shared memory");
  const std::pair<int, const void*> key{c10::cuda::current_device(), reinterpret_cast<const void*>(kernel)};
  if (!opted.count(key)) {
    cudaFuncAttributes attributes;
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(optin - attributes.sharedSizeBytes)));
    opted.insert(key);
  }
  return bytes;
}

at::Tensor linreg(at::Tensor w, at::Tensor b, const at::Tensor& X, const at::Tensor& y, const at::Tensor* idx,
                  double divisor, const at::Tensor& lr, const char* op) {
  check_args(op, w, "w", b, X, y, at::kFloat, lr, idx, 1);
  TORCH_CHECK_VALUE(X.size(1) <= MAX_OUT, op, ": X must have at most ", MAX_OUT, " features for this kernel, got ",
                    shape(X));
  const c10::cuda::CUDAGuard guard(X.device());
  auto loss = at::empty({}, w.options());
  by_type(X, [&](auto t) {
    using T = decltype(t);
    linreg_step_kernel<T><<<1, THREADS, 0, c10::cuda::getCurrentCUDAStream()>>>(
        w.data_ptr<float>(), b.data_ptr<float>(), batch_of<T>(X, idx, divisor), y.data_ptr<float>(),
        lr.data_ptr<float>(), loss.data_ptr<float>());
    return 0;
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return loss;
}

at::Tensor softmax(at::Tensor W, at::Tensor b, const at::Tensor& X, const at::Tensor& y, const at::Tensor* idx,
                   double divisor, const at::Tensor& lr, const char* op) {
  check_args(op, W, "W", b, X, y, at::kLong, lr, idx, MAX_OUT);
  const int k = W.size(1), d = X.size(1), n = idx ? idx->size(0) : X.size(0);
  const c10::cuda::CUDAGuard guard(X.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  auto dO = at::empty({n, k}, W.options());
  auto row_loss = at::empty({n}, W.options());
  auto loss = at::empty({}, W.options());
  by_type(X, [&](auto t) {
    using T = decltype(t);
    const auto batch = batch_of<T>(X, idx, divisor);
    const size_t smem = w_smem(softmax_grad_kernel<T>, W, op);
    softmax_grad_kernel<T><<<(n + ROW_WARPS - 1) / ROW_WARPS, THREADS, smem, stream>>>(
        W.data_ptr<float>(), b.data_ptr<float>(), batch, y.data_ptr<int64_t>(), dO.data_ptr<float>(),
        row_loss.data_ptr<float>(), k);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    softmax_update_kernel<T><<<(d + FEATS - 1) / FEATS + 1, THREADS, 0, stream>>>(
        batch, dO.data_ptr<float>(), row_loss.data_ptr<float>(), W.data_ptr<float>(), b.data_ptr<float>(),
        lr.data_ptr<float>(), loss.data_ptr<float>(), k);
    return 0;
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return loss;
}

}  // namespace

at::Tensor linreg_step(at::Tensor w, at::Tensor b, const at::Tensor& X, const at::Tensor& y, const at::Tensor& lr) {
  return linreg(w, b, X, y, nullptr, 1.0, lr, "linbench::linreg_step");
}

at::Tensor softmax_step(at::Tensor W, at::Tensor b, const at::Tensor& X, const at::Tensor& y, const at::Tensor& lr) {
  return softmax(W, b, X, y, nullptr, 1.0, lr, "linbench::softmax_step");
}

at::Tensor linreg_gather_step(at::Tensor w, at::Tensor b, const at::Tensor& X, const at::Tensor& y,
                              const at::Tensor& idx, double divisor, const at::Tensor& lr) {
  return linreg(w, b, X, y, &idx, divisor, lr, "linbench::linreg_gather_step");
}

at::Tensor softmax_gather_step(at::Tensor W, at::Tensor b, const at::Tensor& X, const at::Tensor& y,
                               const at::Tensor& idx, double divisor, const at::Tensor& lr) {
  return softmax(W, b, X, y, &idx, divisor, lr, "linbench::softmax_gather_step");
}

at::Tensor linreg_epoch(at::Tensor w, at::Tensor b, const at::Tensor& X, const at::Tensor& y, const at::Tensor& order,
                        int64_t batch_size, double divisor, const at::Tensor& lr) {
  const char* op = "linbench::linreg_epoch";
  check_args(op, w, "w", b, X, y, at::kFloat, lr, &order, 1);
  TORCH_CHECK_VALUE(X.size(1) <= MAX_OUT, op, ": X must have at most ", MAX_OUT, " features for this kernel");
  TORCH_CHECK_VALUE(batch_size >= 1, op, ": batch_size must be >= 1");
  const int64_t rows = order.size(0), steps = (rows + batch_size - 1) / batch_size;
  const c10::cuda::CUDAGuard guard(X.device());
  auto losses = at::empty({steps}, w.options());
  by_type(X, [&](auto t) {
    using T = decltype(t);
    linreg_epoch_kernel<T><<<1, THREADS, 0, c10::cuda::getCurrentCUDAStream()>>>(
        w.data_ptr<float>(), b.data_ptr<float>(), batch_of<T>(X, &order, divisor), y.data_ptr<float>(),
        lr.data_ptr<float>(), losses.data_ptr<float>(), rows, static_cast<int>(batch_size));
    return 0;
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return losses;
}

// A softmax epoch's arguments checked, and its sizes: classes k, features d, the largest batch n, rows, steps.
struct EpochShape {
  int k, d, n;
  int64_t rows, steps;
};

EpochShape softmax_epoch_shape(const char* op, const at::Tensor& W, const at::Tensor& b, const at::Tensor& X,
                               const at::Tensor& y, const at::Tensor& order, int64_t batch_size, const at::Tensor& lr) {
  check_args(op, W, "W", b, X, y, at::kLong, lr, &order, MAX_OUT);
  TORCH_CHECK_VALUE(batch_size >= 1 && batch_size < (int64_t(1) << 24), op, ": batch_size must be in 1..2^24");
  const int64_t rows = order.size(0);
  return {static_cast<int>(W.size(1)), static_cast<int>(X.size(1)),
          static_cast<int>(std::min<int64_t>(batch_size, rows)), rows, (rows + batch_size - 1) / batch_size};
}

at::Tensor softmax_epoch(at::Tensor W, at::Tensor b, const at::Tensor& X, const at::Tensor& y, const at::Tensor& order,
                         int64_t batch_size, double divisor, const at::Tensor& lr) {
  const char* op = "linbench::softmax_epoch";
  const auto [k, d, n, rows, steps] = softmax_epoch_shape(op, W, b, X, y, order, batch_size, lr);
  const c10::cuda::CUDAGuard guard(X.device());
  TORCH_CHECK_VALUE(attribute(cudaDevAttrCooperativeLaunch), op, ": this GPU cannot launch a cooperative kernel");
  auto dO = at::empty({n, k}, W.options());
  auto row_loss = at::empty({n}, W.options());
  auto losses = at::empty({steps}, W.options());
  by_type(X, [&](auto t) {
    using T = decltype(t);
    auto kernel = softmax_epoch_kernel<T>;
    const size_t smem = w_smem(kernel, W, op);
    int per_sm = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, THREADS, smem));
    TORCH_CHECK(per_sm >= 1, op, ": no block of this kernel fits on a multiprocessor");
    // as many blocks as the larger phase has work for, all resident at once (a grid barrier needs it)
    const int want = std::max((n + ROW_WARPS - 1) / ROW_WARPS, (d + FEATS - 1) / FEATS + 1);
    const int blocks = std::min(want, per_sm * attribute(cudaDevAttrMultiProcessorCount));
    float* W_ = W.data_ptr<float>();
    float* b_ = b.data_ptr<float>();
    auto all = batch_of<T>(X, &order, divisor);
    const int64_t* y_ = y.data_ptr<int64_t>();
    const float* lr_ = lr.data_ptr<float>();
    float* dO_ = dO.data_ptr<float>();
    float* row_loss_ = row_loss.data_ptr<float>();
    float* losses_ = losses.data_ptr<float>();
    int bs = static_cast<int>(batch_size), k_ = k;
    int64_t rows_ = rows;
    void* args[] = {&W_, &b_, &all, &y_, &lr_, &dO_, &row_loss_, &losses_, &rows_, &bs, &k_};
    C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel), blocks, THREADS, args, smem,
                                               c10::cuda::getCurrentCUDAStream()));
    return 0;
  });
  return losses;
}

// A launch of `ctas` CTAs as one cluster with `smem` bytes of dynamic shared memory; `attribute` (the cluster's
// shape) is the caller's and must outlive the config.
cudaLaunchConfig_t cluster_launch(cudaLaunchAttribute* attribute, int ctas, size_t smem, cudaStream_t stream) {
  attribute->id = cudaLaunchAttributeClusterDimension;
  attribute->val.clusterDim.x = ctas, attribute->val.clusterDim.y = 1, attribute->val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(ctas), config.blockDim = dim3(THREADS), config.dynamicSmemBytes = smem;
  config.stream = stream, config.attrs = attribute, config.numAttrs = 1;
  return config;
}

// The cluster epoch's kernel as this GPU runs it: the virtual architecture its code was compiled from (90 and up:
// the cluster code is there; below, the kernel is empty) and the largest cluster (16 CTAs, else 8, else 0) that
// this GPU can launch with a batch of n rows, chunks of `chunk` features, k classes and values of type T.
template <typename T>
std::pair<int, int> cluster_fit(int n, int chunk, int k) {
  auto kernel = softmax_cluster_kernel<T>;
  cudaFuncAttributes attributes;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  if (attributes.ptxVersion < 90 || attributes.binaryVersion < 90) return {attributes.ptxVersion, 0};
  const size_t optin = attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  for (int ctas : {16, 8}) {
    const size_t smem = cluster_smem(n, 32 / ctas, chunk, k, sizeof(T));
    if (smem + attributes.sharedSizeBytes > optin) continue;
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    cudaLaunchAttribute shape;
    const cudaLaunchConfig_t config = cluster_launch(&shape, ctas, smem, nullptr);
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, reinterpret_cast<void*>(kernel), &config) == cudaSuccess &&
        clusters >= 1)
      return {attributes.ptxVersion, ctas};
    (void)cudaGetLastError();  // a cluster size this GPU refuses is an answer, not an error
  }
  return {attributes.ptxVersion, 0};
}

// (the cluster kernel's virtual architecture, the cluster size it launches: 0 when it cannot) for a uint8 or a
// float32 X of d features, k classes and batches of n rows on the current GPU; the launch sets its shared memory.
// Asked once per device and shape (the op asks before every epoch).
std::vector<int64_t> cluster_config(int64_t d, int64_t k, int64_t n, bool pixels) {
  static std::mutex lock;
  static std::map<std::tuple<int, int64_t, int64_t, int64_t, bool>, std::vector<int64_t>> known;
  const auto key = std::make_tuple(static_cast<int>(c10::cuda::current_device()), d, k, n, pixels);
  const std::lock_guard<std::mutex> hold(lock);
  if (const auto found = known.find(key); found != known.end()) return found->second;
  const int chunk = chunk_of(static_cast<int>(d));
  const auto [ptx, ctas] = pixels ? cluster_fit<uint8_t>(static_cast<int>(n), chunk, static_cast<int>(k))
                                  : cluster_fit<float>(static_cast<int>(n), chunk, static_cast<int>(k));
  return known[key] = {ptx, ctas};
}

at::Tensor softmax_cluster_epoch(at::Tensor W, at::Tensor b, const at::Tensor& X, const at::Tensor& y,
                                 const at::Tensor& order, int64_t batch_size, double divisor, const at::Tensor& lr) {
  const char* op = "linbench::softmax_cluster_epoch";
  const auto [k, d, n, rows, steps] = softmax_epoch_shape(op, W, b, X, y, order, batch_size, lr);
  const c10::cuda::CUDAGuard guard(X.device());
  const bool pixels = X.scalar_type() == at::kByte;
  const auto fit = cluster_config(d, k, n, pixels);
  TORCH_CHECK_VALUE(fit[0] >= 90, op, ": the extension has no sm_90 code for this GPU (built for compute_", fit[0],
                    "): build it with TORCH_CUDA_ARCH_LIST=9.0+PTX");
  TORCH_CHECK_VALUE(fit[1] > 0, op, ": no cluster of 16 or 8 CTAs with this batch's shared memory fits this GPU");
  const int ctas = static_cast<int>(fit[1]);
  auto losses = at::empty({steps}, W.options());
  by_type(X, [&](auto t) {
    using T = decltype(t);
    const size_t smem = cluster_smem(n, 32 / ctas, chunk_of(d), k, sizeof(T));
    C10_CUDA_CHECK(cudaFuncSetAttribute(softmax_cluster_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
    cudaLaunchAttribute shape;
    const cudaLaunchConfig_t config = cluster_launch(&shape, ctas, smem, c10::cuda::getCurrentCUDAStream());
    C10_CUDA_CHECK(cudaLaunchKernelEx(&config, softmax_cluster_kernel<T>, W.data_ptr<float>(), b.data_ptr<float>(),
                                      batch_of<T>(X, &order, divisor), y.data_ptr<int64_t>(),
                                      lr.data_ptr<float>(), losses.data_ptr<float>(), rows,
                                      static_cast<int>(batch_size), k));
    return 0;
  });
  return losses;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linreg_step", &linreg_step, "fused linreg SGD step (updates w, b in place; returns the mean loss)");
  m.def("softmax_step", &softmax_step, "fused softmax SGD step (updates W, b in place; returns the mean loss)");
  m.def("linreg_gather_step", &linreg_gather_step, "linreg_step on rows idx of X, divided by divisor");
  m.def("softmax_gather_step", &softmax_gather_step, "softmax_step on rows idx of X, divided by divisor");
  m.def("linreg_epoch", &linreg_epoch, "linreg steps over batches of order (one launch); returns each step's loss");
  m.def("softmax_epoch", &softmax_epoch, "softmax steps over batches of order (one cooperative launch); returns "
        "each step's loss");
  m.def("softmax_cluster_epoch", &softmax_cluster_epoch, "softmax_epoch by one thread-block cluster (sm_90 and up)");
  m.def("cluster_config", &cluster_config, "(compute arch of the cluster kernel, cluster size it launches) for "
        "X's d, k, batch rows n and whether X is uint8");
}
