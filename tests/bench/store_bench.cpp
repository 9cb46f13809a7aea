// Store micro-benchmarks: key derivation, a hit, and put+flush throughput, on a real LMDB
// environment in a temp dir.

#include "cachecore/hash/content_hash.hpp"
#include "cachecore/store/store.hpp"

#include <benchmark/benchmark.h>
#include <filesystem>
#include <random>
#include <stdlib.h>
#include <string>

using namespace cachecore;
using namespace cachecore::store;
namespace fs = std::filesystem;

namespace {

std::string random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    return s;
}

StoreKey key_of(int i) {
    StoreKey key;
    key.content = hash::ContentHash::of("source " + std::to_string(i));
    key.magic = {0xcb, 0x0d, 0x0d, 0x0a};
    return key;
}

struct TempStore {
    fs::path dir;
    std::unique_ptr<Store> store;
    TempStore() {
        std::string pattern = (fs::temp_directory_path() / "pcfs-bench-XXXXXX").string();
        dir = ::mkdtemp(pattern.data());
        StoreOptions o;
        o.dir = dir / "store";
        store = std::make_unique<Store>(o);
    }
    ~TempStore() {
        store.reset();
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
};

void BM_KeyDerivation(benchmark::State& state) {
    std::string source = random_bytes(static_cast<std::size_t>(state.range(0)), 1);
    for (auto _ : state) {
        StoreKey key;
        key.content = hash::ContentHash::of(source);
        key.magic = {0xcb, 0x0d, 0x0d, 0x0a};
        auto bytes = key.bytes();
        benchmark::DoNotOptimize(bytes);
    }
    state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_KeyDerivation)->Arg(1 << 10)->Arg(16 << 10)->Arg(256 << 10);

void BM_GetHit(benchmark::State& state) {
    TempStore t;
    // About 256 MiB of entries: more than the caches, well under the store limit.
    const int n = static_cast<int>(std::min<std::int64_t>(10000, (256 << 20) / state.range(0)));
    Entry e;
    e.code = random_bytes(static_cast<std::size_t>(state.range(0)), 2);
    for (int i = 0; i < n; ++i) {
        t.store->put(key_of(i), e);
        if (i % 256 == 255) t.store->flush(); // the writer queue drops puts past 256 MiB
    }
    t.store->flush();
    std::vector<StoreKey> keys;
    for (int i = 0; i < n; ++i) keys.push_back(key_of(i));
    std::size_t i = 0;
    for (auto _ : state) {
        auto got = t.store->get(keys[i++ % n]);
        if (!got) state.SkipWithError("miss");
        benchmark::DoNotOptimize(got);
    }
    state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_GetHit)->Arg(2 << 10)->Arg(16 << 10)->Arg(128 << 10)->ThreadRange(1, 2);

void BM_GetMiss(benchmark::State& state) {
    TempStore t;
    auto key = key_of(-1);
    for (auto _ : state) benchmark::DoNotOptimize(t.store->get(key));
}
BENCHMARK(BM_GetMiss);

// Puts `batch` entries, then flush: one committed transaction per iteration.
void BM_PutFlush(benchmark::State& state) {
    TempStore t;
    Entry e;
    e.code = random_bytes(8 << 10, 3);
    const int batch = static_cast<int>(state.range(0));
    int next = 0;
    for (auto _ : state) {
        for (int i = 0; i < batch; ++i) t.store->put(key_of(next++), e);
        t.store->flush();
    }
    state.SetItemsProcessed(state.iterations() * batch);
    state.SetBytesProcessed(state.iterations() * batch * static_cast<std::int64_t>(e.code.size()));
}
BENCHMARK(BM_PutFlush)->Arg(1)->Arg(100)->Arg(1000)->UseRealTime();

} // namespace

BENCHMARK_MAIN();
