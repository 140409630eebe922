// Fused fp32 SGD steps of d2l ch. 3 on the CPU, for the `native` form (impls/native.py); and, for models of more
// than one layer (the MLP of d2l 4.2), the step of a stack of dense layers as ATen calls (stack_form_step, below).
//
// One call per step, below autograd (no graph, no version counters), no Python between the ops:
// linreg_step: plain loops over the rows (d is 2): residual r = X w + b - y, loss mean(r^2)/2,
//   w -= lr * X^T r / n, b -= lr * mean(r); sums in double.
// softmax_step: O = X W + b into a scratch buffer the caller keeps; a loop subtracting each row's max, torch's
//   vectorized exp_, a loop of row sums giving the cross-entropy logsumexp - O[y] and dO = (softmax - onehot) / n
//   written over O; then W -= lr * X^T dO in place and b -= lr * sum(dO) from sums of the row loop. For 10 classes
//   and W column-major (the form's case) by the own loops below (own_step: blocks of 32 rows, each block's logits,
//   softmax and gradient while its rows are in cache); otherwise the GEMMs are one BLAS call each (at::addmm_out;
//   W.addmm_ with beta 1, alpha -lr: the update rounds into W inside the GEMM).
// W (d, k) may be row-major or column-major (the transpose of nn.Linear's contiguous (k, d) weight). The form
// keeps it column-major: with k = 10 MKL's GEMMs run 2-4x faster so (one thread, n = 64..4096), and the own loops
// read each class's weights as one contiguous row.
// The only allocation of a step is the 0-dim loss it returns (and the scratch, when it grows).
// The checks are those of check_step_args (impls/common.py), with the same one-line messages, raised
// as ValueError; a class label outside 0..k-1 is refused before anything is updated.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace {

// A shape as Python prints a tuple: "(8, 2)", "(8,)" or "()".
std::string shape(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + (t.dim() == 1 ? ",)" : ")");
}

// A dtype as Python prints it ("torch.float32").
std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    default: return std::string("torch.") + c10::toString(t);
  }
}

// check_step_args (impls/common.py) in C++: same order, same messages; but the weight may also be column-major.
void check_args(const char* op, const at::Tensor& weight, const char* weight_name, const at::Tensor& b,
                const at::Tensor& X, const at::Tensor& y, at::ScalarType label_dtype, const at::Tensor& lr) {
  TORCH_CHECK_VALUE(X.dim() == 2 && X.size(0) >= 1, op, ": X must be (n, d) with n >= 1, got ", shape(X));
  const std::pair<const at::Tensor*, const char*> args[] = {{&weight, weight_name}, {&b, "b"}, {&X, "X"},
                                                            {&y, "y"}, {&lr, "lr"}};
  for (const auto& [t, name] : args) {
    const auto dtype = t == &y ? label_dtype : at::kFloat;
    TORCH_CHECK_VALUE(t->device() == X.device(), op, ": ", name, " is on ", t->device().str(), " but X is on ",
                      X.device().str());
    TORCH_CHECK_VALUE(t->scalar_type() == dtype, op, ": ", name, " must be ", dtype_name(dtype), ", got ",
                      dtype_name(t->scalar_type()));
    // the weight row-major, or column-major: the transpose of nn.Linear's contiguous (k, d) weight
    const bool column_major = t == &weight && t->dim() == 2 && t->stride(0) == 1 && t->stride(1) == t->size(0);
    TORCH_CHECK_VALUE(t->is_contiguous() || column_major, op, ": ", name, " must be contiguous",
                      t == &weight ? " or the transpose of a contiguous (k, d) tensor" : "");
  }
  TORCH_CHECK_VALUE(X.device().is_cpu(), op, ": X must be on the CPU, got ", X.device().str());
  const int64_t n = X.size(0), d = X.size(1);
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) == d, op, ": ", weight_name, " must be (", d, ", k) for X ",
                    shape(X), ", got ", shape(weight));
  const int64_t k = weight.size(1);
  TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == k, op, ": b must be (", k, ",), got ", shape(b));
  TORCH_CHECK_VALUE(y.dim() == 1 && y.size(0) == n, op, ": y must be (", n, ",), got ", shape(y));
  TORCH_CHECK_VALUE(lr.numel() == 1, op, ": lr must have one element, got ", shape(lr));
  if (label_dtype == at::kLong) {
    const int64_t* label = y.data_ptr<int64_t>();
    const auto [lo, hi] = std::minmax_element(label, label + n);
    TORCH_CHECK_VALUE(*lo >= 0 && *hi < k, op, ": labels must be in 0..", k - 1, ", got ", *lo, "..", *hi);
  }
}

at::Tensor scalar(double value, const at::Tensor& like) {
  auto out = at::empty({}, like.options());
  *out.data_ptr<float>() = static_cast<float>(value);
  return out;
}


// The two GEMMs of a softmax step for k = 10 classes (Fashion-MNIST's), W column-major (rows of W^T contiguous):
// MKL's sgemm ran these shapes (256 x 784 by 784 x 10) at 85-190 us each on the 2-core EPYC, a tenth of its peak,
// so they are written out here, 8 features at a time in vector registers with the 10 classes' sums held across
// the loop (block_logits, block_grad), and the pixels of the epoch path converted a block at a time (block_pixels).
// Built for AVX2 with FMA where the CPU has them (target_clones picks at load time), plain x86-64 otherwise.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LINBENCH_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LINBENCH_CLONES
#endif
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")

constexpr int kLanes = 8;
constexpr int kClasses = 10;
typedef float v8 __attribute__((vector_size(kLanes * sizeof(float))));

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(float* p, v8 v) { std::memcpy(p, &v, sizeof v); }

// O[r] = X[r] W + b for the m rows of a block X (m, d); W as its rows Wt (10, d).
LINBENCH_CLONES void block_logits(const float* X, int64_t m, int64_t d, const float* Wt, const float* b, float* O) {
  for (int64_t r = 0; r < m; ++r) {
    const float* x = X + r * d;
    v8 acc[kClasses] = {};
    int64_t i = 0;
    for (; i + kLanes <= d; i += kLanes) {
      const v8 xv = load8(x + i);
      for (int j = 0; j < kClasses; ++j) acc[j] += xv * load8(Wt + j * d + i);
    }
    for (int j = 0; j < kClasses; ++j) {
      float sum = 0.f;
      for (int l = 0; l < kLanes; ++l) sum += acc[j][l];
      for (int64_t t = i; t < d; ++t) sum += x[t] * Wt[j * d + t];
      O[r * kClasses + j] = sum + b[j];
    }
  }
}

// Rows ``which`` (m of them) of a uint8 split X (N, d) into out (m, d) as float32, each pixel divided by div (IEEE
// division, lane by lane: the step path's copy_ and div_); the next row's lines fetched while one is converted.
// (float(double(v) * (1 / div)), the same floats for div 255, took 0.058 s an epoch against the division's 0.043.)
LINBENCH_CLONES void block_pixels(const uint8_t* X, const int64_t* which, int64_t m, int64_t d, float div,
                                  float* out) {
  for (int64_t r = 0; r < m; ++r) {
    if (r + 1 < m) {
      const uint8_t* next = X + which[r + 1] * d;
      for (int64_t i = 0; i < d; i += 64) __builtin_prefetch(next + i);
    }
    const uint8_t* src = X + which[r] * d;
    float* o = out + r * d;
    for (int64_t i = 0; i < d; ++i) o[i] = static_cast<float>(src[i]) / div;
  }
}

// G (10, d) += dO^T X over the m rows of a block: per 8 features the 10 classes' sums in registers.
LINBENCH_CLONES void block_grad(const float* X, int64_t m, int64_t d, const float* dO, float* G) {
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
    v8 acc[kClasses] = {};
    for (int64_t r = 0; r < m; ++r) {
      const v8 xv = load8(X + r * d + i);
      const float* g = dO + r * kClasses;
      for (int j = 0; j < kClasses; ++j) acc[j] += xv * g[j];
    }
    for (int j = 0; j < kClasses; ++j) store8(G + j * d + i, load8(G + j * d + i) + acc[j]);
  }
  for (; i < d; ++i) {
    for (int j = 0; j < kClasses; ++j) {
      float sum = 0.f;
      for (int64_t r = 0; r < m; ++r) sum += X[r * d + i] * dO[r * kClasses + j];
      G[j * d + i] += sum;
    }
  }
}

#pragma GCC pop_options

// Whether the own kernels take W (d, k): 10 classes, W column-major.
bool own_weight(const at::Tensor& W) {
  return W.size(1) == kClasses && W.stride(0) == 1 && W.stride(1) == W.size(0);
}

// The middle of a softmax step, on the logits O (n, k) of n rows of a batch of ``batch`` rows, with labels
// ``label``: each row's cross-entropy (summed into the returned double) and dO = (softmax - onehot) / batch
// written over O, its column sums added to grad_b.
double softmax_grad(at::Tensor& O, const int64_t* label, int64_t n, int64_t batch,
                    c10::SmallVector<double, 16>& grad_b) {
  const int64_t k = O.size(1);
  float* o = O.data_ptr<float>();
  const float inv_n = 1.0f / static_cast<float>(batch);
  double loss = 0.0;
  for (int64_t r = 0; r < n; ++r, o += k) {  // O - row max; the loss's -(O[y] - max) while it is there
    const float top = *std::max_element(o, o + k);
    for (int64_t j = 0; j < k; ++j) o[j] -= top;
    loss -= o[label[r]];
  }
  {  // exp in place: a plain loop (torch's exp_ on a block's few logits woke MKL's thread pool every time)
    float* e = O.data_ptr<float>();
    for (int64_t t = 0; t < n * k; ++t) e[t] = std::exp(e[t]);
  }
  o = O.data_ptr<float>();
  for (int64_t r = 0; r < n; ++r, o += k) {  // row sums: the loss's logsumexp part, and dO
    float total = 0.f;
    for (int64_t j = 0; j < k; ++j) total += o[j];
    loss += std::log(total);
    const float scale = inv_n / total;
    for (int64_t j = 0; j < k; ++j) o[j] *= scale;
    o[label[r]] -= inv_n;
    for (int64_t j = 0; j < k; ++j) grad_b[j] += o[j];
  }
  return loss;
}

// Rows r0..r0+m of a step as float32 rows into ``out``: a batch's own rows (no copy), or rows ``which`` of a uint8
// split, each pixel divided by ``div`` as the step path's copy_ and div_ do (static_cast<float>(v) / div, IEEE
// division), so both paths see the same floats.
struct FloatRows {
  const float* X;
  int64_t d;
  const float* block(int64_t r0, int64_t /*m*/, float* /*out*/) const { return X + r0 * d; }
};

struct PixelRows {
  const uint8_t* X;
  const int64_t* which;
  int64_t d;
  float div;
  const float* block(int64_t r0, int64_t m, float* out) const {
    block_pixels(X, which + r0, m, d, div, out);
    return out;
  }
};

constexpr int64_t kBlock = 32;  // rows a block: its float rows (100 KB at d = 784) stay in L2 from logits to gradient
// blocks a thread takes at least (128 rows): a batch of 256 on two threads (on the 2-core EPYC the b256 epoch took
// 0.032 s on two, 0.046 s on one)
constexpr int64_t kParallelBlocks = 128 / kBlock;

// A softmax step by the own kernels on the n rows of ``X``, W (d, 10) column-major and b updated in place, O the
// (n, 10) scratch; returns the summed loss. Blocks of rows, parallel over blocks: each block's logits, softmax and
// dO, then its part of the gradient into its thread's G, while its rows are still in cache; then the threads' G
// summed in thread order and W -= lr * G. The same loops for a batch's float rows and for a split's pixels read
// by index, so both paths give the same bits (at a given thread count).
template <class Rows>
double own_step(const Rows& X, int64_t n, int64_t d, at::Tensor& W, at::Tensor& b, const int64_t* label, float rate,
                at::Tensor& O) {
  float* Wt = W.data_ptr<float>();
  float* bp = b.data_ptr<float>();
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  // the threads parallel_for uses: at most one per kParallelBlocks blocks (one below 2 x 256 rows)
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), (blocks + kParallelBlocks - 1) / kParallelBlocks);
  thread_local std::vector<float> grads;  // each thread's gradient, kept from step to step (zeroed here)
  grads.assign(threads * kClasses * d, 0.f);
  float* G = grads.data();  // the caller's buffer: the name inside the loop would be each thread's own vector
  std::vector<double> loss(threads, 0.0), grad_b(threads * kClasses, 0.0);
  at::parallel_for(0, blocks, kParallelBlocks, [&](int64_t lo, int64_t hi) {
    const int64_t t = at::get_thread_num();
    thread_local std::vector<float> rows;
    rows.resize(kBlock * d);
    c10::SmallVector<double, 16> gb(kClasses, 0.0);
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t r0 = blk * kBlock, m = std::min(kBlock, n - r0);
      const float* x = X.block(r0, m, rows.data());
      block_logits(x, m, d, Wt, bp, O.data_ptr<float>() + r0 * kClasses);
      at::Tensor part = O.narrow(0, r0, m);
      loss[t] += softmax_grad(part, label + r0, m, n, gb);
      block_grad(x, m, d, part.data_ptr<float>(), G + t * kClasses * d);
    }
    for (int j = 0; j < kClasses; ++j) grad_b[t * kClasses + j] += gb[j];
  });
  double total = 0.0;
  for (int64_t t = 0; t < threads; ++t) total += loss[t];
  for (int64_t t = 1; t < threads; ++t) {  // the threads' gradients summed in thread order
    for (int64_t e = 0; e < kClasses * d; ++e) G[e] += G[t * kClasses * d + e];
  }
  for (int64_t j = 0; j < kClasses; ++j) {
    for (int64_t i = 0; i < d; ++i) Wt[j * d + i] -= rate * G[j * d + i];
    double sum = 0.0;
    for (int64_t t = 0; t < threads; ++t) sum += grad_b[t * kClasses + j];
    bp[j] = static_cast<float>(bp[j] - rate * sum);
  }
  return total;
}

}  // namespace

at::Tensor linreg_step(at::Tensor w, at::Tensor b, const at::Tensor& X, const at::Tensor& y, const at::Tensor& lr) {
  constexpr const char* op = "linbench_native::linreg_step";
  check_args(op, w, "w", b, X, y, at::kFloat, lr);
  TORCH_CHECK_VALUE(w.size(1) == 1, op, ": w must be (d, 1), got ", shape(w));
  const int64_t n = X.size(0), d = X.size(1);
  const float* x = X.data_ptr<float>();
  const float* target = y.data_ptr<float>();
  float* wp = w.data_ptr<float>();
  float* bp = b.data_ptr<float>();
  c10::SmallVector<double, 16> grad(d, 0.0);  // sum of r * x over the rows
  double grad_b = 0.0, loss = 0.0;
  for (int64_t r = 0; r < n; ++r, x += d) {
    float res = bp[0] - target[r];
    for (int64_t i = 0; i < d; ++i) res += x[i] * wp[i];
    for (int64_t i = 0; i < d; ++i) grad[i] += static_cast<double>(res) * x[i];
    grad_b += res;
    loss += static_cast<double>(res) * res / 2;
  }
  const double step = *lr.data_ptr<float>() / static_cast<double>(n);
  for (int64_t i = 0; i < d; ++i) wp[i] = static_cast<float>(wp[i] - step * grad[i]);
  bp[0] = static_cast<float>(bp[0] - step * grad_b);
  return scalar(loss / n, X);
}

// ``scratch``: a float32 CPU tensor whose storage holds O and then dO; resized to (n, k), so it grows to the
// largest batch seen and a smaller (ragged) batch reuses it. An undefined one (None) is allocated here.
at::Tensor softmax_step(at::Tensor W, at::Tensor b, const at::Tensor& X, const at::Tensor& y, const at::Tensor& lr,
                        c10::optional<at::Tensor> scratch) {
  constexpr const char* op = "linbench_native::softmax_step";
  check_args(op, W, "W", b, X, y, at::kLong, lr);
  const int64_t n = X.size(0), k = W.size(1);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  at::Tensor O = scratch.has_value() && scratch->defined() ? *scratch : at::empty({n, k}, X.options());
  TORCH_CHECK_VALUE(O.scalar_type() == at::kFloat && O.device().is_cpu(), op, ": scratch must be a float32 CPU "
                    "tensor, got ", dtype_name(O.scalar_type()), " on ", O.device().str());
  O.resize_({n, k});
  const float rate = *lr.data_ptr<float>();
  const int64_t* label = y.data_ptr<int64_t>();
  double loss;
  if (own_weight(W) && X.is_contiguous()) {
    loss = own_step(FloatRows{X.data_ptr<float>(), X.size(1)}, n, X.size(1), W, b, label, rate, O);
  } else {
    at::addmm_out(O, b, X, W);  // O = b + X W
    c10::SmallVector<double, 16> grad_b(k, 0.0);
    loss = softmax_grad(O, label, n, n, grad_b);
    W.addmm_(X.t(), O, 1.0, -rate);  // W -= lr * X^T dO, in place
    float* bp = b.data_ptr<float>();
    for (int64_t j = 0; j < k; ++j) bp[j] = static_cast<float>(bp[j] - rate * grad_b[j]);
  }
  return scalar(loss / n, X);
}

namespace {

// What FusedStepForm.step (impls/common.py) does before its op, in C++: X as (n, d) float32 and y as (n,) of the
// label dtype, both contiguous. For what the loaders give ((n, 1, 28, 28) images, (n, 1) targets) these are views
// or no-ops; a batch the op would refuse is passed on as it is, for the op's message.
std::pair<at::Tensor, at::Tensor> as_op_args(const at::Tensor& X, const at::Tensor& y, at::ScalarType label_dtype) {
  if (X.dim() < 2 || X.numel() == 0 || y.numel() != X.size(0)) return {X, y};
  const at::Tensor rows = X.dim() == 2 ? X : X.reshape({X.size(0), -1});
  const at::Tensor labels = y.dim() == 1 ? y : y.reshape({-1});
  return {rows.to(at::kFloat).contiguous(), labels.to(label_dtype).contiguous()};
}

}  // namespace

at::Tensor linreg_form_step(at::Tensor w, at::Tensor b, const at::Tensor& X, const at::Tensor& y,
                            const at::Tensor& lr, const c10::optional<at::Tensor>& /*scratch*/) {
  const auto [rows, targets] = as_op_args(X, y, at::kFloat);
  return linreg_step(std::move(w), std::move(b), rows, targets, lr);
}

at::Tensor softmax_form_step(at::Tensor W, at::Tensor b, const at::Tensor& X, const at::Tensor& y,
                             const at::Tensor& lr, c10::optional<at::Tensor> scratch) {
  const auto [rows, labels] = as_op_args(X, y, at::kLong);
  return softmax_step(std::move(W), std::move(b), rows, labels, lr, std::move(scratch));
}

// A stack of dense layers (the d2l 4.2 MLP: 784 -> 256 -> 10 with ReLU between), one SGD step as ATen calls: the
// forward GEMMs (at::addmm), ReLU, log_softmax and the loss; dO = (softmax - onehot) / n (or the residual / n of a
// squared loss); then layer by layer from the top the bias gradient (a column sum), the gradient into the layer
// below (one GEMM through W before its update, masked where the ReLU was off), the update W -= lr * input^T d as
// one GEMM into W in place (W.addmm_, as softmax_step: no gradient tensor) and b -= lr * gb. No autograd graph,
// no optimizer, no Python between the ops. params: W0, b0, W1, b1, ... (W (in, out), float32, contiguous); X a loader's batch (flattened here); y int64 labels (classes) or float
// targets. Labels outside 0..k-1 are refused before anything is updated.
at::Tensor stack_form_step(std::vector<at::Tensor> params, const at::Tensor& X, const at::Tensor& y,
                           const at::Tensor& lr, bool relu, bool classes) {
  constexpr const char* op = "linbench_native::stack_step";
  TORCH_CHECK_VALUE(!params.empty() && params.size() % 2 == 0, op, ": params must be W, b pairs, got ",
                    params.size(), " tensors");
  const auto [rows, target] = as_op_args(X, y, classes ? at::kLong : at::kFloat);
  const size_t layers = params.size() / 2;
  TORCH_CHECK_VALUE(rows.dim() == 2 && rows.size(0) >= 1 && rows.device().is_cpu(), op,
                    ": X must be (n, d) on the CPU with n >= 1, got ", shape(rows));
  TORCH_CHECK_VALUE(rows.scalar_type() == at::kFloat && target.dim() == 1 && target.size(0) == rows.size(0), op,
                    ": X must be float32 with one label or target per row, got ", shape(rows), " and ", shape(target));
  int64_t width = rows.size(1);
  for (size_t l = 0; l < layers; ++l) {
    const at::Tensor &W = params[2 * l], &b = params[2 * l + 1];
    TORCH_CHECK_VALUE(W.dim() == 2 && W.size(0) == width && b.dim() == 1 && b.size(0) == W.size(1), op, ": layer ",
                      l, " must be W (", width, ", k) and b (k,), got ", shape(W), " and ", shape(b));
    TORCH_CHECK_VALUE(W.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat && W.is_contiguous() &&
                      b.is_contiguous() && W.device().is_cpu() && b.device().is_cpu(), op, ": layer ", l,
                      " must be contiguous float32 on the CPU");
    width = W.size(1);
  }
  TORCH_CHECK_VALUE(lr.numel() == 1, op, ": lr must have one element, got ", shape(lr));
  if (classes) {
    const int64_t* label = target.data_ptr<int64_t>();
    const auto [lo, hi] = std::minmax_element(label, label + target.size(0));
    TORCH_CHECK_VALUE(*lo >= 0 && *hi < width, op, ": labels must be in 0..", width - 1, ", got ", *lo, "..", *hi);
  }
  const int64_t n = rows.size(0);
  const float step = lr.item<float>();
  std::vector<at::Tensor> inputs;
  at::Tensor H = rows;
  for (size_t l = 0; l < layers; ++l) {
    if (l && relu) H = at::relu(H);
    inputs.push_back(H);
    H = at::addmm(params[2 * l + 1], H, params[2 * l]);
  }
  at::Tensor loss, d;
  if (classes) {
    const at::Tensor logp = at::log_softmax(H, 1);
    const at::Tensor labels = target.view({-1, 1});
    loss = -logp.gather(1, labels).mean();
    d = logp.exp_();
    d.scatter_add_(1, labels, at::full({n, 1}, -1.0f, d.options()));
  } else {
    d = H - target.view({n, -1});
    loss = d.square().sum().div_(2.0 * n);
  }
  d.div_(static_cast<double>(n));
  for (size_t l = layers; l-- > 0;) {
    at::Tensor& W = params[2 * l];
    const at::Tensor gb = d.sum(0);
    at::Tensor below;  // the gradient into the layer below, through W before its update
    if (l) {
      below = d.mm(W.t());
      if (relu) below = at::threshold_backward(below, inputs[l], 0);
    }
    W.addmm_(inputs[l].t(), d, 1.0, -step);  // W -= lr * input^T d, in place: no gradient tensor
    params[2 * l + 1].sub_(gb, step);
    d = below;
  }
  return loss;
}

namespace {

// Rows ``which`` (n of them) of ``rows`` (N, d), uint8 or float32, into out (n, d) float32, each value divided by
// ``divisor``: in one pass, parallel over the rows, the same float arithmetic as index_select_out, copy_ to float32
// and div_ (static_cast<float>(v) / static_cast<float>(divisor), IEEE division), so the same bits.
void gather_rows(const at::Tensor& rows, const int64_t* which, int64_t n, double divisor, at::Tensor& out) {
  const int64_t d = rows.size(1);
  float* dst = out.data_ptr<float>();
  const float div = static_cast<float>(divisor);
  if (rows.scalar_type() == at::kByte) {
    const uint8_t* src = rows.data_ptr<uint8_t>();  // the same conversion as the softmax epoch's blocks
    at::parallel_for(0, n, 16, [&](int64_t lo, int64_t hi) {
      block_pixels(src, which + lo, hi - lo, d, div, dst + lo * d);
    });
    return;
  }
  const float* src = rows.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const float* s = src + which[r] * d;
      float* o = dst + r * d;
      if (divisor == 1.0) {
        std::copy(s, s + d, o);
      } else {
        for (int64_t i = 0; i < d; ++i) o[i] = s[i] / div;
      }
    }
  });
}

}  // namespace

// The native form's epoch (its train_epoch hook): every step of one resident epoch in one call, no Python between
// the steps. Batch i is rows order[i*B:(i+1)*B] of X (N, ...), uint8 pixels or float rows, gathered,
// converted to float32 and divided by divisor (as ToTensor scales pixels) in one parallel pass into a buffer kept
// for the epoch, with the arithmetic of the step path's index_select, copy_ and div_ (gather_rows); then the model's
// step exactly as the step path takes it (linreg_step, softmax_step or stack_form_step on the gathered batch), so
// the two paths agree bit for bit. Returns
// the steps' losses (steps,). kind: "squared" (linreg_step; params w, b), "cross_entropy" (softmax_step; W, b, W
// may be column-major) or "stack" (stack_form_step; W0, b0, W1, b1, ...). Every index is checked before the first
// step (a bad one is a ValueError, nothing updated).
at::Tensor form_epoch(const std::string& kind, std::vector<at::Tensor> params, const at::Tensor& X,
                      const at::Tensor& y, const at::Tensor& order, int64_t batch_size, double divisor,
                      const at::Tensor& lr, c10::optional<at::Tensor> scratch, bool relu, bool classes) {
  constexpr const char* op = "linbench_native::form_epoch";
  TORCH_CHECK_VALUE(kind == "squared" || kind == "cross_entropy" || kind == "stack", op,
                    ": kind must be squared, cross_entropy or stack, got ", kind);
  TORCH_CHECK_VALUE(kind == "stack" || params.size() == 2, op, ": a fused kind takes its weight and b, got ",
                    params.size(), " tensors");
  TORCH_CHECK_VALUE(X.dim() >= 2 && X.device().is_cpu() && (X.scalar_type() == at::kByte ||
                    X.scalar_type() == at::kFloat), op, ": X must be (N, ...) uint8 or float32 on the CPU, got ",
                    shape(X), " ", dtype_name(X.scalar_type()));
  TORCH_CHECK_VALUE(order.dim() == 1 && order.scalar_type() == at::kLong && order.device().is_cpu(), op,
                    ": order must be (steps * B,) int64 on the CPU, got ", shape(order), " ",
                    dtype_name(order.scalar_type()));
  TORCH_CHECK_VALUE(batch_size >= 1 && divisor > 0, op, ": batch_size and divisor must be positive, got ",
                    batch_size, " and ", divisor);
  const int64_t N = X.size(0), total = order.size(0);
  TORCH_CHECK_VALUE(y.numel() == N, op, ": y must hold one label or target per row of X (", N, "), got ",
                    shape(y));
  const at::Tensor rows = X.reshape({N, -1}).contiguous();
  const at::Tensor labels = y.reshape({-1}).to(classes ? at::kLong : at::kFloat).contiguous();
  const int64_t* idx = order.data_ptr<int64_t>();
  if (total) {
    const auto [lo, hi] = std::minmax_element(idx, idx + total);
    TORCH_CHECK_VALUE(*lo >= 0 && *hi < N, op, ": order's rows must be in 0..", N - 1, ", got ", *lo, "..", *hi);
  }
  const int64_t d = rows.size(1), B = std::min(batch_size, std::max<int64_t>(total, 1));
  at::Tensor Xb = at::empty({B, d}, rows.options().dtype(at::kFloat));
  at::Tensor yb = at::empty({B}, labels.options());
  const int64_t steps = (total + batch_size - 1) / batch_size;
  at::Tensor losses = at::empty({steps}, rows.options().dtype(at::kFloat));
  float* loss = losses.data_ptr<float>();
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  // softmax on pixels with the own kernels: each step reads its rows from the split by index (no gathered batch)
  const bool pixels = kind == "cross_entropy" && rows.scalar_type() == at::kByte && own_weight(params[0]);
  at::Tensor O;
  PixelRows pixel_rows{};
  if (pixels) {
    pixel_rows = PixelRows{rows.data_ptr<uint8_t>(), idx, d, static_cast<float>(divisor)};
    at::Tensor &W = params[0], &b = params[1];
    TORCH_CHECK_VALUE(W.scalar_type() == at::kFloat && W.size(0) == d && b.scalar_type() == at::kFloat &&
                      b.dim() == 1 && b.size(0) == kClasses && b.is_contiguous() && lr.numel() == 1 &&
                      lr.scalar_type() == at::kFloat, op, ": W must be float32 (", d, ", ", kClasses,
                      "), b float32 (", kClasses, ",) and lr one float32, got ", shape(W), ", ", shape(b), " and ",
                      shape(lr));
    O = scratch.has_value() && scratch->defined() ? *scratch : at::empty({B, kClasses}, Xb.options());
  }
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t first = s * batch_size, n = std::min(batch_size, total - first);
    const at::Tensor which = order.narrow(0, first, n);
    at::Tensor ys = yb.narrow(0, 0, n);
    if (pixels) {  // the labels by a plain loop: no ATen call (and no thread pool woken) between the steps
      int64_t* label = ys.data_ptr<int64_t>();
      const int64_t* all = labels.data_ptr<int64_t>();
      for (int64_t r = 0; r < n; ++r) label[r] = all[idx[first + r]];
      const auto [lo, hi] = std::minmax_element(label, label + n);
      TORCH_CHECK_VALUE(*lo >= 0 && *hi < kClasses, "linbench_native::softmax_step: labels must be in 0..",
                        kClasses - 1, ", got ", *lo, "..", *hi);
      O.resize_({n, kClasses});
      PixelRows step_rows = pixel_rows;
      step_rows.which = idx + first;
      const double sum = own_step(step_rows, n, d, params[0], params[1], label, *lr.data_ptr<float>(), O);
      loss[s] = static_cast<float>(sum / n);  // as softmax_step's scalar(loss / n)
      continue;
    }
    at::index_select_out(ys, labels, 0, which);
    at::Tensor Xs = Xb.narrow(0, 0, n);
    gather_rows(rows, idx + first, n, divisor, Xs);  // into a buffer kept for the epoch
    at::Tensor l;
    if (kind == "squared") {
      l = linreg_step(params[0], params[1], Xs, ys, lr);
    } else if (kind == "cross_entropy") {
      l = softmax_step(params[0], params[1], Xs, ys, lr, scratch);
    } else {
      l = stack_form_step(params, Xs, ys, lr, relu, classes);
    }
    loss[s] = l.item<float>();
  }
  return losses;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linreg_step", &linreg_step, "fused linreg SGD step (updates w, b in place; returns the mean loss)",
        pybind11::arg("w"), pybind11::arg("b"), pybind11::arg("X"), pybind11::arg("y"), pybind11::arg("lr"));
  m.def("softmax_step", &softmax_step,
        "fused softmax SGD step (updates W, b in place; returns the mean loss); scratch: O/dO storage kept "
        "between calls",
        pybind11::arg("W"), pybind11::arg("b"), pybind11::arg("X"), pybind11::arg("y"), pybind11::arg("lr"),
        pybind11::arg("scratch") = pybind11::none());
  m.def("linreg_form_step", &linreg_form_step, "the native form's linreg step: a loader's batch, then linreg_step");
  m.def("softmax_form_step", &softmax_form_step, "the native form's softmax step: a loader's batch, then softmax_step");
  m.def("stack_form_step", &stack_form_step, "the native form's step of a stack of dense layers (updates params in "
        "place; returns the mean loss)", pybind11::arg("params"), pybind11::arg("X"), pybind11::arg("y"),
        pybind11::arg("lr"), pybind11::arg("relu"), pybind11::arg("classes"));
  m.def("form_epoch", &form_epoch, "the native form's epoch: every step of one resident epoch (rows gathered by "
        "index and scaled in C++); returns the steps' losses",
        pybind11::arg("kind"), pybind11::arg("params"), pybind11::arg("X"), pybind11::arg("y"),
        pybind11::arg("order"), pybind11::arg("batch_size"), pybind11::arg("divisor"), pybind11::arg("lr"),
        pybind11::arg("scratch"), pybind11::arg("relu"), pybind11::arg("classes"));
}
