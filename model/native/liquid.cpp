// The fused RK4 solver of model/kernels.py (MODEL.md Eq. 1, with the folded Hopfield coupling of
// Eqs. 3-4 after every step) for CPU tensors, as two C++ functions: the forward pass and its
// backward pass. model/kernels.py documents the notation and holds the same computation in
// Python (it runs on CUDA and wherever this file cannot be compiled); tests compare the two with
// the plain autograd loop.
//
// Matrix products, the sigmoid and the softmax are ATen's (MKL and vectorised kernels); the
// elementwise work of each RK4 stage -- some ten operations in Python, each a pass over the batch
// -- is one loop here, and nothing returns to the Python interpreter between stages.

#include <torch/extension.h>

#include <map>
#include <tuple>
#include <type_traits>
#include <vector>

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

}  // namespace

// Forward pass. With `save`, every stage is kept (returned after the output, for backward):
// stage inputs, gates, sensitivities and, with memory, the pre-coupling states and attention.
std::vector<at::Tensor> integrate_forward(const c10::optional<at::Tensor>& initial, const at::Tensor& drive,
                                          const at::Tensor& weight, const at::Tensor& reversal,
                                          const at::Tensor& inverse_tau, const c10::optional<at::Tensor>& keys,
                                          const c10::optional<at::Tensor>& values, const c10::optional<at::Tensor>& alpha,
                                          int64_t steps, double step_size, int64_t heads, bool save) {
  TORCH_CHECK(drive.device().is_cpu() && drive.is_contiguous(), "drive must be a contiguous CPU tensor");
  const int64_t batch = drive.size(0), width = drive.size(1);
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
  const at::Tensor weight_t = weight.t();
  const at::Tensor reversal_c = reversal.contiguous(), inverse_tau_c = inverse_tau.contiguous();

  at::Tensor x = stage_inputs[0];
  if (initial.has_value()) {
    x.copy_(*initial);
  } else {
    x.zero_();
  }
  AT_DISPATCH_FLOATING_TYPES(drive.scalar_type(), "integrate_forward", [&] {
    const scalar_t h = static_cast<scalar_t>(step_size);
    const scalar_t alpha_value = memory ? alpha->item<scalar_t>() : scalar_t(1);
    for (int64_t step = 0; step < steps; ++step) {
      const int64_t base = save ? 4 * step : 0;
      at::Tensor following = step == steps - 1 ? output : (save ? stage_inputs[base + 4] : spare[step % 2]);
      at::Tensor target = memory ? pre_coupling[save ? step : 0] : following;
      for (int stage = 0; stage < 4; ++stage) {
        const int64_t index = base + stage;
        at::Tensor x_s = stage == 0 ? x : stage_inputs[index];
        at::Tensor g = gates[save ? index : 0];
        at::addmm_out(g, drive, x_s, weight_t);  // s = x_s W^T + d
        g.sigmoid_();                              // f(x, u)
        forward_stage<scalar_t>(batch, width, stage, h, data<scalar_t>(x), data<scalar_t>(x_s), data<scalar_t>(g),
                                data<scalar_t>(reversal_c), data<scalar_t>(inverse_tau_c),
                                save ? data<scalar_t>(sens[index]) : nullptr,
                                stage < 3 ? data<scalar_t>(stage_inputs[index + 1]) : nullptr, data<scalar_t>(target),
                                memory && stage == 3 ? data<scalar_t>(following) : nullptr, alpha_value);
      }
      if (memory) {  // z = alpha x' + softmax_heads(x' K) V
        at::Tensor weights = attention[save ? step : 0];
        at::mm_out(logits, target, *keys);
        shift_by_group_max<scalar_t>(batch * heads, total_slots / heads, data<scalar_t>(logits));
        at::exp_out(weights, logits);
        normalise_groups<scalar_t>(batch * heads, total_slots / heads, data<scalar_t>(weights));
        at::addmm_out(following, following, weights, *values);
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
  at::Tensor grad_coupled, grad_logits, grad_weights;
  int64_t total_slots = 0;
  if (memory) {
    total_slots = keys->size(1);
    grad_coupled = pool().take({steps, batch, width}, options);  // dL/dz per step
    grad_logits = pool().take({steps, batch, total_slots}, options);
    grad_weights = pool().take({batch, total_slots}, options);
    grad_coupled[steps - 1].copy_(grad_output);
  }
  const at::Tensor values_t = memory ? values->t() : at::Tensor();
  const at::Tensor keys_t = memory ? keys->t() : at::Tensor();
  at::Tensor grad_x = grad_output;
  AT_DISPATCH_FLOATING_TYPES(stage_inputs.scalar_type(), "integrate_backward", [&] {
    const scalar_t h = static_cast<scalar_t>(step_size);
    const scalar_t alpha_value = memory ? alpha->item<scalar_t>() : scalar_t(1);
    for (int64_t step = steps - 1; step >= 0; --step) {
      if (memory) {  // back through z = alpha x' + P V, P = softmax_heads(x' K)
        at::Tensor grad_z = grad_coupled[step];
        at::Tensor weights = (*attention)[step];
        at::mm_out(grad_weights, grad_z, values_t);  // dL/dP = dL/dz V^T
        at::Tensor logits_grad = grad_logits[step];
        softmax_backward_groups<scalar_t>(batch * heads, total_slots / heads, data<scalar_t>(weights),
                                          data<scalar_t>(grad_weights), data<scalar_t>(logits_grad));
        grad_x = step_grads[step % 2];
        scale_into<scalar_t>(count, data<scalar_t>(grad_x), data<scalar_t>(grad_z), alpha_value);
        at::addmm_out(grad_x, grad_x, logits_grad, keys_t);  // alpha dL/dz + dL/dlogits K^T
      }
      const int64_t base = 4 * step;
      at::Tensor accumulated = memory && step > 0 ? grad_coupled[step - 1] : step_grads[(step + 1) % 2];
      at::Tensor grad_input;  // dL/dx_{s+1}: the gradient of the next stage's input
      for (int stage = 3; stage >= 0; --stage) {
        const int64_t index = base + stage;
        at::Tensor dx_s = grad_stage[stage % 2];
        backward_stage<scalar_t>(batch, width, stage, h, data<scalar_t>(grad_x),
                                 stage < 3 ? data<scalar_t>(grad_input) : nullptr, data<scalar_t>(sens[index]),
                                 data<scalar_t>(gates[index]), data<scalar_t>(stage_inputs[index]),
                                 data<scalar_t>(inverse_tau_c), data<scalar_t>(grad_pre[index]), data<scalar_t>(dx_s),
                                 data<scalar_t>(drive_sum), data<scalar_t>(reversal_parts[index]),
                                 data<scalar_t>(inverse_tau_parts[index]), data<scalar_t>(accumulated));
        at::addmm_out(dx_s, dx_s, grad_pre[index], weight);  // dx_s = grad_pre W - (g + 1/tau) dk
        grad_input = dx_s;
      }
      add_into<scalar_t>(count, data<scalar_t>(accumulated), data<scalar_t>(grad_input));
      grad_x = accumulated;
    }
  });
  at::Tensor grad_initial = need_initial ? grad_x.clone() : at::Tensor();
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("fold_forward", &fold_forward, "keys and values of the folded Hopfield memory");
  module.def("fold_backward", &fold_backward, "gradients of fold_forward");
  module.def("integrate_forward", &integrate_forward, "fused RK4 solve with optional folded Hopfield coupling");
  module.def("integrate_backward", &integrate_backward, "gradients of integrate_forward");
}
