// Fused fp32 SGD steps of d2l ch. 3 on one CUDA stream, for the `cuda` form (impls/cuda.py).
//
// linreg_step: 1 launch, one block: residuals, loss, gradient and the update of w and b.
// softmax_step: 2 launches. softmax_grad: one block per row: logits X@W+b, stable softmax, the row's
// cross-entropy and dO = (softmax - onehot) / n. softmax_update: one thread per W entry
// reduces X^T dO over the rows and updates it; the last block updates b and writes the mean loss.
// Every sum runs in a fixed order, so a step is deterministic. lr is read on the device.
// The host checks the arguments as check_step_args in impls/common.py does (one-line ValueErrors), but
// not the label range, which would sync: a row whose label is outside 0..k-1 gets a NaN loss instead.
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace {

constexpr int MAX_OUT = 16;  // most softmax classes / linreg features a thread keeps in registers
constexpr int TILE = 64;     // rows of dO staged in shared memory per pass of softmax_update

__device__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffff, v, offset);
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
}

// acc[0..d): sum of r*x (grad of w), acc[MAX_OUT]: sum of r (grad of b), acc[MAX_OUT+1]: sum of r^2/2.
__global__ void linreg_step_kernel(float* w, float* b, const float* X, const float* y, const float* lr,
                                   float* loss, int n, int d) {
  float acc[MAX_OUT + 2] = {};
  for (int r = threadIdx.x; r < n; r += blockDim.x) {
    const float* x = X + (size_t)r * d;
    float res = b[0] - y[r];
#pragma unroll
    for (int i = 0; i < MAX_OUT; ++i)
      if (i < d) res += x[i] * w[i];
#pragma unroll
    for (int i = 0; i < MAX_OUT; ++i)
      if (i < d) acc[i] += res * x[i];
    acc[MAX_OUT] += res;
    acc[MAX_OUT + 1] += res * res / 2;
  }
  block_sum(acc);  // every thread has read w and b before thread 0 writes them
  if (threadIdx.x == 0) {
    const float step = *lr / n;
#pragma unroll
    for (int i = 0; i < MAX_OUT; ++i)
      if (i < d) w[i] -= step * acc[i];
    b[0] -= step * acc[MAX_OUT];
    *loss = acc[MAX_OUT + 1] / n;
  }
}

__global__ void softmax_grad_kernel(const float* X, const float* W, const float* b, const int64_t* y,
                                    float* dO, float* row_loss, int n, int d, int k) {
  const int r = blockIdx.x;
  const float* x = X + (size_t)r * d;
  float o[MAX_OUT] = {};
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    const float xi = x[i];
    const float* wi = W + (size_t)i * k;
#pragma unroll
    for (int j = 0; j < MAX_OUT; ++j)
      if (j < k) o[j] += xi * wi[j];
  }
  block_sum(o);
  if (threadIdx.x != 0) return;
  const int64_t label = y[r];
  float top = -INFINITY, picked = 0.f;
#pragma unroll
  for (int j = 0; j < MAX_OUT; ++j)
    if (j < k) {
      o[j] += b[j];
      top = fmaxf(top, o[j]);
      if (j == label) picked = o[j];
    }
  float total = 0.f;
#pragma unroll
  for (int j = 0; j < MAX_OUT; ++j)
    if (j < k) total += (o[j] = expf(o[j] - top));
  row_loss[r] = label >= 0 && label < k ? top + logf(total) - picked : NAN;  // a bad label shows as NaN
#pragma unroll
  for (int j = 0; j < MAX_OUT; ++j)
    if (j < k) dO[(size_t)r * k + j] = (o[j] / total - (j == label ? 1.f : 0.f)) / n;
}

__global__ void softmax_update_kernel(const float* X, const float* dO, const float* row_loss, float* W,
                                      float* b, const float* lr, float* loss, int n, int d, int k) {
  const float rate = *lr;
  if (blockIdx.x == gridDim.x - 1) {  // the last block: b and the batch-mean loss
    float acc[MAX_OUT + 1] = {};
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
#pragma unroll
      for (int j = 0; j < MAX_OUT; ++j)
        if (j < k) acc[j] += dO[(size_t)r * k + j];
      acc[MAX_OUT] += row_loss[r];
    }
    block_sum(acc);
    if (threadIdx.x == 0) {
      for (int j = 0; j < k; ++j) b[j] -= rate * acc[j];
      *loss = acc[MAX_OUT] / n;
    }
    return;
  }
  __shared__ float tile[TILE * MAX_OUT];
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;  // W entry (i, j), i fastest: X loads coalesce
  const int i = idx % d, j = idx / d;
  float g = 0.f;
  for (int r0 = 0; r0 < n; r0 += TILE) {
    const int rows = min(TILE, n - r0);
    for (int e = threadIdx.x; e < rows * k; e += blockDim.x) tile[e] = dO[(size_t)r0 * k + e];
    __syncthreads();
    if (j < k)
      for (int r = 0; r < rows; ++r) g += X[(size_t)(r0 + r) * d + i] * tile[r * k + j];
    __syncthreads();
  }
  if (j < k) W[(size_t)i * k + j] -= rate * g;
}

// A shape as Python prints it, "(8, 2)" or "(8,)". Messages are built from plain strings: streaming an
// IntArrayRef into TORCH_CHECK crashed the process on an H100 (torch 2.11 + nvcc 13), so none is streamed.
std::string shape(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + (t.dim() == 1 ? ",)" : ")");
}

// The checks of check_step_args (impls/common.py): same device as X, dtype, contiguity, shapes, n >= 1.
void check_args(const char* op, const at::Tensor& weight, const char* weight_name, const at::Tensor& b,
                const at::Tensor& X, const at::Tensor& y, at::ScalarType label_dtype, const at::Tensor& lr) {
  TORCH_CHECK_VALUE(X.dim() == 2 && X.size(0) >= 1, op, ": X must be (n, d) with n >= 1, got ", shape(X));
  const std::pair<const at::Tensor*, const char*> args[] = {{&weight, weight_name}, {&b, "b"}, {&X, "X"},
                                                            {&y, "y"}, {&lr, "lr"}};
  for (const auto& [t, name] : args) {
    const auto dtype = t == &y ? label_dtype : at::kFloat;
    TORCH_CHECK_VALUE(t->device() == X.device(), op, ": ", name, " is on ", t->device(), " but X is on ", X.device());
    TORCH_CHECK_VALUE(t->scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->is_contiguous(), op, ": ", name, " must be contiguous");
  }
  TORCH_CHECK_VALUE(X.is_cuda(), op, ": X must be on a CUDA device, got ", X.device());
  const int64_t n = X.size(0), d = X.size(1);
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) == d, op, ": ", weight_name, " must be (", d,
                    ", k) for X ", shape(X), ", got ", shape(weight));
  const int64_t k = weight.size(1);
  TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == k, op, ": b must be (", k, ",), got ", shape(b));
  TORCH_CHECK_VALUE(y.dim() == 1 && y.size(0) == n, op, ": y must be (", n, ",), got ", shape(y));
  TORCH_CHECK_VALUE(lr.numel() == 1, op, ": lr must have one element, got ", shape(lr));
  TORCH_CHECK_VALUE(n * std::max<int64_t>(d, k) < (int64_t(1) << 31), op, ": X ", shape(X), " is too large");
}

}  // namespace

at::Tensor linreg_step(at::Tensor w, at::Tensor b, const at::Tensor& X, const at::Tensor& y,
                       const at::Tensor& lr) {
  check_args("linbench::linreg_step", w, "w", b, X, y, at::kFloat, lr);
  const int n = X.size(0), d = X.size(1);
  TORCH_CHECK_VALUE(d <= MAX_OUT && w.size(1) == 1, "linbench::linreg_step: w must be (d, 1) with d <= ", MAX_OUT,
                    " for this kernel, got ", shape(w));
  const c10::cuda::CUDAGuard guard(X.device());
  auto loss = at::empty({}, X.options());
  linreg_step_kernel<<<1, 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
      w.data_ptr<float>(), b.data_ptr<float>(), X.data_ptr<float>(), y.data_ptr<float>(),
      lr.data_ptr<float>(), loss.data_ptr<float>(), n, d);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return loss;
}

at::Tensor softmax_step(at::Tensor W, at::Tensor b, const at::Tensor& X, const at::Tensor& y,
                        const at::Tensor& lr) {
  check_args("linbench::softmax_step", W, "W", b, X, y, at::kLong, lr);
  const int n = X.size(0), d = X.size(1), k = W.size(1);
  TORCH_CHECK_VALUE(k <= MAX_OUT, "linbench::softmax_step: W must be (d, k) with k <= ", MAX_OUT,
                    " for this kernel, got ", shape(W));
  const c10::cuda::CUDAGuard guard(X.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  auto dO = at::empty({n, k}, X.options());
  auto row_loss = at::empty({n}, X.options());
  auto loss = at::empty({}, X.options());
  softmax_grad_kernel<<<n, 128, 0, stream>>>(X.data_ptr<float>(), W.data_ptr<float>(), b.data_ptr<float>(),
                                             y.data_ptr<int64_t>(), dO.data_ptr<float>(),
                                             row_loss.data_ptr<float>(), n, d, k);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int threads = 256, blocks = (d * k + threads - 1) / threads + 1;
  softmax_update_kernel<<<blocks, threads, 0, stream>>>(X.data_ptr<float>(), dO.data_ptr<float>(),
                                                        row_loss.data_ptr<float>(), W.data_ptr<float>(),
                                                        b.data_ptr<float>(), lr.data_ptr<float>(),
                                                        loss.data_ptr<float>(), n, d, k);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return loss;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linreg_step", &linreg_step, "fused linreg SGD step (updates w, b in place; returns the mean loss)");
  m.def("softmax_step", &softmax_step, "fused softmax SGD step (updates W, b in place; returns the mean loss)");
}
