#include "cachecore/bytecode_cache.hpp"

#include "cachecore/imports/import_list_codec.hpp"
#include "cachecore/pyc/siphash.hpp"
#include "cachecore/recent_entries.hpp"
#include "cachecore/source_reader.hpp"
#include "cachecore/util/log.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <unistd.h>
#include <utility>

namespace cachecore {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto k_counter_push_interval = std::chrono::seconds(1);

// Levels above 2 compile exactly like 2 (and `-OOO` names opt-3), so they share entries.
std::uint8_t store_optimize(int optimize) {
    return std::uint8_t(optimize < 0 ? 0 : optimize > 2 ? 2 : optimize);
}

bool usable(const python::Interpreter& interpreter) {
    return !interpreter.path.empty() && interpreter.major == 3 && interpreter.minor >= 6 &&
           !interpreter.cache_tag.empty();
}

PycError from_failure(const SourceFailure& f, const std::string& file) {
    PycError e;
    e.kind = f.not_found ? PycErrorKind::NotFound : PycErrorKind::Io;
    e.err_no = f.err_no;
    e.message = file + ": " + f.what + ": " + std::strerror(f.err_no);
    return e;
}

PycError compile_error(const store::CompileErrorInfo& info, const std::string& file) {
    PycError e;
    e.kind = PycErrorKind::Compile;
    e.compile = info;
    e.message = file + ":" + std::to_string(info.line) + ": " + info.type + ": " + info.message;
    return e;
}

// The path CPython would report, for co_filename and messages when the caller has none.
std::string describe_source(int dirfd, const std::string& name) {
    if (!name.empty() && name.front() == '/') return name;
    char buf[4096];
    const std::string link = "/proc/self/fd/" + std::to_string(dirfd);
    ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
    if (dirfd == AT_FDCWD || n <= 0 || std::size_t(n) >= sizeof buf) return name;
    std::string dir(buf, std::size_t(n));
    return dir == "/" ? "/" + name : dir + "/" + name;
}

store::Entry entry_from(const python::CompileResult& result, const python::Interpreter& interpreter,
                        std::string_view source) {
    store::Entry entry;
    entry.created = std::int64_t(std::time(nullptr));
    if (result.status == python::CompileResult::Status::Ok) {
        entry.kind = store::EntryKind::Code;
        entry.code = result.code;
        if (interpreter.supports_hash_pycs())
            entry.source_hash = pyc::source_hash(interpreter.magic, interpreter.minor, source);
    } else {
        entry.kind = store::EntryKind::CompileError;
        entry.error.type = result.error_type.empty() ? "CompileError" : result.error_type;
        entry.error.message = result.error_message;
        if (result.status == python::CompileResult::Status::Crashed && entry.error.message.empty())
            entry.error.message = "the compiler crashed on this source";
        entry.error.line = result.error_line;
    }
    return entry;
}

// warm() leaves reporting to its caller (`pycachefs warm` lists errors in its summary).
void log_compile_error(const store::Entry& entry, const std::string& file, const std::string& tag) {
    LOG_WARN(compile_error(entry.error, file).message + " (" + tag + ")");
}

bool storable(python::CompileResult::Status s) {
    using S = python::CompileResult::Status;
    return s == S::Ok || s == S::CompileError || s == S::Crashed;
}

// The boot this process runs in (16 bytes), or "" when unknown. A stamp (device, inode, size,
// times) names one content only within a boot: after a reboot device numbers may be handed
// out again, and a store may be shared by machines.
std::string boot_generation() {
    char text[64] = {};
    int fd = ::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {};
    ssize_t n = ::read(fd, text, sizeof text - 1);
    ::close(fd);
    std::string out;
    int high = -1;
    for (ssize_t i = 0; i < n; ++i) {
        const char c = text[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) continue;
        if (high < 0) {
            high = v;
        } else {
            out.push_back(char(high << 4 | v));
            high = -1;
        }
    }
    return out.size() == store::Store::k_stamp_generation_size ? out : std::string();
}

std::string stamp_key(const std::string& generation, const SourceStamp& s) {
    std::string key = generation;
    for (std::uint64_t v : {std::uint64_t(s.dev), std::uint64_t(s.ino), std::uint64_t(s.size),
                            std::uint64_t(s.mtime_ns), std::uint64_t(s.ctime_ns)})
        for (int i = 0; i < 8; ++i) key.push_back(char(v >> (8 * i)));
    return key;
}

} // namespace

namespace {

// The common front half of get_pyc/warm/prefetch: stat, memo, store lookup, else a fresh read.
struct Lookup {
    SourceStamp stamp;
    hash::ContentHash content;
    store::StoreKey key;
    std::optional<store::Entry> entry;
    std::optional<SourceBytes> source; // set when the source was read
};

} // namespace

struct BytecodeCache::Impl {
    explicit Impl(BytecodeCacheOptions o)
        : options(std::move(o)), memo(options.memo_capacity, options.memo_racy_window_ns) {}

    BytecodeCacheOptions options;
    SourceMemo memo;
    // The memo outlives this process in the store (its "stamps"): a fresh mount of an unchanged
    // tree reads no source at all. Empty: not kept (boot unknown).
    const std::string generation = boot_generation();
    std::atomic<std::uint64_t> sources_read{0};
    std::atomic<std::uint64_t> import_lists_stored{0}, import_lists_scanned{0};

    // What the memo, or the store's stamps, know `stamp` hashes to.
    std::optional<hash::ContentHash> known(store::Store& st, const SourceStamp& stamp) {
        if (auto hit = memo.find(stamp)) return hit;
        if (generation.empty()) return std::nullopt;
        auto value = st.get_stamp(stamp_key(generation, stamp));
        if (!value || value->size() != sizeof(hash::ContentHash::bytes)) return std::nullopt;
        hash::ContentHash content;
        std::memcpy(content.bytes.data(), value->data(), content.bytes.size());
        memo.remember(stamp, content);
        return content;
    }
    void learn(store::Store& st, const SourceStamp& stamp, const hash::ContentHash& content) {
        if (!memo.remember(stamp, content) || generation.empty()) return;
        st.put_stamp(
            stamp_key(generation, stamp),
            std::string(reinterpret_cast<const char*>(content.bytes.data()), content.bytes.size()));
    }
    RecentEntries recent;

    mutable std::mutex counters_mutex;
    std::map<std::string, store::Counters> totals;
    std::map<std::string, store::Counters> pending;
    Clock::time_point last_push = Clock::now();

    std::atomic<bool> closing{false};

    // Declared last so pools (and their callback threads) go before everything they touch.
    std::mutex pools_mutex;
    std::map<std::string, std::unique_ptr<python::CompilerPool>> pools;

    std::optional<store::Entry> get_entry(store::Store& st, const store::StoreKey& key) {
        if (auto e = recent.get(key)) return e;
        return st.get(key);
    }
    void put_entry(store::Store& st, const store::StoreKey& key, const store::Entry& entry) {
        recent.put(key, entry);
        st.put(key, entry);
    }

    // `read_if_missing`: read the source when the store has no entry for its known content
    // (to compile it); without, such a lookup returns neither entry nor source.
    std::variant<Lookup, PycError> look_up(store::Store& st, int dirfd, const std::string& name,
                                           const struct stat* given,
                                           const python::Interpreter& interpreter, int optimize,
                                           const std::string& file, bool read_if_missing = true) {
        struct stat fresh {};
        if (!given) {
            auto s = stat_source(dirfd, name);
            if (auto* f = std::get_if<SourceFailure>(&s)) return from_failure(*f, file);
            fresh = std::get<struct stat>(s);
            given = &fresh;
        } else if (!S_ISREG(given->st_mode)) {
            return from_failure(SourceFailure{true, ENOENT, "not a regular file"}, file);
        }

        Lookup l;
        l.stamp = SourceStamp::of(*given);
        l.key.magic = interpreter.magic;
        l.key.optimize = store_optimize(optimize);
        if (auto content = known(st, l.stamp)) {
            l.content = *content;
            l.key.content = l.content;
            l.entry = get_entry(st, l.key);
            if (l.entry || !read_if_missing) return l;
        }
        auto r = read_source(dirfd, name, &l.stamp);
        if (auto* f = std::get_if<SourceFailure>(&r)) return from_failure(*f, file);
        l.source = std::move(std::get<SourceBytes>(r));
        l.stamp = l.source->stamp;
        ++sources_read;
        l.content = hash::ContentHash::of(l.source->bytes);
        learn(st, l.stamp, l.content);
        l.key.content = l.content;
        // Another path with the same bytes (or another process) may have stored it meanwhile.
        l.entry = get_entry(st, l.key);
        return l;
    }

    template <class F> void count(const std::string& tag, F&& change) {
        std::lock_guard lock(counters_mutex);
        change(totals[tag]);
        change(pending[tag]);
    }

    std::map<std::string, store::Counters> take_pending(bool force) {
        std::lock_guard lock(counters_mutex);
        const auto now = Clock::now();
        if (!force && now - last_push < k_counter_push_interval) return {};
        last_push = now;
        return std::exchange(pending, {});
    }
};

BytecodeCache::BytecodeCache(store::Store& store, BytecodeCacheOptions options)
    : m_store(store), m_impl(std::make_unique<Impl>(std::move(options))) {}

BytecodeCache::~BytecodeCache() {
    m_impl->closing = true;
    {
        // Pool destructors reap workers; after this no prefetch callback can run.
        std::map<std::string, std::unique_ptr<python::CompilerPool>> pools;
        {
            std::lock_guard lock(m_impl->pools_mutex);
            pools.swap(m_impl->pools);
        }
    }
    try {
        push_counters();
    } catch (const std::exception& e) {
        LOG_WARN(std::string("bytecode cache: could not save counters: ") + e.what());
    }
}

python::CompilerPool& BytecodeCache::pool_for(const python::Interpreter& interpreter) {
    std::lock_guard lock(m_impl->pools_mutex);
    auto& slot = m_impl->pools[interpreter.path];
    if (!slot) slot = std::make_unique<python::CompilerPool>(interpreter, m_impl->options.pool);
    return *slot;
}

std::uint64_t BytecodeCache::sources_read() const {
    return m_impl->sources_read.load();
}

BytecodeCache::ImportListCounts BytecodeCache::import_lists() const {
    return {m_impl->import_lists_stored.load(), m_impl->import_lists_scanned.load()};
}

namespace {

std::string import_list_key(const hash::ContentHash& content) {
    std::string key(1, char(imports::k_scanner_version));
    key.append(reinterpret_cast<const char*>(content.bytes.data()), content.bytes.size());
    return key;
}

std::vector<imports::ImportRef> scan_and_keep(store::Store& store, std::string_view source,
                                              const hash::ContentHash& content) {
    auto refs = imports::scan_imports(source);
    store.put_imports(import_list_key(content), imports::encode_import_list(refs));
    return refs;
}

} // namespace

std::optional<std::vector<imports::ImportRef>> BytecodeCache::imports_of(int fd,
                                                                         const struct stat& st) {
    auto stored = [&](const hash::ContentHash& content) {
        std::optional<std::vector<imports::ImportRef>> refs;
        if (auto value = m_store.get_imports(import_list_key(content)))
            refs = imports::decode_import_list(*value);
        if (refs) ++m_impl->import_lists_stored;
        return refs;
    };
    const auto known = m_impl->known(m_store, SourceStamp::of(st));
    if (known)
        if (auto refs = stored(*known)) return refs;
    auto read = read_open_source(fd);
    auto* source = std::get_if<SourceBytes>(&read);
    if (!source) return std::nullopt;
    ++m_impl->sources_read;
    const auto content = hash::ContentHash::of(source->bytes);
    m_impl->learn(m_store, source->stamp, content);
    // Content seen before under another stamp (a copy, a touched or reverted file).
    if (!known || !(*known == content))
        if (auto refs = stored(content)) return refs;
    ++m_impl->import_lists_scanned;
    return scan_and_keep(m_store, source->bytes, content);
}

std::vector<imports::ImportRef> BytecodeCache::imports_in(std::string_view source) {
    ++m_impl->import_lists_scanned;
    return scan_and_keep(m_store, source, hash::ContentHash::of(source));
}

std::map<std::string, store::Counters> BytecodeCache::counters() const {
    std::lock_guard lock(m_impl->counters_mutex);
    return m_impl->totals;
}

void BytecodeCache::push_counters() {
    for (const auto& [tag, delta] : m_impl->take_pending(true)) m_store.add_counters(tag, delta);
}

PycResult BytecodeCache::get_pyc(int dirfd, const std::string& name, const struct stat* st,
                                 const python::Interpreter& interpreter, int optimize,
                                 pyc::PycMode mode, const std::string& co_filename,
                                 OnMiss on_miss) {
    const std::string file = co_filename.empty() ? describe_source(dirfd, name) : co_filename;
    if (!usable(interpreter)) {
        PycError e;
        e.kind = PycErrorKind::NoInterpreter;
        e.message = file + ": no usable interpreter for '" + interpreter.cache_tag + "'";
        return e;
    }
    const std::string& tag = interpreter.cache_tag;
    // Only what the store has: a known source that is not stored need not be read.
    auto looked = m_impl->look_up(m_store, dirfd, name, st, interpreter, optimize, file,
                                  on_miss != OnMiss::Fail);
    if (auto* e = std::get_if<PycError>(&looked)) return std::move(*e);
    Lookup& l = std::get<Lookup>(looked);

    Pyc pyc;
    pyc.stamp = l.stamp;
    pyc.content = l.content;
    store::Entry entry;
    if (l.entry) {
        m_impl->count(tag, [](store::Counters& c) { ++c.hits; });
        entry = std::move(*l.entry);
    } else if (on_miss == OnMiss::Fail) {
        PycError e;
        e.kind = PycErrorKind::NotStored;
        e.message = file + ": not in the store";
        return e;
    } else {
        m_impl->count(tag, [](store::Counters& c) { ++c.misses; });
        python::CompileRequest request{l.source->bytes, file, int(store_optimize(optimize))};
        auto result = pool_for(interpreter).compile(l.content, request);
        if (!storable(result.status)) {
            PycError e;
            e.kind = PycErrorKind::Unavailable;
            e.message =
                file + ": compiler unavailable: " +
                (result.error_message.empty() ? std::string("timed out") : result.error_message);
            return e;
        }
        entry = entry_from(result, interpreter, l.source->bytes);
        const bool ok = entry.kind == store::EntryKind::Code;
        m_impl->count(tag, [&](store::Counters& c) {
            if (result.joined) return; // counted once, by the caller that compiled
            ++(ok ? c.compiles : c.compile_errors);
            c.compile_seconds += result.seconds;
        });
        // One line per distinct content: later imports hit the stored negative entry.
        // The log names the real file (where to fix it), whatever path CPython imported it by.
        if (!ok && !result.joined) log_compile_error(entry, describe_source(dirfd, name), tag);
        m_impl->put_entry(m_store, l.key, entry);
        pyc.compiled = true;
    }

    PycResult out;
    if (entry.kind != store::EntryKind::Code) {
        out = compile_error(entry.error, file);
    } else {
        pyc::SourceFacts facts;
        facts.mtime_sec = l.stamp.mtime_sec();
        facts.size = std::uint64_t(l.stamp.size);
        facts.source_hash = entry.source_hash;
        pyc.bytes = pyc::build_header(interpreter.magic, interpreter.minor, mode, facts);
        pyc.bytes += entry.code;
        const auto served = pyc.bytes.size();
        m_impl->count(tag, [&](store::Counters& c) {
            ++c.pycs_served;
            c.bytes_served += served;
        });
        out = std::move(pyc);
    }
    for (const auto& [t, delta] : m_impl->take_pending(false)) m_store.add_counters(t, delta);
    return out;
}

BytecodeCache::WarmOutcome BytecodeCache::warm(int dirfd, const std::string& name,
                                               const python::Interpreter& interpreter, int optimize,
                                               PycError* error) {
    const std::string file = describe_source(dirfd, name);
    auto fail = [&](PycError e, WarmOutcome outcome) {
        if (error) *error = std::move(e);
        return outcome;
    };
    if (!usable(interpreter)) {
        PycError e;
        e.kind = PycErrorKind::NoInterpreter;
        e.message = file + ": no usable interpreter";
        return fail(std::move(e), WarmOutcome::Failed);
    }
    const std::string& tag = interpreter.cache_tag;
    auto looked = m_impl->look_up(m_store, dirfd, name, nullptr, interpreter, optimize, file);
    if (auto* e = std::get_if<PycError>(&looked)) return fail(std::move(*e), WarmOutcome::Failed);
    Lookup& l = std::get<Lookup>(looked);
    if (l.entry) {
        m_impl->count(tag, [](store::Counters& c) { ++c.hits; });
        // A stored negative entry is reported (the source still does not compile).
        if (l.entry->kind != store::EntryKind::Code)
            return fail(compile_error(l.entry->error, file), WarmOutcome::CompileError);
        return WarmOutcome::AlreadyStored;
    }
    m_impl->count(tag, [](store::Counters& c) { ++c.misses; });
    python::CompileRequest request{l.source->bytes, file, int(store_optimize(optimize))};
    // Foreground: `warm` is the work itself, it gets every worker and the normal CPU class
    // (compiles ahead are confined to idle time and one worker fewer).
    auto result = pool_for(interpreter).compile(l.content, request, python::Priority::Foreground);
    if (!storable(result.status)) {
        PycError e;
        e.kind = PycErrorKind::Unavailable;
        e.message = file + ": compiler unavailable: " + result.error_message;
        return fail(std::move(e), WarmOutcome::Failed);
    }
    auto entry = entry_from(result, interpreter, l.source->bytes);
    const bool ok = entry.kind == store::EntryKind::Code;
    m_impl->count(tag, [&](store::Counters& c) {
        if (result.joined) return; // counted once, by the caller that compiled
        ++(ok ? c.compiles : c.compile_errors);
        c.compile_seconds += result.seconds;
    });
    m_impl->put_entry(m_store, l.key, entry);
    for (const auto& [t, delta] : m_impl->take_pending(false)) m_store.add_counters(t, delta);
    if (!ok) return fail(compile_error(entry.error, file), WarmOutcome::CompileError);
    return WarmOutcome::Compiled;
}

bool BytecodeCache::prefetching() const {
    return m_impl->options.prefetch;
}

std::shared_ptr<const std::string> BytecodeCache::prefetch(int dirfd, const std::string& name,
                                                           const python::Interpreter& interpreter,
                                                           int optimize) {
    if (!m_impl->options.prefetch || m_impl->closing || !usable(interpreter)) return nullptr;
    const std::string file = describe_source(dirfd, name);
    auto looked = m_impl->look_up(m_store, dirfd, name, nullptr, interpreter, optimize, file);
    auto* l = std::get_if<Lookup>(&looked);
    if (!l || !l->source) return nullptr; // not read: stored, and known unchanged
    auto source = std::make_shared<const std::string>(std::move(l->source->bytes));
    if (l->entry) return source;
    python::CompileRequest request{*source, file, int(store_optimize(optimize))};
    Impl* impl = m_impl.get();
    store::Store* st = &m_store;
    auto key = l->key;
    // Runs on a pool thread; the pools are destroyed before `impl`, so `impl` outlives it, and
    // the pool's own copy of the interpreter outlives the callback (no copy per prefetch).
    auto& pool = pool_for(interpreter);
    const python::Interpreter* ip = &pool.interpreter();
    pool.compile_async(l->content, std::move(request),
                       [impl, st, key, source, ip, file](const python::CompileResult& result) {
                           if (!storable(result.status)) return;
                           const python::Interpreter& interp = *ip;
                           auto entry = entry_from(result, interp, *source);
                           const bool ok = entry.kind == store::EntryKind::Code;
                           impl->count(interp.cache_tag, [&](store::Counters& c) {
                               ++(ok ? c.compiles : c.compile_errors);
                               c.compile_seconds += result.seconds;
                           });
                           if (!ok) log_compile_error(entry, file, interp.cache_tag);
                           impl->put_entry(*st, key, entry);
                       });
    return source;
}

} // namespace cachecore
