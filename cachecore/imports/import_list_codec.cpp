#include "cachecore/imports/import_list_codec.hpp"

#include <algorithm>
#include <cstdint>

namespace cachecore::imports {

namespace {

void put_u16(std::string& out, std::size_t v) {
    out.push_back(char(v & 0xff));
    out.push_back(char(v >> 8 & 0xff));
}

void put_text(std::string& out, const std::string& s) {
    put_u16(out, s.size());
    out += s;
}

struct Reader {
    std::string_view in;
    bool ok = true;
    std::size_t u8() {
        if (in.empty()) return ok = false, 0;
        auto v = std::size_t(static_cast<unsigned char>(in[0]));
        in.remove_prefix(1);
        return v;
    }
    std::size_t u16() {
        std::size_t lo = u8();
        return lo | u8() << 8;
    }
    std::string text() {
        std::size_t n = u16();
        if (!ok || in.size() < n) return ok = false, std::string();
        std::string s(in.substr(0, n));
        in.remove_prefix(n);
        return s;
    }
};

// Lengths are stored in 16 bits: longer names or lists are cut (a module name that long does
// not exist; a list that long is beyond what any walk follows).
constexpr std::size_t k_max_u16 = 0xffff;

// The items of `all` that fit the format, at most k_max_u16 of them.
template <class T, class Fits> std::vector<const T*> fitting(const std::vector<T>& all, Fits fits) {
    std::vector<const T*> kept;
    for (const auto& item : all)
        if (fits(item) && kept.size() < k_max_u16) kept.push_back(&item);
    return kept;
}

} // namespace

std::string encode_import_list(const std::vector<ImportRef>& refs) {
    std::string out(1, char(k_scanner_version));
    auto kept = fitting(refs, [](const ImportRef& r) { return r.module.size() <= k_max_u16; });
    put_u16(out, kept.size());
    for (const ImportRef* ref : kept) {
        out.push_back(char(std::clamp(ref->level, 0, 255)));
        out.push_back(char(ref->deferred ? 1 : 0));
        put_text(out, ref->module);
        auto names =
            fitting(ref->names, [](const std::string& n) { return n.size() <= k_max_u16; });
        put_u16(out, names.size());
        for (const std::string* name : names) put_text(out, *name);
    }
    return out;
}

std::optional<std::vector<ImportRef>> decode_import_list(std::string_view bytes) {
    Reader r{bytes};
    if (r.u8() != k_scanner_version || !r.ok) return std::nullopt;
    std::size_t n = r.u16();
    std::vector<ImportRef> refs;
    for (std::size_t i = 0; i < n && r.ok; ++i) {
        ImportRef ref;
        ref.level = int(r.u8());
        std::size_t flags = r.u8();
        if (flags > 1) return std::nullopt;
        ref.deferred = flags == 1;
        ref.module = r.text();
        std::size_t names = r.u16();
        for (std::size_t j = 0; j < names && r.ok; ++j) ref.names.push_back(r.text());
        refs.push_back(std::move(ref));
    }
    if (!r.ok || !r.in.empty()) return std::nullopt;
    return refs;
}

} // namespace cachecore::imports
