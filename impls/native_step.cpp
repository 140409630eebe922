// Fused fp32 SGD steps of d2l ch. 3 on the CPU, for the `native` form (impls/native.py); and, for models of more
// than one layer (the MLP of d2l 4.2), the step of a stack of dense layers as ATen calls (stack_form_step, below).
//
// One call per step, below autograd (no graph, no version counters), no Python between the ops:
// linreg_step: plain loops over the rows (d is 2): residual r = X w + b - y, loss mean(r^2)/2,
//   w -= lr * X^T r / n, b -= lr * mean(r); sums in double.
// softmax_step: O = X W + b by one BLAS call (at::addmm_out) into a scratch buffer the caller keeps;
//   a loop subtracting each row's max, torch's vectorized exp_ over the buffer, a loop of row sums giving
//   the cross-entropy logsumexp - O[y] and dO = (softmax - onehot) / n written over O; then
//   W -= lr * X^T dO by one BLAS call updating W in place (W.addmm_ with beta 1, alpha -lr) and
//   b -= lr * sum(dO) from sums of the row loop.
// W (d, k) may be row-major or column-major (the transpose of nn.Linear's contiguous (k, d) weight). The form
// keeps it column-major: with k = 10 the two GEMMs run 2-4x faster so (MKL, one thread, n = 64..4096).
// The fused update rounds into W inside the GEMM: the weights end up about 10x further from the fp64 oracle
// than with a separate gradient and update (still a fifth of the gate's tolerance).
// The only allocation of a step is the 0-dim loss it returns (and the scratch, when it grows).
// The checks are those of check_step_args (impls/common.py), with the same one-line messages, raised
// as ValueError; a class label outside 0..k-1 is refused before anything is updated.
#include <ATen/ATen.h>
#include <c10/util/SmallVector.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
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
  at::addmm_out(O, b, X, W);  // O = b + X W
  float* o = O.data_ptr<float>();
  const int64_t* label = y.data_ptr<int64_t>();
  const float inv_n = 1.0f / static_cast<float>(n);
  c10::SmallVector<double, 16> grad_b(k, 0.0);
  double loss = 0.0;
  for (int64_t r = 0; r < n; ++r, o += k) {  // O - row max; the loss's -(O[y] - max) while it is there
    const float top = *std::max_element(o, o + k);
    for (int64_t j = 0; j < k; ++j) o[j] -= top;
    loss -= o[label[r]];
  }
  O.exp_();  // torch's vectorized exp (the build has no -march flags, the library dispatches per CPU)
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
  const float rate = *lr.data_ptr<float>();
  W.addmm_(X.t(), O, 1.0, -rate);  // W -= lr * X^T dO, in place
  float* bp = b.data_ptr<float>();
  for (int64_t j = 0; j < k; ++j) bp[j] = static_cast<float>(bp[j] - rate * grad_b[j]);
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
// squared loss); then layer by layer from the top the weight gradient (one GEMM), the bias gradient (a column
// sum), the gradient into the layer below (one GEMM, masked where the ReLU was off) and the in-place update
// W -= lr * gW, b -= lr * gb. No autograd graph, no optimizer, no Python between the ops. params: W0, b0, W1, b1,
// ... (W (in, out), float32, contiguous); X a loader's batch (flattened here); y int64 labels (classes) or float
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
    const at::Tensor gW = inputs[l].t().mm(d);
    const at::Tensor gb = d.sum(0);
    if (l) {
      d = d.mm(W.t());
      if (relu) d.mul_(inputs[l] > 0);
    }
    W.sub_(gW, step);
    params[2 * l + 1].sub_(gb, step);
  }
  return loss;
}

// The native form's epoch (its train_epoch hook): every step of one resident epoch in one call, no Python between
// the steps. Batch i is rows order[i*B:(i+1)*B] of X (N, ...), uint8 pixels or float rows, made by the step path's
// own ATen kernels into buffers kept for the epoch (index_select_out, then copy_ to float32 and div_ by divisor
// as ToTensor scales pixels); then the model's step exactly as the step path takes it (linreg_step, softmax_step
// or stack_form_step on the gathered batch), so the two paths agree bit for bit. Returns
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
  at::Tensor picked = at::empty({B, d}, rows.options());  // the batch's rows as stored (uint8 or float)
  at::Tensor yb = at::empty({B}, labels.options());
  const int64_t steps = (total + batch_size - 1) / batch_size;
  at::Tensor losses = at::empty({steps}, rows.options().dtype(at::kFloat));
  float* loss = losses.data_ptr<float>();
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t first = s * batch_size, n = std::min(batch_size, total - first);
    const at::Tensor which = order.narrow(0, first, n);
    at::Tensor Xs = Xb.narrow(0, 0, n), ps = picked.narrow(0, 0, n);
    // the step path's own ATen kernels, into buffers kept for the epoch: gather, convert, divide
    at::index_select_out(ps, rows, 0, which);
    Xs.copy_(ps);
    if (divisor != 1.0) Xs.div_(divisor);
    at::Tensor ys = yb.narrow(0, 0, n);
    at::index_select_out(ys, labels, 0, which);
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
