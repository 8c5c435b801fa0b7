// The fused RK4 solver of model/kernels.py (MODEL.md Eq. 1, with the folded Hopfield coupling of
// Eqs. 3-4 after every step) for CPU tensors, as two C++ functions: the forward pass and its
// backward pass. model/kernels.py documents the notation and holds the same computation in
// Python (it runs on CUDA and wherever this file cannot be compiled); tests compare the two with
// the plain autograd loop.
//
// The elementwise work of each RK4 stage -- some ten operations in Python, each a pass over the
// batch -- is one loop here; the per-stage matrix products go straight to BLAS (the routine ATen's
// CPU matmul calls; ATen itself where libtorch does not export it); the sigmoid and exp are ATen's
// vectorised kernels; nothing returns to the Python interpreter between stages.

#include <torch/extension.h>

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>
#include <type_traits>
#include <vector>

// Matrix products straight into BLAS (the sgemm_/dgemm_ that ATen's own CPU matmul calls, taken from
// libtorch where it exports them): through ATen each small product of a stage also pays the
// dispatcher, a view per operand and, for addmm into another tensor, a copy of the bias.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*) __attribute__((weak));
}

namespace {

constexpr double kOffsets[3] = {0.5, 0.5, 1.0};                          // stage s+1 starts at x + c_s h k_s
constexpr double kWeights[4] = {1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0};  // weights of k_s in the step

// One forward stage after g = sigmoid(x_s W^T + d):
//   k = g (A - x_s) - x_s / tau;   sens = (A - x_s) g (1 - g)   (kept for the backward pass)
//   next = x + c h k (stages 0-2);  target = x + w_0 h k (stage 0), target += w_s h k (stages 1-3)
//   scaled = alpha target after the last stage (the alpha x' part of z = alpha x' + P V)
// The choices are template arguments, so that every variant is a branch-free, vectorised loop.
template <typename scalar_t, bool kSave, bool kNext, bool kFirst, bool kScaled>
void forward_loop(int64_t batch, int64_t width, scalar_t offset, scalar_t weight, const scalar_t* __restrict x,
                  const scalar_t* __restrict x_s, const scalar_t* __restrict g, const scalar_t* __restrict reversal,
                  const scalar_t* __restrict inverse_tau, scalar_t* __restrict sens, scalar_t* __restrict next,
                  scalar_t* __restrict target, scalar_t* __restrict scaled, scalar_t alpha) {
  for (int64_t row = 0; row < batch; ++row) {
    const int64_t o = row * width;
#pragma GCC ivdep
    for (int64_t j = 0; j < width; ++j) {
      const scalar_t xs = x_s[o + j];
      const scalar_t gate = g[o + j];
      const scalar_t pull = (reversal[j] - xs) * gate;
      if constexpr (kSave) sens[o + j] = pull - pull * gate;
      const scalar_t k = pull - inverse_tau[j] * xs;
      if constexpr (kNext) next[o + j] = x[o + j] + offset * k;
      scalar_t t;
      if constexpr (kFirst) {
        t = x[o + j] + weight * k;
      } else {
        t = target[o + j] + weight * k;
      }
      target[o + j] = t;
      if constexpr (kScaled) scaled[o + j] = alpha * t;
    }
  }
}

template <typename scalar_t>
void forward_stage(int64_t batch, int64_t width, int stage, scalar_t h, const scalar_t* x, const scalar_t* x_s,
                   const scalar_t* g, const scalar_t* reversal, const scalar_t* inverse_tau, scalar_t* sens,
                   scalar_t* next, scalar_t* target, scalar_t* scaled, scalar_t alpha) {
  const scalar_t offset = stage < 3 ? static_cast<scalar_t>(kOffsets[stage]) * h : scalar_t(0);
  const scalar_t weight = static_cast<scalar_t>(kWeights[stage]) * h;
  const auto run = [&](auto save) {
    constexpr bool kSave = decltype(save)::value;
    if (stage == 0) {
      forward_loop<scalar_t, kSave, true, true, false>(batch, width, offset, weight, x, x_s, g, reversal, inverse_tau,
                                                       sens, next, target, scaled, alpha);
    } else if (stage < 3) {
      forward_loop<scalar_t, kSave, true, false, false>(batch, width, offset, weight, x, x_s, g, reversal, inverse_tau,
                                                        sens, next, target, scaled, alpha);
    } else if (scaled != nullptr) {
      forward_loop<scalar_t, kSave, false, false, true>(batch, width, offset, weight, x, x_s, g, reversal,
                                                        inverse_tau, sens, next, target, scaled, alpha);
    } else {
      forward_loop<scalar_t, kSave, false, false, false>(batch, width, offset, weight, x, x_s, g, reversal,
                                                         inverse_tau, sens, next, target, scaled, alpha);
    }
  };
  if (sens != nullptr) {
    run(std::true_type{});
  } else {
    run(std::false_type{});
  }
}

// One backward stage: with dk = w_s h dx' + c_s h dx_{s+1} (the second term for stages 0-2),
//   grad_pre = dk sens, summed over stages into drive_sum (dL/dd);
//   column sums over the batch of g dk and x_s dk (this stage's parts of dL/dA and -dL/d(1/tau));
//   grad_input = -(g + 1/tau) dk, so that one in-place addmm after this loop makes it
//   dx_s = grad_pre W - (g + 1/tau) dk;
//   accumulated += dx_{s+1} (the previous stage's input gradient; stage 3 starts it from dx').
template <typename scalar_t, bool kHasNext>
void backward_loop(int64_t batch, int64_t width, scalar_t offset, scalar_t weight, const scalar_t* __restrict grad_x,
                   const scalar_t* __restrict grad_next, const scalar_t* __restrict sens,
                   const scalar_t* __restrict g, const scalar_t* __restrict x_s, const scalar_t* __restrict inverse_tau,
                   scalar_t* __restrict grad_pre, scalar_t* __restrict grad_input, scalar_t* __restrict drive_sum,
                   scalar_t* __restrict reversal_part, scalar_t* __restrict inverse_tau_part,
                   scalar_t* __restrict accumulated) {
  for (int64_t j = 0; j < width; ++j) reversal_part[j] = inverse_tau_part[j] = scalar_t(0);
  for (int64_t row = 0; row < batch; ++row) {
    const int64_t o = row * width;
#pragma GCC ivdep
    for (int64_t j = 0; j < width; ++j) {
      const int64_t i = o + j;
      scalar_t dk = weight * grad_x[i];
      if constexpr (kHasNext) dk += offset * grad_next[i];
      const scalar_t gs = dk * sens[i];
      grad_pre[i] = gs;
      drive_sum[i] += gs;
      const scalar_t gated = g[i] * dk;
      reversal_part[j] += gated;
      inverse_tau_part[j] += dk * x_s[i];
      grad_input[i] = -(gated + inverse_tau[j] * dk);
      if constexpr (kHasNext) {
        accumulated[i] += grad_next[i];
      } else {
        accumulated[i] = grad_x[i];
      }
    }
  }
}

template <typename scalar_t>
void backward_stage(int64_t batch, int64_t width, int stage, scalar_t h, const scalar_t* grad_x,
                    const scalar_t* grad_next, const scalar_t* sens, const scalar_t* g, const scalar_t* x_s,
                    const scalar_t* inverse_tau, scalar_t* grad_pre, scalar_t* grad_input, scalar_t* drive_sum,
                    scalar_t* reversal_part, scalar_t* inverse_tau_part, scalar_t* accumulated) {
  const scalar_t offset = stage < 3 ? static_cast<scalar_t>(kOffsets[stage]) * h : scalar_t(0);
  const scalar_t weight = static_cast<scalar_t>(kWeights[stage]) * h;
  if (grad_next != nullptr) {
    backward_loop<scalar_t, true>(batch, width, offset, weight, grad_x, grad_next, sens, g, x_s, inverse_tau,
                                  grad_pre, grad_input, drive_sum, reversal_part, inverse_tau_part, accumulated);
  } else {
    backward_loop<scalar_t, false>(batch, width, offset, weight, grad_x, grad_next, sens, g, x_s, inverse_tau,
                                   grad_pre, grad_input, drive_sum, reversal_part, inverse_tau_part, accumulated);
  }
}

// softmax over consecutive groups of `size` values (the slots of one head of one row), in two
// passes around ATen's vectorised exp: shift each group by its maximum, exp, divide by the sum.
// ATen's own softmax spends more time per group of 16 than on the arithmetic.
template <typename scalar_t>
void shift_by_group_max(int64_t groups, int64_t size, scalar_t* __restrict logits) {
  for (int64_t group = 0; group < groups; ++group) {
    scalar_t* values = logits + group * size;
    scalar_t largest = values[0];
    for (int64_t k = 1; k < size; ++k) largest = values[k] > largest ? values[k] : largest;
    for (int64_t k = 0; k < size; ++k) values[k] -= largest;
  }
}

template <typename scalar_t>
void normalise_groups(int64_t groups, int64_t size, scalar_t* __restrict weights) {
  for (int64_t group = 0; group < groups; ++group) {
    scalar_t* values = weights + group * size;
    scalar_t total = 0;
    for (int64_t k = 0; k < size; ++k) total += values[k];
    const scalar_t inverse = scalar_t(1) / total;
    for (int64_t k = 0; k < size; ++k) values[k] *= inverse;
  }
}

// Back through the softmax: dlogits = P (dP - sum_k P_k dP_k) per group.
template <typename scalar_t>
void softmax_backward_groups(int64_t groups, int64_t size, const scalar_t* __restrict weights,
                             const scalar_t* __restrict grad_weights, scalar_t* __restrict grad_logits) {
  for (int64_t group = 0; group < groups; ++group) {
    const int64_t o = group * size;
    scalar_t dot = 0;
    for (int64_t k = 0; k < size; ++k) dot += weights[o + k] * grad_weights[o + k];
    for (int64_t k = 0; k < size; ++k) grad_logits[o + k] = weights[o + k] * (grad_weights[o + k] - dot);
  }
}

template <typename scalar_t>
void add_into(int64_t count, scalar_t* __restrict target, const scalar_t* __restrict source) {
  for (int64_t i = 0; i < count; ++i) target[i] += source[i];
}

template <typename scalar_t>
void scale_into(int64_t count, scalar_t* __restrict target, const scalar_t* __restrict source, scalar_t factor) {
  for (int64_t i = 0; i < count; ++i) target[i] = factor * source[i];
}

// Buffers handed out again instead of fresh allocations: the stage buffers of one pass are
// megabytes, and freshly allocated per batch they come from the operating system each time, every
// page faulting on first touch (on this kind of machine that cost more than the arithmetic). A
// buffer is free again when nothing but the pool holds it or a view of it: once autograd has
// released what the forward pass saved, or the backward pass has returned. One pool per thread.
class Pool {
 public:
  at::Tensor take(at::IntArrayRef shape, const at::TensorOptions& options) {
    auto& entries = free_[Key{shape.vec(), options.dtype().toScalarType(), c10::InferenceMode::is_enabled()}];
    for (const at::Tensor& entry : entries) {
      if (entry.use_count() == 1 && entry.storage().use_count() == 1) return entry;
    }
    at::Tensor fresh = at::empty(shape, options);
    if (entries.size() < kPerShape) entries.push_back(fresh);
    return fresh;
  }

  at::Tensor zeros(at::IntArrayRef shape, const at::TensorOptions& options) { return take(shape, options).zero_(); }

 private:
  // tensors made under inference mode may only be written there, so they are pooled apart
  using Key = std::tuple<std::vector<int64_t>, at::ScalarType, bool>;
  static constexpr size_t kPerShape = 8;
  std::map<Key, std::vector<at::Tensor>> free_;
};

Pool& pool() {
  static thread_local Pool* instance = new Pool();  // never destroyed: no tensor outlives libtorch at exit
  return *instance;
}

template <typename scalar_t>
scalar_t* data(const at::Tensor& tensor) {
  return tensor.defined() ? tensor.data_ptr<scalar_t>() : nullptr;
}

// op(X) for a row-major X: its data, whether op transposes it, and its leading dimension.
template <typename scalar_t>
struct Operand {
  const scalar_t* data;
  bool transposed;
  int64_t ld;
};

template <typename scalar_t>
Operand<scalar_t> rows_of(const scalar_t* data, int64_t columns) {
  return {data, false, columns};
}

// A 2-D tensor that is row-major or the transpose of a row-major one (callers make sure).
template <typename scalar_t>
Operand<scalar_t> operand(const at::Tensor& matrix) {
  if (matrix.stride(1) == 1) return {matrix.data_ptr<scalar_t>(), false, std::max<int64_t>(matrix.stride(0), 1)};
  TORCH_CHECK(matrix.stride(0) == 1, "operand must be row-major or transposed row-major");
  return {matrix.data_ptr<scalar_t>(), true, std::max<int64_t>(matrix.stride(1), 1)};
}

template <typename scalar_t>
Operand<scalar_t> transposed(Operand<scalar_t> op) {
  op.transposed = !op.transposed;
  return op;
}

at::Tensor blas_ready(const at::Tensor& matrix) {
  return matrix.stride(1) == 1 || matrix.stride(0) == 1 ? matrix : matrix.contiguous();
}

bool blas_allowed = true;  // tests turn it off to run the ATen path a torch without these symbols takes

template <typename scalar_t>
auto blas_gemm() {
  using Function = decltype(&sgemm_);
  if constexpr (std::is_same_v<scalar_t, float>) {
    return blas_allowed ? &sgemm_ : static_cast<Function>(nullptr);
  } else {
    return blas_allowed ? &dgemm_ : static_cast<decltype(&dgemm_)>(nullptr);
  }
}

// out (m x n, row-major) = op(a) (m x k) op(b) (k x n) + beta out   (beta 0: out is only written)
template <typename scalar_t>
void gemm(int64_t m, int64_t n, int64_t k, const Operand<scalar_t>& a, const Operand<scalar_t>& b, scalar_t beta,
          scalar_t* out, const at::TensorOptions& options) {
  const auto blas = blas_gemm<scalar_t>();
  constexpr int64_t kLimit = std::numeric_limits<int>::max();
  if (blas != nullptr && m < kLimit && n < kLimit && k < kLimit && a.ld < kLimit && b.ld < kLimit) {
    // column-major BLAS sees each row-major matrix transposed: out^T = op(b)^T op(a)^T
    const char trans_b = b.transposed ? 'T' : 'N', trans_a = a.transposed ? 'T' : 'N';
    const int rows = static_cast<int>(n), columns = static_cast<int>(m), inner = static_cast<int>(k);
    const int ld_b = static_cast<int>(b.ld), ld_a = static_cast<int>(a.ld), ld_out = static_cast<int>(n);
    const scalar_t one = 1;
    blas(&trans_b, &trans_a, &rows, &columns, &inner, &one, b.data, &ld_b, a.data, &ld_a, &beta, out, &ld_out);
    return;
  }
  const auto view = [&](const Operand<scalar_t>& op, int64_t r, int64_t c) {  // op(X) as an r x c tensor
    auto* data = const_cast<scalar_t*>(op.data);
    return op.transposed ? at::from_blob(data, {c, r}, {op.ld, 1}, options).t()
                         : at::from_blob(data, {r, c}, {op.ld, 1}, options);
  };
  at::Tensor result = at::from_blob(out, {m, n}, options);
  if (beta == scalar_t(0)) {
    at::mm_out(result, view(a, m, k), view(b, k, n));
  } else {
    at::addmm_out(result, result, view(a, m, k), view(b, k, n), beta, 1);
  }
}

template <typename scalar_t>
at::Tensor wrap(scalar_t* data, at::IntArrayRef shape, const at::TensorOptions& options) {
  return at::from_blob(data, shape, options);
}

}  // namespace

// Forward pass. With `save`, every stage is kept (returned after the output, for backward):
// stage inputs, gates, sensitivities and, with memory, the pre-coupling states and attention.
std::vector<at::Tensor> integrate_forward(const c10::optional<at::Tensor>& initial, const at::Tensor& drive,
                                          const at::Tensor& weight, const at::Tensor& reversal,
                                          const at::Tensor& inverse_tau, const c10::optional<at::Tensor>& keys,
                                          const c10::optional<at::Tensor>& values, const c10::optional<at::Tensor>& alpha,
                                          int64_t steps, double step_size, int64_t heads, bool save) {
  TORCH_CHECK(drive.device().is_cpu() && drive.is_contiguous(), "drive must be a contiguous CPU tensor");
  const int64_t batch = drive.size(0), width = drive.size(1), count = batch * width;
  const bool memory = keys.has_value();
  const auto options = drive.options();
  const int64_t slots = save ? 4 * steps : 4;
  at::Tensor stage_inputs = pool().take({slots, batch, width}, options);
  at::Tensor gates = pool().take({save ? slots : 1, batch, width}, options);
  at::Tensor sens = save ? pool().take({slots, batch, width}, options) : at::Tensor();
  at::Tensor pre_coupling, attention, logits;
  int64_t total_slots = 0;
  if (memory) {
    total_slots = keys->size(1);
    pre_coupling = pool().take({save ? steps : 1, batch, width}, options);
    attention = pool().take({save ? steps : 1, batch, total_slots}, options);
    logits = pool().take({batch, total_slots}, options);
  }
  std::vector<at::Tensor> spare;
  if (!save) spare = {pool().take({batch, width}, options), pool().take({batch, width}, options)};
  at::Tensor output = at::empty({batch, width}, options);  // never pooled: the caller keeps it
  const at::Tensor weight_c = blas_ready(weight);
  const at::Tensor keys_c = memory ? blas_ready(*keys) : at::Tensor();
  const at::Tensor values_c = memory ? blas_ready(*values) : at::Tensor();
  const at::Tensor reversal_c = reversal.contiguous(), inverse_tau_c = inverse_tau.contiguous();

  if (initial.has_value()) {
    stage_inputs[0].copy_(*initial);
  } else {
    stage_inputs[0].zero_();
  }
  AT_DISPATCH_FLOATING_TYPES(drive.scalar_type(), "integrate_forward", [&] {
    const scalar_t h = static_cast<scalar_t>(step_size);
    const scalar_t alpha_value = memory ? alpha->item<scalar_t>() : scalar_t(1);
    scalar_t* inputs = data<scalar_t>(stage_inputs);
    scalar_t* gate_rows = data<scalar_t>(gates);
    scalar_t* sens_rows = data<scalar_t>(sens);
    const scalar_t* drive_rows = data<scalar_t>(drive);
    const Operand<scalar_t> weight_t = transposed(operand<scalar_t>(weight_c));  // s = x_s W^T + d
    const int64_t attention_count = batch * total_slots;
    scalar_t* x = inputs;
    for (int64_t step = 0; step < steps; ++step) {
      const int64_t base = save ? 4 * step : 0;
      scalar_t* following = step == steps - 1 ? data<scalar_t>(output)
                                              : (save ? inputs + (base + 4) * count : data<scalar_t>(spare[step % 2]));
      scalar_t* target = memory ? data<scalar_t>(pre_coupling) + (save ? step : 0) * count : following;
      for (int stage = 0; stage < 4; ++stage) {
        const int64_t index = base + stage;
        scalar_t* x_s = stage == 0 ? x : inputs + index * count;
        scalar_t* g = gate_rows + (save ? index : 0) * count;
        std::copy(drive_rows, drive_rows + count, g);
        gemm<scalar_t>(batch, width, width, rows_of<scalar_t>(x_s, width), weight_t, scalar_t(1), g, options);
        at::Tensor gate = wrap(g, {count}, options);
        gate.sigmoid_();  // f(x, u)
        forward_stage<scalar_t>(batch, width, stage, h, x, x_s, g, data<scalar_t>(reversal_c),
                                data<scalar_t>(inverse_tau_c), save ? sens_rows + index * count : nullptr,
                                stage < 3 ? inputs + (index + 1) * count : nullptr, target,
                                memory && stage == 3 ? following : nullptr, alpha_value);
      }
      if (memory) {  // z = alpha x' + softmax_heads(x' K) V
        scalar_t* weights = data<scalar_t>(attention) + (save ? step : 0) * attention_count;
        scalar_t* logit_rows = data<scalar_t>(logits);
        gemm<scalar_t>(batch, total_slots, width, rows_of<scalar_t>(target, width), operand<scalar_t>(keys_c),
                       scalar_t(0), logit_rows, options);
        shift_by_group_max<scalar_t>(batch * heads, total_slots / heads, logit_rows);
        at::Tensor weights_view = wrap(weights, {attention_count}, options);
        at::exp_out(weights_view, wrap(logit_rows, {attention_count}, options));
        normalise_groups<scalar_t>(batch * heads, total_slots / heads, weights);
        gemm<scalar_t>(batch, width, total_slots, rows_of<scalar_t>(weights, total_slots), operand<scalar_t>(values_c),
                       scalar_t(1), following, options);
      }
      x = following;
    }
  });
  if (!save) return {output};
  std::vector<at::Tensor> result = {output, stage_inputs, gates, sens};
  if (memory) {
    result.push_back(pre_coupling);
    result.push_back(attention);
  }
  return result;
}

// Backward pass: gradients of (initial, drive, weight, reversal, inverse_tau, keys, values, alpha)
// given the output's gradient and the tensors integrate_forward saved (undefined where not needed).
std::vector<at::Tensor> integrate_backward(const at::Tensor& grad_output_in, const at::Tensor& stage_inputs,
                                           const at::Tensor& gates, const at::Tensor& sens, const at::Tensor& weight,
                                           const at::Tensor& inverse_tau, const c10::optional<at::Tensor>& pre_coupling,
                                           const c10::optional<at::Tensor>& attention,
                                           const c10::optional<at::Tensor>& keys, const c10::optional<at::Tensor>& values,
                                           const c10::optional<at::Tensor>& alpha, int64_t steps, double step_size,
                                           int64_t heads, bool need_initial, bool need_weight, bool need_keys,
                                           bool need_values) {
  const at::Tensor grad_output = grad_output_in.contiguous();
  const int64_t batch = stage_inputs.size(1), width = stage_inputs.size(2);
  const int64_t count = batch * width;
  const bool memory = keys.has_value();
  const auto options = stage_inputs.options();
  at::Tensor grad_pre = pool().take(stage_inputs.sizes(), options);  // dL/ds per stage (s: the gate's pre-activation)
  std::vector<at::Tensor> grad_stage = {pool().take({batch, width}, options), pool().take({batch, width}, options)};
  at::Tensor drive_sum = pool().zeros({batch, width}, options);
  // per stage, the batch's column sums for dL/dA and -dL/d(1/tau) (summed over stages at the end)
  at::Tensor reversal_parts = pool().take({4 * steps, width}, options);
  at::Tensor inverse_tau_parts = pool().take({4 * steps, width}, options);
  std::vector<at::Tensor> step_grads = {pool().take({batch, width}, options), pool().take({batch, width}, options)};
  const at::Tensor inverse_tau_c = inverse_tau.contiguous();
  const at::Tensor weight_c = blas_ready(weight);
  const at::Tensor keys_c = memory ? blas_ready(*keys) : at::Tensor();
  const at::Tensor values_c = memory ? blas_ready(*values) : at::Tensor();
  at::Tensor grad_coupled, grad_logits, grad_weights;
  int64_t total_slots = 0;
  if (memory) {
    total_slots = keys->size(1);
    grad_coupled = pool().take({steps, batch, width}, options);  // dL/dz per step
    grad_logits = pool().take({steps, batch, total_slots}, options);
    grad_weights = pool().take({batch, total_slots}, options);
  }
  at::Tensor grad_initial;
  AT_DISPATCH_FLOATING_TYPES(stage_inputs.scalar_type(), "integrate_backward", [&] {
    const scalar_t h = static_cast<scalar_t>(step_size);
    const scalar_t alpha_value = memory ? alpha->item<scalar_t>() : scalar_t(1);
    const scalar_t* inputs = data<scalar_t>(stage_inputs);
    const scalar_t* gate_rows = data<scalar_t>(gates);
    const scalar_t* sens_rows = data<scalar_t>(sens);
    scalar_t* pre_rows = data<scalar_t>(grad_pre);
    scalar_t* reversal_rows = data<scalar_t>(reversal_parts);
    scalar_t* inverse_tau_rows = data<scalar_t>(inverse_tau_parts);
    scalar_t* coupled_rows = data<scalar_t>(grad_coupled);
    scalar_t* logit_rows = data<scalar_t>(grad_logits);
    const scalar_t* attention_rows = memory ? data<scalar_t>(*attention) : nullptr;
    const Operand<scalar_t> weight_op = operand<scalar_t>(weight_c);  // dx_s += grad_pre W
    const int64_t attention_count = batch * total_slots;
    if (memory) std::copy(data<scalar_t>(grad_output), data<scalar_t>(grad_output) + count, coupled_rows + (steps - 1) * count);
    const scalar_t* grad_x = data<scalar_t>(grad_output);
    for (int64_t step = steps - 1; step >= 0; --step) {
      if (memory) {  // back through z = alpha x' + P V, P = softmax_heads(x' K)
        const scalar_t* grad_z = coupled_rows + step * count;
        const scalar_t* weights = attention_rows + step * attention_count;
        scalar_t* grad_p = data<scalar_t>(grad_weights);
        gemm<scalar_t>(batch, total_slots, width, rows_of<scalar_t>(grad_z, width),
                       transposed(operand<scalar_t>(values_c)), scalar_t(0), grad_p, options);  // dL/dP = dL/dz V^T
        scalar_t* logits_grad = logit_rows + step * attention_count;
        softmax_backward_groups<scalar_t>(batch * heads, total_slots / heads, weights, grad_p, logits_grad);
        scalar_t* grad_step = data<scalar_t>(step_grads[step % 2]);
        scale_into<scalar_t>(count, grad_step, grad_z, alpha_value);
        gemm<scalar_t>(batch, width, total_slots, rows_of<scalar_t>(logits_grad, total_slots),
                       transposed(operand<scalar_t>(keys_c)), scalar_t(1), grad_step, options);  // + dL/dlogits K^T
        grad_x = grad_step;
      }
      const int64_t base = 4 * step;
      scalar_t* accumulated = memory && step > 0 ? coupled_rows + (step - 1) * count
                                                 : data<scalar_t>(step_grads[(step + 1) % 2]);
      const scalar_t* grad_input = nullptr;  // dL/dx_{s+1}: the gradient of the next stage's input
      for (int stage = 3; stage >= 0; --stage) {
        const int64_t index = base + stage;
        scalar_t* dx_s = data<scalar_t>(grad_stage[stage % 2]);
        backward_stage<scalar_t>(batch, width, stage, h, grad_x, stage < 3 ? grad_input : nullptr,
                                 sens_rows + index * count, gate_rows + index * count, inputs + index * count,
                                 data<scalar_t>(inverse_tau_c), pre_rows + index * count, dx_s,
                                 data<scalar_t>(drive_sum), reversal_rows + index * width,
                                 inverse_tau_rows + index * width, accumulated);
        gemm<scalar_t>(batch, width, width, rows_of<scalar_t>(pre_rows + index * count, width), weight_op, scalar_t(1),
                       dx_s, options);  // dx_s = grad_pre W - (g + 1/tau) dk
        grad_input = dx_s;
      }
      add_into<scalar_t>(count, accumulated, grad_input);
      grad_x = accumulated;
    }
    if (need_initial) grad_initial = wrap(const_cast<scalar_t*>(grad_x), {batch, width}, options).clone();
  });
  at::Tensor grad_weight = need_weight ? grad_pre.view({-1, width}).t().mm(stage_inputs.view({-1, width})) : at::Tensor();
  at::Tensor grad_reversal = reversal_parts.sum(0);
  at::Tensor grad_inverse_tau = inverse_tau_parts.sum(0).neg_();
  at::Tensor grad_keys, grad_values, grad_alpha;
  if (memory) {
    if (need_keys) grad_keys = pre_coupling->view({-1, width}).t().mm(grad_logits.view({-1, total_slots}));
    if (need_values) grad_values = attention->view({-1, total_slots}).t().mm(grad_coupled.view({-1, width}));
    grad_alpha = at::dot(grad_coupled.view({-1}), pre_coupling->view({-1})).reshape(alpha->sizes());
  }
  return {grad_initial, drive_sum, grad_weight, grad_reversal, grad_inverse_tau, grad_keys, grad_values, grad_alpha};
}

// The folded memory of model.kernels.FoldedMemory (the same operations, without the interpreter
// between them): keys^T[(h,i),k] = beta sum_j xi_{i,h,j} (W_q)_{(h,j),k},
// values[(h,i),:] = delta sum_j xi_{i,h,j} W_o[:,(h,j)]. Returns keys^T, values and the two
// unscaled folds (kept for the backward pass).
std::vector<at::Tensor> fold_forward(const at::Tensor& patterns, const at::Tensor& query_weight,
                                     const at::Tensor& output_weight, const at::Tensor& beta, const at::Tensor& delta,
                                     int64_t heads) {
  const int64_t size = patterns.size(0), pattern_size = patterns.size(1), width = query_weight.size(1);
  const int64_t head_size = pattern_size / heads;
  const at::Tensor slots = patterns.view({size, heads, head_size}).transpose(0, 1);       // (H, N, M/H)
  const at::Tensor query_rows = query_weight.view({heads, head_size, width});              // (H, M/H, n)
  const at::Tensor output_columns = output_weight.view({width, heads, head_size}).permute({1, 2, 0});  // (H, M/H, n)
  at::Tensor query_fold = at::bmm(slots, query_rows);
  at::Tensor output_fold = at::bmm(slots, output_columns);
  at::Tensor keys_t = query_fold.view({heads * size, width}) * beta;
  at::Tensor values = output_fold.view({heads * size, width}) * delta;
  return {keys_t, values, query_fold, output_fold};
}

std::vector<at::Tensor> fold_backward(const at::Tensor& grad_keys_t, const at::Tensor& grad_values,
                                      const at::Tensor& patterns, const at::Tensor& query_weight,
                                      const at::Tensor& output_weight, const at::Tensor& beta, const at::Tensor& delta,
                                      const at::Tensor& query_fold, const at::Tensor& output_fold, int64_t heads) {
  const int64_t size = patterns.size(0), pattern_size = patterns.size(1), width = query_weight.size(1);
  const int64_t head_size = pattern_size / heads;
  const at::Tensor slots = patterns.view({size, heads, head_size}).transpose(0, 1);
  const at::Tensor query_rows = query_weight.view({heads, head_size, width});
  const at::Tensor output_columns = output_weight.view({width, heads, head_size}).permute({1, 2, 0});
  const at::Tensor grad_k = grad_keys_t.defined() ? grad_keys_t.reshape({heads * size, width})
                                                   : at::zeros({heads * size, width}, query_fold.options());
  const at::Tensor grad_v = grad_values.defined() ? grad_values.reshape({heads * size, width})
                                                   : at::zeros({heads * size, width}, output_fold.options());
  at::Tensor grad_beta = at::dot(grad_k.reshape({-1}), query_fold.reshape({-1})).reshape(beta.sizes());
  at::Tensor grad_delta = at::dot(grad_v.reshape({-1}), output_fold.reshape({-1})).reshape(delta.sizes());
  const at::Tensor grad_query_fold = (grad_k * beta).view({heads, size, width});
  const at::Tensor grad_output_fold = (grad_v * delta).view({heads, size, width});
  at::Tensor grad_slots = at::bmm(grad_query_fold, query_rows.transpose(1, 2));
  grad_slots.baddbmm_(grad_output_fold, output_columns.transpose(1, 2));
  const at::Tensor slots_t = slots.transpose(1, 2);
  at::Tensor grad_query_weight = at::bmm(slots_t, grad_query_fold).view({pattern_size, width});
  at::Tensor grad_output_weight = at::bmm(slots_t, grad_output_fold).permute({2, 0, 1}).reshape({width, pattern_size});
  at::Tensor grad_patterns = grad_slots.transpose(0, 1).reshape({size, pattern_size});
  return {grad_patterns, grad_query_weight, grad_output_weight, grad_beta, grad_delta};
}

// Whether the stage products call BLAS directly (true where libtorch exports sgemm_/dgemm_ and
// they are allowed); set_blas(false) routes them through ATen (tests compare the two).
bool blas_in_use() { return blas_allowed && sgemm_ != nullptr && dgemm_ != nullptr; }
void set_blas(bool allowed) { blas_allowed = allowed; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("blas_in_use", &blas_in_use, "whether stage products call BLAS directly");
  module.def("set_blas", &set_blas, "allow (true) or forbid (false) direct BLAS calls");
  module.def("fold_forward", &fold_forward, "keys and values of the folded Hopfield memory");
  module.def("fold_backward", &fold_backward, "gradients of fold_forward");
  module.def("integrate_forward", &integrate_forward, "fused RK4 solve with optional folded Hopfield coupling");
  module.def("integrate_backward", &integrate_backward, "gradients of integrate_forward");
}
