// Kernel micro-benchmarks at ERNIE-4.5-0.3B shapes (hidden 1024, intermediate 3072, vocabulary 103424), 1 and 2
// threads through the ThreadPool as the model runs them.
//
//   Bandwidth/threads    the machine's read bandwidth (a streaming sum over 1 GiB, widest loads, prefetching): the
//                        roofline for decode
//   Decode/...           one token × W[rows, cols]: bytes_per_second counts the weight bytes streamed; the weights
//                        cycle through copies totalling >= 256 MiB so that they come from DRAM, as in a real decode,
//                        in 4 KiB pages (a mapped checkpoint) or, huge_pages:1, 2 MiB ones (weights converted at load)
//   DecodeCached/...     one token × a matrix that stays in L2: the kernel's speed when memory is not the limit
//   DecodeSwiglu/...     gate and up fused, one token
//   Prefill/...          128 tokens × W: FLOP/s = 2 · 128 · rows · cols per second
//   QuantizeRow/dtype    load-time quantization: bytes_per_second counts the float32 input
//
// Run: build/bench_kernels --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// (ERNIE_DISABLE_AVX512=1 in the environment measures the AVX2 kernels on an AVX-512 machine.)
#include <benchmark/benchmark.h>
#include <sys/mman.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/large_buffer.h"
#include "core/thread_pool.h"
#include "hwy/targets.h"
#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"

namespace ernie {
namespace {

constexpr DType kDtypes[] = {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0};

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// `copies` copies of one random [rows, cols] matrix in dtype (integer types packed, as the kernels take them: see
// matmul.h), back to back, each starting on a cache line. In 4 KiB pages, as a mapped checkpoint file is, unless
// huge_pages (transparent huge pages, as the matrices a model converts at load are: core/large_buffer.h).
struct WeightSet {
  LargeBuffer storage;
  std::vector<WeightMatrix> copies;
};

WeightSet make_weights(DType dtype, int rows, int cols, size_t min_total_bytes, bool huge_pages = false) {
  WeightSet set;
  const bool packed = uses_quantized_input(dtype);
  const WeightMatrix shape{dtype, nullptr, rows, cols, packed};
  const size_t bytes = (shape.bytes() + 63) / 64 * 64;
  const size_t copies = std::max<size_t>(1, (min_total_bytes + bytes - 1) / bytes);
  set.storage = LargeBuffer::allocate(bytes * copies + 64);
  if (!huge_pages) madvise(set.storage.data(), set.storage.size(), MADV_NOHUGEPAGE);
  uint8_t* base = set.storage.data();
  const auto row = random_floats(cols, 1);
  std::vector<uint8_t> plain(shape.row_bytes() * kPackedRows);
  for (int r = 0; r < rows; ++r) {
    uint8_t* to = packed ? plain.data() + r % kPackedRows * shape.row_bytes() : base + r * shape.row_bytes();
    quantize_row(dtype, row.data(), to, cols);
    if (packed && (r % kPackedRows == kPackedRows - 1 || r == rows - 1)) {
      pack_weight_group(dtype, cols, plain.data(), r % kPackedRows + 1, base + r / kPackedRows * plain.size());
    }
  }
  for (size_t c = 0; c < copies; ++c) {
    if (c > 0) std::memcpy(base + c * bytes, base, bytes);
    set.copies.push_back(WeightMatrix{dtype, base + c * bytes, rows, cols, packed});
  }
  return set;
}

std::string layout_label(DType dtype) {
  return std::string(dtype_name(dtype)) + (uses_quantized_input(dtype) ? " packed" : "");
}

struct Activations {
  std::vector<float> x;
  std::vector<uint8_t> quantized;
  MatmulInput input;
};

Activations make_activations(int n, int cols) {
  Activations a;
  a.x = random_floats(static_cast<size_t>(n) * cols, 2);
  a.quantized.resize(quantized_input_bytes(n, cols));
  quantize_input(a.x.data(), cols, 0, n, a.quantized.data());
  a.input = MatmulInput{a.x.data(), a.quantized.data(), n, cols};
  return a;
}

// ---- Bandwidth ----------------------------------------------------------------------------------------------------

// Sum of n uint64 (n a multiple of 32). Few, wide loads matter: each occupies a load-queue entry while it waits for
// memory, and the number of cache lines in flight is what bounds the bandwidth when memory is far (this VM). So on
// x86 the widest vectors the CPU has, four independent sums, and a prefetch 4 KiB ahead, as the decode kernels do.
#if defined(__x86_64__)
__attribute__((target("avx512f"))) uint64_t sum_avx512(const uint64_t* p, size_t n) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i < n; i += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(p + i + 512), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + i + 520), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + i + 528), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + i + 536), _MM_HINT_T0);
    s0 = _mm512_add_epi64(s0, _mm512_loadu_si512(p + i));
    s1 = _mm512_add_epi64(s1, _mm512_loadu_si512(p + i + 8));
    s2 = _mm512_add_epi64(s2, _mm512_loadu_si512(p + i + 16));
    s3 = _mm512_add_epi64(s3, _mm512_loadu_si512(p + i + 24));
  }
  uint64_t lanes[8];
  _mm512_storeu_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, size_t n) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i < n; i += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(p + i + 512), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + i + 520), _MM_HINT_T0);
    s0 = _mm256_add_epi64(s0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    s2 = _mm256_add_epi64(s2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    s3 = _mm256_add_epi64(s3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  uint64_t lanes[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(lanes),
                      _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
#endif

uint64_t sum_portable(const uint64_t* p, size_t n) {
  uint64_t s[8] = {};
  for (size_t i = 0; i < n; i += 8) {
    __builtin_prefetch(p + i + 512);
    for (int j = 0; j < 8; ++j) s[j] += p[i + j];
  }
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

uint64_t streaming_sum(const uint64_t* p, size_t n) {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) return sum_avx512(p, n);
  if (__builtin_cpu_supports("avx2")) return sum_avx2(p, n);
#endif
  return sum_portable(p, n);
}

void Bandwidth(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  constexpr size_t kBytes = size_t{1} << 30;
  std::vector<uint64_t> data(kBytes / sizeof(uint64_t), 1);
  ThreadPool pool(threads);
  std::vector<uint64_t> sums(threads);
  for (auto _ : state) {
    pool.run(threads, [&](int task) {
      const size_t per = data.size() / threads / 32 * 32;
      sums[task] = streaming_sum(data.data() + per * task, per);
    });
    benchmark::DoNotOptimize(sums.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kBytes);
}
BENCHMARK(Bandwidth)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- Matmuls ------------------------------------------------------------------------------------------------------

// Args: dtype, rows, cols, threads, huge_pages.
void Decode(benchmark::State& state) {
  const DType dtype = static_cast<DType>(state.range(0));
  const int rows = static_cast<int>(state.range(1)), cols = static_cast<int>(state.range(2));
  ThreadPool pool(static_cast<int>(state.range(3)));
  const bool huge_pages = state.range(4) != 0;
  const WeightSet weights = make_weights(dtype, rows, cols, size_t{256} << 20, huge_pages);
  const Activations a = make_activations(1, cols);
  std::vector<float> out(rows);
  size_t next = 0;
  for (auto _ : state) {
    const MatmulTask task{out.data(), &weights.copies[next]};
    matmul_parallel(pool, a.input, std::span<const MatmulTask>(&task, 1));
    next = (next + 1) % weights.copies.size();
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * dtype_row_bytes(dtype, cols) * rows));
  state.SetLabel(layout_label(dtype) + (huge_pages ? ", 2 MiB pages" : ""));
}

// The same kernel on a matrix that stays in L2: how fast it could stream if memory were not the limit.
// Args: dtype, rows, cols.
void DecodeCached(benchmark::State& state) {
  const DType dtype = static_cast<DType>(state.range(0));
  const int rows = static_cast<int>(state.range(1)), cols = static_cast<int>(state.range(2));
  const WeightSet weights = make_weights(dtype, rows, cols, 0);
  const Activations a = make_activations(1, cols);
  std::vector<float> out(rows);
  for (auto _ : state) {
    matmul(out.data(), a.input, weights.copies[0], nullptr, 0, rows);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * dtype_row_bytes(dtype, cols) * rows));
  state.SetLabel(layout_label(dtype));
}

void DecodeSwiglu(benchmark::State& state) {
  const DType dtype = static_cast<DType>(state.range(0));
  const int rows = static_cast<int>(state.range(1)), cols = static_cast<int>(state.range(2));
  ThreadPool pool(static_cast<int>(state.range(3)));
  const WeightSet gate = make_weights(dtype, rows, cols, size_t{128} << 20);
  const WeightSet up = make_weights(dtype, rows, cols, size_t{128} << 20);
  const Activations a = make_activations(1, cols);
  std::vector<float> out(rows);
  size_t next = 0;
  for (auto _ : state) {
    const MatmulTask task{out.data(), &gate.copies[next], nullptr, &up.copies[next]};
    matmul_parallel(pool, a.input, std::span<const MatmulTask>(&task, 1));
    next = (next + 1) % gate.copies.size();
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * dtype_row_bytes(dtype, cols) * rows * 2));
  state.SetLabel(layout_label(dtype));
}

void Prefill(benchmark::State& state) {
  const DType dtype = static_cast<DType>(state.range(0));
  const int rows = static_cast<int>(state.range(1)), cols = static_cast<int>(state.range(2));
  constexpr int kTokens = 128;
  ThreadPool pool(static_cast<int>(state.range(3)));
  const WeightSet weights = make_weights(dtype, rows, cols, 0);
  const Activations a = make_activations(kTokens, cols);
  std::vector<float> out(static_cast<size_t>(kTokens) * rows);
  for (auto _ : state) {
    const MatmulTask task{out.data(), &weights.copies[0]};
    matmul_parallel(pool, a.input, std::span<const MatmulTask>(&task, 1));
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * kTokens * rows * cols, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(layout_label(dtype));
}

void MatmulShapes(benchmark::internal::Benchmark* b, std::initializer_list<std::pair<int, int>> shapes) {
  b->ArgNames({"dtype", "rows", "cols", "threads"});
  for (DType dtype : kDtypes) {
    for (const auto& [rows, cols] : shapes) {
      for (int threads : {1, 2}) b->Args({static_cast<int>(dtype), rows, cols, threads});
    }
  }
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

// Decode in 4 KiB pages at every shape, and in 2 MiB pages at one: what the TLB misses of a mapped checkpoint cost.
BENCHMARK(Decode)->Apply([](auto* b) {
  b->ArgNames({"dtype", "rows", "cols", "threads", "huge_pages"});
  for (DType dtype : kDtypes) {
    for (const auto& [rows, cols] :
         std::initializer_list<std::pair<int, int>>{{1024, 1024}, {3072, 1024}, {1024, 3072}, {103424, 1024}}) {
      for (int threads : {1, 2}) b->Args({static_cast<int>(dtype), rows, cols, threads, 0});
    }
    for (int threads : {1, 2}) b->Args({static_cast<int>(dtype), 3072, 1024, threads, 1});
  }
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
});
BENCHMARK(DecodeCached)->Apply([](auto* b) {
  b->ArgNames({"dtype", "rows", "cols"});
  for (DType dtype : kDtypes) b->Args({static_cast<int>(dtype), 128, 1024});
  b->Unit(benchmark::kMicrosecond);
});
BENCHMARK(DecodeSwiglu)->Apply([](auto* b) { MatmulShapes(b, {{3072, 1024}}); });
BENCHMARK(Prefill)->Apply([](auto* b) { MatmulShapes(b, {{1024, 1024}, {3072, 1024}, {1024, 3072}}); });

// ---- Quantization ---------------------------------------------------------------------------------------------------

void QuantizeRow(benchmark::State& state) {
  const DType dtype = static_cast<DType>(state.range(0));
  constexpr int kCols = 1024, kRows = 1024;
  const auto x = random_floats(static_cast<size_t>(kRows) * kCols, 3);
  std::vector<uint8_t> out(dtype_row_bytes(dtype, kCols) * kRows);
  for (auto _ : state) {
    for (int r = 0; r < kRows; ++r) {
      quantize_row(dtype, x.data() + static_cast<size_t>(r) * kCols, out.data() + r * dtype_row_bytes(dtype, kCols),
                   kCols);
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kRows * kCols * sizeof(float));
  state.SetLabel(std::string(dtype_name(dtype)));
}
BENCHMARK(QuantizeRow)->DenseRange(1, 4)->Unit(benchmark::kMicrosecond);

// ---- Attention ------------------------------------------------------------------------------------------------------

// One query token at position `pos` over an F16 or Q8_0 cache, 16 query heads sharing 2 kv heads of 128
// (ERNIE-4.5-0.3B).
void AttentionDecode(benchmark::State& state) {
  const int pos = static_cast<int>(state.range(0));
  const DType dtype = state.range(1) ? DType::Q8_0 : DType::F16;
  const AttentionShape shape{16, 2, 128};
  const int kv = shape.n_kv_heads * shape.head_dim;
  const auto values = random_floats(static_cast<size_t>(pos + 1) * kv, 4);
  const int n_blocks = pos / kKvBlockPositions + 1;
  const size_t block_bytes = dtype_row_bytes(dtype, kv) * kKvBlockPositions;
  std::vector<uint8_t> k(n_blocks * block_bytes), v(k.size());
  std::vector<int32_t> blocks(n_blocks);
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = static_cast<int32_t>(i);
  const KvCacheView cache{dtype, k.data(), v.data(), blocks.data(), kv};
  for (int p = 0; p <= pos; ++p) kv_store(cache, shape, p, values.data() + p * kv, values.data() + p * kv);
  const auto q = random_floats(shape.n_heads * shape.head_dim, 5);
  std::vector<float> out(q.size());
  for (auto _ : state) {
    attention(out.data(), q.data(), 1, pos, cache, shape, 0, shape.n_heads);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 * k.size());
  state.SetLabel(std::string(dtype_name(dtype)));
}
BENCHMARK(AttentionDecode)->ArgsProduct({{511, 3899}, {0, 1}})->Unit(benchmark::kMicrosecond);

// A 512-token prompt chunk attending to itself (prefill), F16 cache, the same heads.
void AttentionPrefill(benchmark::State& state) {
  const int n = 512;
  const AttentionShape shape{16, 2, 128};
  const int kv = shape.n_kv_heads * shape.head_dim;
  const auto values = random_floats(static_cast<size_t>(n) * kv, 6);
  const size_t block_bytes = dtype_row_bytes(DType::F16, kv) * kKvBlockPositions;
  std::vector<uint8_t> k(n / kKvBlockPositions * block_bytes), v(k.size());
  std::vector<int32_t> blocks(n / kKvBlockPositions);
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = static_cast<int32_t>(i);
  const KvCacheView cache{DType::F16, k.data(), v.data(), blocks.data(), kv};
  for (int p = 0; p < n; ++p) kv_store(cache, shape, p, values.data() + p * kv, values.data() + p * kv);
  const auto q = random_floats(static_cast<size_t>(n) * shape.n_heads * shape.head_dim, 7);
  std::vector<float> out(q.size());
  for (auto _ : state) {
    attention(out.data(), q.data(), n, 0, cache, shape, 0, shape.n_heads);
    benchmark::ClobberMemory();
  }
  // Multiply-adds: per head, n(n+1)/2 query-key pairs, each head_dim for the scores and head_dim for the values.
  state.counters["GMAC/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * shape.n_heads * n * (n + 1) /
                                                    2 * 2 * shape.head_dim / 1e9,
                                                benchmark::Counter::kIsRate);
}
BENCHMARK(AttentionPrefill)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace ernie

// ERNIE_DISABLE_AVX512=1 measures the AVX2 kernels on an AVX-512 machine.
int main(int argc, char** argv) {
  if (const char* v = std::getenv("ERNIE_DISABLE_AVX512"); v && *v == '1') hwy::DisableTargets(HWY_AVX3 | HWY_AVX3_DL);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
