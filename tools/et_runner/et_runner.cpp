// qwen-edge's ExecuTorch runner: loads a bundle's model.pte with the ExecuTorch runtime libraries that the executorch
// wheel ships (libexecutorch, the XNNPACK backend, the optimized and quantized kernels) and runs token ids through
// it, natively or on aarch64 (under QEMU in CI). It is also the smallest example of what an app links
// (docs/executorch.md); tools/et_runner/build.sh builds it.
//
//   et_runner MODEL.pte PROMPT_IDS [--new-tokens N] [--top K]
//       greedy generation from the prompt (comma-separated token ids); prints one JSON object:
//       {"greedy": [ids], "top": [[[id, logit], ...] per step]}
//   et_runner MODEL.pte --serve
//       the Backend protocol over stdin/stdout (below), for runtimes/backends/executorch_runner.py
// Errors: one line "error: ..." on stderr, exit 2.
//
// The program's two LLM cache ops (llama::update_cache, llama::custom_sdpa) have their ExecuTorch kernels only in the
// wheel's libcustom_ops_aot_lib.so, which links libtorch, libtorch_cpu, libc10 and the Python bindings: no
// torch-free runtime library carries them. This runner registers its own kernels for the two (a copy into the
// cache; causal grouped-query softmax attention); an app that builds ExecuTorch from source links ExecuTorch's own
// (EXECUTORCH_BUILD_KERNELS_LLM) instead.

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/kernel/kernel_includes.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::extension::from_blob;
using executorch::extension::module::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::KernelRuntimeContext;

namespace {

// llama::update_cache.out: value [1, S, kv_heads, head_dim] written into cache [1, max_seq_len, kv_heads, head_dim]
// at rows start_pos..start_pos+S-1. `out` is the op's unused placeholder output.
Tensor& update_cache_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache, int64_t start_pos,
                         Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, value.scalar_type() == ScalarType::Float && cache.scalar_type() == ScalarType::Float,
                      InvalidArgument, out, "update_cache: float32 tensors only");
  ET_KERNEL_CHECK_MSG(ctx, value.dim() == 4 && cache.dim() == 4 && value.size(0) == 1 && cache.size(0) == 1 &&
                               value.size(2) == cache.size(2) && value.size(3) == cache.size(3),
                      InvalidArgument, out, "update_cache: shapes [1, S, H, D] into [1, max, H, D] expected");
  const int64_t steps = value.size(1), row = value.size(2) * value.size(3);
  ET_KERNEL_CHECK_MSG(ctx, start_pos >= 0 && start_pos + steps <= cache.size(1), InvalidArgument, out,
                      "update_cache: positions past the cache");
  std::memcpy(cache.mutable_data_ptr<float>() + start_pos * row, value.const_data_ptr<float>(),
              sizeof(float) * steps * row);
  return out;
}

// llama::custom_sdpa.out: q [1, S, heads, D] against the caches' first start_pos+S rows [1, max, kv_heads, D];
// query i sits at position start_pos+i and (causal) attends to positions 0..start_pos+i. Heads share kv heads in
// groups of heads / kv_heads.
Tensor& custom_sdpa_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        int64_t start_pos, const std::optional<Tensor>& attn_mask, double dropout_p, bool is_causal,
                        std::optional<double> scale, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, !attn_mask.has_value() && dropout_p == 0.0, InvalidArgument, out,
                      "custom_sdpa: no attention mask or dropout here");
  ET_KERNEL_CHECK_MSG(ctx, q.scalar_type() == ScalarType::Float && k.scalar_type() == ScalarType::Float &&
                               v.scalar_type() == ScalarType::Float && out.scalar_type() == ScalarType::Float,
                      InvalidArgument, out, "custom_sdpa: float32 tensors only");
  const int64_t steps = q.size(1), heads = q.size(2), dim = q.size(3), kv_heads = k.size(2);
  ET_KERNEL_CHECK_MSG(ctx, q.size(0) == 1 && kv_heads > 0 && heads % kv_heads == 0 && k.size(3) == dim &&
                               start_pos >= 0 && start_pos + steps <= k.size(1),
                      InvalidArgument, out, "custom_sdpa: unexpected shapes");
  // the planned output holds the longest prompt: it takes this call's shape, as the views after it expect
  ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, out,
                      "custom_sdpa: cannot resize the output");
  const float s = scale.has_value() ? float(*scale) : 1.0f / std::sqrt(float(dim));
  const float* qd = q.const_data_ptr<float>();
  const float* kd = k.const_data_ptr<float>();
  const float* vd = v.const_data_ptr<float>();
  float* od = out.mutable_data_ptr<float>();
  std::vector<float> weights(start_pos + steps);
  for (int64_t i = 0; i < steps; ++i) {
    const int64_t visible = is_causal ? start_pos + i + 1 : start_pos + steps;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t g = h / (heads / kv_heads);
      const float* qi = qd + (i * heads + h) * dim;
      float top = -INFINITY;
      for (int64_t j = 0; j < visible; ++j) {
        const float* kj = kd + (j * kv_heads + g) * dim;
        float dot = 0.0f;
        for (int64_t d = 0; d < dim; ++d) dot += qi[d] * kj[d];
        weights[j] = dot * s;
        top = std::max(top, weights[j]);
      }
      float total = 0.0f;
      for (int64_t j = 0; j < visible; ++j) total += (weights[j] = std::exp(weights[j] - top));
      float* oi = od + (i * heads + h) * dim;
      std::fill(oi, oi + dim, 0.0f);
      for (int64_t j = 0; j < visible; ++j) {
        const float* vj = vd + (j * kv_heads + g) * dim;
        const float w = weights[j] / total;
        for (int64_t d = 0; d < dim; ++d) oi[d] += w * vj[d];
      }
    }
  }
  return out;
}

}  // namespace

EXECUTORCH_LIBRARY(llama, "update_cache.out", update_cache_out);
EXECUTORCH_LIBRARY(llama, "custom_sdpa.out", custom_sdpa_out);

namespace {

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  std::exit(2);
}

std::vector<int64_t> parse_ids(const std::string& text) {
  std::vector<int64_t> ids;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    char* end = nullptr;
    const long long id = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || id < 0) fail("token ids are comma-separated non-negative integers: " + text);
    ids.push_back(id);
  }
  return ids;
}

struct Runner {
  Module module;
  int64_t position = 0;
  int64_t vocab = 0;

  explicit Runner(const std::string& path) : module(path, Module::LoadMode::Mmap) {
    if (module.load_method("forward") != Error::Ok) fail("ExecuTorch cannot load the forward method of " + path);
  }

  // tokens at the current position → the last position's logits (the program returns only those)
  std::vector<float> forward(std::vector<int64_t> tokens) {
    std::vector<int64_t> pos{position};
    auto ids = from_blob(tokens.data(), {1, int32_t(tokens.size())}, ScalarType::Long);
    auto start = from_blob(pos.data(), {1}, ScalarType::Long);
    auto result = module.forward({EValue(ids), EValue(start)});
    if (!result.ok()) fail("forward failed at position " + std::to_string(position) + " (ExecuTorch error " +
                           std::to_string(int(result.error())) + ")");
    const Tensor logits = result.get()[0].toTensor();
    if (logits.scalar_type() != ScalarType::Float) fail("the program's logits are not float32");
    vocab = logits.size(logits.dim() - 1);
    const float* data = logits.const_data_ptr<float>() + (logits.numel() - vocab);
    position += int64_t(tokens.size());
    return std::vector<float>(data, data + vocab);
  }
};

int64_t argmax(const std::vector<float>& row) {
  return std::max_element(row.begin(), row.end()) - row.begin();
}

void print_top(const std::vector<float>& row, int k) {
  std::vector<int64_t> order(row.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int64_t(i);
  k = std::min<int>(k, int(row.size()));
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int64_t a, int64_t b) { return row[a] > row[b]; });
  std::printf("[");
  for (int i = 0; i < k; ++i) std::printf("%s[%lld, %.9g]", i ? ", " : "", (long long)order[i], row[order[i]]);
  std::printf("]");
}

}  // namespace

// --serve: one request per line on stdin, one answer each on stdout, until end of input:
//   "forward ID,ID,..."  the ids at the current position → "logits N" then N little-endian float32 (the last
//                        position's logits); "reset" → "ok" (the position rewinds to 0; later rows overwrite
//                        the cache)
// runtimes/backends/executorch_runner.py drives it as a Backend, so verify and chat run bundles through it.
int serve(Runner& runner) {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "reset") {
      runner.position = 0;
      std::printf("ok\n");
    } else if (line.rfind("forward ", 0) == 0) {
      const std::vector<float> row = runner.forward(parse_ids(line.substr(8)));
      std::printf("logits %zu\n", row.size());
      std::fwrite(row.data(), sizeof(float), row.size(), stdout);
    } else {
      fail("unknown request: " + line.substr(0, 80));
    }
    std::fflush(stdout);
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 3) fail("usage: et_runner MODEL.pte --serve | et_runner MODEL.pte PROMPT_IDS [--new-tokens N] [--top K]");
  Runner runner(argv[1]);
  if (std::string(argv[2]) == "--serve") return serve(runner);
  const std::vector<int64_t> prompt = parse_ids(argv[2]);
  int new_tokens = 8, top = 5;
  for (int i = 3; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) fail("option " + flag + " needs a value");
    if (flag == "--new-tokens") new_tokens = std::atoi(argv[i + 1]);
    else if (flag == "--top") top = std::atoi(argv[i + 1]);
    else fail("unknown option " + flag);
  }
  if (prompt.empty() || new_tokens < 1 || top < 1) fail("give a prompt, --new-tokens >= 1 and --top >= 1");
  std::vector<std::vector<float>> rows{runner.forward(prompt)};
  std::vector<int64_t> greedy{argmax(rows.back())};
  while (int(greedy.size()) < new_tokens) {
    rows.push_back(runner.forward({greedy.back()}));
    greedy.push_back(argmax(rows.back()));
  }
  std::printf("{\"greedy\": [");
  for (size_t i = 0; i < greedy.size(); ++i) std::printf("%s%lld", i ? ", " : "", (long long)greedy[i]);
  std::printf("], \"top\": [");
  for (size_t i = 0; i < rows.size(); ++i) {
    std::printf("%s", i ? ", " : "");
    print_top(rows[i], top);
  }
  std::printf("]}\n");
  return 0;
}
