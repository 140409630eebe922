// Fused fp32 SGD steps and epochs of d2l ch. 3 on one CUDA stream, for the `cuda`, `cuda_graph` and
// `cuda_epoch` forms (impls/cuda.py, impls/cuda_graph.py, impls/cuda_epoch.py).
//
// A batch is rows idx[0..n) of X (N, d), gathered inside the kernels, each value divided by `divisor`
// (uint8 pixels / 255, as ToTensor scales them; float rows / 1), or rows 0..n of X when there is no idx.
//
// linreg: 1 launch a step, one block: residuals, loss, gradient and the update of w and b.
// softmax: 2 launches a step. softmax_grad: one warp per row (W staged in shared memory): logits X@W+b,
// stable softmax, the row's cross-entropy and dO = (softmax - onehot) / n. softmax_update: one block per
// tile of FEATS features, its threads over the rows (FEATS x LANES), reduces X^T dO and updates W; one
// more block updates b and writes the batch-mean loss.
// Epochs: linreg_epoch is one block looping over the steps; softmax_epoch is one persistent cooperative
// kernel: per step the grad phase, a grid-wide barrier, the update phase, a barrier.
//
// Every sum runs in a fixed order, so a step is deterministic. lr is read on the device. A row whose
// label is outside 0..k-1 (or whose index is outside 0..N-1) gets a NaN loss and a NaN gradient, so the
// loss and the parameters show it (a host check would sync every step). The host checks the arguments as
// impls/common.py does (one-line ValueErrors); Python checks them first.
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cooperative_groups.h>

#include <set>
#include <utility>

namespace cg = cooperative_groups;

namespace {

constexpr int MAX_OUT = 16;  // most softmax classes / linreg features a thread keeps in registers
constexpr int THREADS = 256;
constexpr int ROW_WARPS = THREADS / 32;  // rows a block of softmax_grad takes at once
constexpr int FEATS = 8;                 // features per block of softmax_update
constexpr int LANES = THREADS / FEATS;   // its threads per feature, over the rows

template <typename T>
struct Batch {
  const T* X;
  const int64_t* idx;  // null: rows 0..n
  int64_t N;
  int n, d;
  float divisor;

  __device__ int64_t src(int r) const { return idx ? idx[r] : r; }
  __device__ bool ok(int64_t s) const { return s >= 0 && s < N; }
  __device__ float x(int64_t s, int i) const { return static_cast<float>(X[s * d + i]) / divisor; }
};

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

// W (d, k) into shared memory by the whole block (read through L2: other blocks of an epoch wrote it).
__device__ void stage(float* Ws, const float* W, int size) {
  for (int e = threadIdx.x; e < size; e += blockDim.x) Ws[e] = __ldcg(W + e);
  __syncthreads();
}

// Row r of the batch by one warp: logits, softmax, the row's loss and its row of dO.
template <typename T>
__device__ void softmax_row(const float* Ws, const float* b, const Batch<T>& batch, const int64_t* y, int r,
                            float* dO, float* row_loss, int k) {
  const int lane = threadIdx.x % 32;
  const int64_t s = batch.src(r);
  const bool found = batch.ok(s);
  float o[MAX_OUT] = {};
  if (found)
    for (int i = lane; i < batch.d; i += 32) {
      const float xi = batch.x(s, i);
#pragma unroll
      for (int j = 0; j < MAX_OUT; ++j)
        if (j < k) o[j] += xi * Ws[i * k + j];
    }
  const int64_t label = found ? y[s] : -1;
  const bool good = found && label >= 0 && label < k;
  float top = -INFINITY, picked = 0.f;
#pragma unroll
  for (int j = 0; j < MAX_OUT; ++j)
    if (j < k) {
      o[j] = warp_all_sum(o[j]) + __ldcg(b + j);
      top = fmaxf(top, o[j]);
      if (j == label) picked = o[j];
    }
  float total = 0.f;
#pragma unroll
  for (int j = 0; j < MAX_OUT; ++j)
    if (j < k) total += (o[j] = expf(o[j] - top));
  if (lane == 0) row_loss[r] = good ? top + logf(total) - picked : NAN;
#pragma unroll
  for (int j = 0; j < MAX_OUT; ++j)
    if (j < k && j == lane) dO[(size_t)r * k + j] = good ? (o[j] / total - (j == label ? 1.f : 0.f)) / batch.n : NAN;
}

// The rows this block's warps take: r = first + warp, first + warp + stride, ...
template <typename T>
__device__ void softmax_rows(float* Ws, const float* W, const float* b, const Batch<T>& batch, const int64_t* y,
                             float* dO, float* row_loss, int k, int first, int stride) {
  if (first >= batch.n) return;  // the same for the whole block
  stage(Ws, W, batch.d * k);
  for (int r = first + threadIdx.x / 32; r < batch.n; r += stride)
    softmax_row(Ws, b, batch, y, r, dO, row_loss, k);
}

// W[tile*FEATS ... +FEATS, :] -= rate * X^T dO, by one block: thread (f, lane) sums over rows lane, lane+LANES...
template <typename T>
__device__ void softmax_update_tile(int tile, const Batch<T>& batch, const float* dO, float* W, float rate, int k) {
  __shared__ float part[LANES][FEATS][MAX_OUT];
  const int f = threadIdx.x % FEATS, lane = threadIdx.x / FEATS, i = tile * FEATS + f;
  float g[MAX_OUT] = {};
  if (i < batch.d)
    for (int r = lane; r < batch.n; r += LANES) {
      const int64_t s = batch.src(r);
      const float xi = batch.ok(s) ? batch.x(s, i) : 0.f;  // that row's dO is NaN
#pragma unroll
      for (int j = 0; j < MAX_OUT; ++j)
        if (j < k) g[j] += xi * __ldcg(dO + (size_t)r * k + j);
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
  extern __shared__ float Ws[];
  softmax_rows(Ws, W, b, batch, y, dO, row_loss, k, blockIdx.x * ROW_WARPS, gridDim.x * ROW_WARPS);
}

template <typename T>
__global__ void softmax_update_kernel(Batch<T> batch, const float* dO, const float* row_loss, float* W, float* b,
                                      const float* lr, float* loss, int k) {
  const int tiles = (batch.d + FEATS - 1) / FEATS;
  if (blockIdx.x < tiles)
    softmax_update_tile(blockIdx.x, batch, dO, W, *lr, k);
  else
    softmax_update_bias(dO, row_loss, b, *lr, loss, batch.n, k);
}

// One whole epoch: the steps of softmax_grad and softmax_update in one cooperative launch.
template <typename T>
__global__ void softmax_epoch_kernel(float* W, float* b, Batch<T> all, const int64_t* y, const float* lr,
                                     float* dO, float* row_loss, float* losses, int64_t rows, int batch_size, int k) {
  extern __shared__ float Ws[];
  cg::grid_group grid = cg::this_grid();
  const float rate = *lr;
  const int tiles = (all.d + FEATS - 1) / FEATS;
  for (int64_t r0 = 0, s = 0; r0 < rows; r0 += batch_size, ++s) {
    Batch<T> batch = all;
    batch.idx = all.idx + r0;
    batch.n = static_cast<int>(rows - r0 < batch_size ? rows - r0 : batch_size);
    softmax_rows(Ws, W, b, batch, y, dO, row_loss, k, blockIdx.x * ROW_WARPS, gridDim.x * ROW_WARPS);
    grid.sync();  // dO and the row losses of every row are written
    for (int t = blockIdx.x; t <= tiles; t += gridDim.x) {
      if (t < tiles)
        softmax_update_tile(t, batch, dO, W, rate, k);
      else
        softmax_update_bias(dO, row_loss, b, rate, losses + s, batch.n, k);
    }
    grid.sync();  // W and b are updated before the next step reads them
  }
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
  return Batch<T>{X.data_ptr<T>(), idx ? idx->data_ptr<int64_t>() : nullptr, X.size(0),
                  static_cast<int>(idx ? idx->size(0) : X.size(0)), static_cast<int>(X.size(1)),
                  static_cast<float>(divisor)};
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
  TORCH_CHECK_VALUE(bytes + 24 * 1024 <= optin, op, ": W ", shape(W), " does not fit in this GPU's shared memory");
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

at::Tensor softmax_epoch(at::Tensor W, at::Tensor b, const at::Tensor& X, const at::Tensor& y, const at::Tensor& order,
                         int64_t batch_size, double divisor, const at::Tensor& lr) {
  const char* op = "linbench::softmax_epoch";
  check_args(op, W, "W", b, X, y, at::kLong, lr, &order, MAX_OUT);
  TORCH_CHECK_VALUE(batch_size >= 1 && batch_size < (int64_t(1) << 24), op, ": batch_size must be in 1..2^24");
  const int k = W.size(1), d = X.size(1);
  const int64_t rows = order.size(0), steps = (rows + batch_size - 1) / batch_size;
  const int n = static_cast<int>(std::min<int64_t>(batch_size, rows));
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linreg_step", &linreg_step, "fused linreg SGD step (updates w, b in place; returns the mean loss)");
  m.def("softmax_step", &softmax_step, "fused softmax SGD step (updates W, b in place; returns the mean loss)");
  m.def("linreg_gather_step", &linreg_gather_step, "linreg_step on rows idx of X, divided by divisor");
  m.def("softmax_gather_step", &softmax_gather_step, "softmax_step on rows idx of X, divided by divisor");
  m.def("linreg_epoch", &linreg_epoch, "linreg steps over batches of order (one launch); returns each step's loss");
  m.def("softmax_epoch", &softmax_epoch, "softmax steps over batches of order (one cooperative launch); returns "
        "each step's loss");
}
