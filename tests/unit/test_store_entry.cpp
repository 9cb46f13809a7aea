// The stored value format (entry.hpp) and the key layout (store_key.hpp): exact bytes, round
// trips, and that every kind of damage is rejected rather than decoded.

#include "cachecore/store/entry.hpp"
#include "cachecore/store/store_key.hpp"

#include <cstring>
#include <gtest/gtest.h>
#include <string>

using namespace cachecore;
using namespace cachecore::store;

namespace {

Entry code_entry() {
    Entry e;
    e.kind = EntryKind::Code;
    e.code = std::string("\xe3\x00\x00\x00 marshal bytes \x00\xff", 22);
    e.source_hash = 0x0123456789abcdefull;
    e.created = 1700000000;
    return e;
}

Entry error_entry() {
    Entry e;
    e.kind = EntryKind::CompileError;
    e.error.type = "SyntaxError";
    e.error.message = "invalid syntax \xc3\xa9";
    e.error.line = 42;
    e.source_hash = 7;
    e.created = -5;
    return e;
}

std::uint32_t le32(const std::string& s, std::size_t at) {
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<std::uint8_t>(s[at + i]);
    return v;
}

} // namespace

TEST(StoreEntry, CodeRoundTrip) {
    Entry in = code_entry();
    auto out = decode_entry(encode_entry(in));
    ASSERT_TRUE(out);
    EXPECT_EQ(out->kind, EntryKind::Code);
    EXPECT_EQ(out->code, in.code);
    EXPECT_EQ(out->source_hash, in.source_hash);
    EXPECT_EQ(out->created, in.created);
}

TEST(StoreEntry, EmptyAndLargeCodeRoundTrip) {
    for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{300000}}) {
        Entry in = code_entry();
        in.code.assign(size, '\x5a');
        auto out = decode_entry(encode_entry(in));
        ASSERT_TRUE(out) << size;
        EXPECT_EQ(out->code, in.code);
    }
}

TEST(StoreEntry, CompileErrorRoundTrip) {
    Entry in = error_entry();
    auto out = decode_entry(encode_entry(in));
    ASSERT_TRUE(out);
    EXPECT_EQ(out->kind, EntryKind::CompileError);
    EXPECT_EQ(out->error.type, "SyntaxError");
    EXPECT_EQ(out->error.message, in.error.message);
    EXPECT_EQ(out->error.line, 42);
    EXPECT_EQ(out->created, -5);
    EXPECT_TRUE(out->code.empty());

    in.error.line = -1;
    in.error.message.clear();
    out = decode_entry(encode_entry(in));
    ASSERT_TRUE(out);
    EXPECT_EQ(out->error.line, -1);
    EXPECT_EQ(out->error.message, "");
}

TEST(StoreEntry, HeaderLayoutIsFixedLittleEndian) {
    std::string v = encode_entry(code_entry());
    ASSERT_EQ(v.size(), k_entry_header_size + code_entry().code.size());
    EXPECT_EQ(v.substr(0, 4), "PCFE");
    EXPECT_EQ(v[4], 1);                                  // value format version
    EXPECT_EQ(v[5], static_cast<char>(EntryKind::Code)); // kind
    EXPECT_EQ(le32(v, 8), code_entry().code.size());     // payload length
    EXPECT_EQ(le32(v, 20), 0x89abcdefu);                 // source hash, low half first
    EXPECT_EQ(v.substr(k_entry_header_size), code_entry().code);
    EXPECT_EQ(peek_entry_kind(v), EntryKind::Code);
    EXPECT_EQ(peek_entry_kind(encode_entry(error_entry())), EntryKind::CompileError);
}

TEST(StoreEntry, EveryFlippedByteIsRejected) {
    for (const Entry& e : {code_entry(), error_entry()}) {
        std::string good = encode_entry(e);
        for (std::size_t i = 0; i < good.size(); ++i) {
            for (unsigned char mask : {0x01, 0x80}) {
                std::string bad = good;
                bad[i] = static_cast<char>(bad[i] ^ mask);
                EXPECT_FALSE(decode_entry(bad)) << "byte " << i << " mask " << int(mask);
                EXPECT_TRUE(entry_problem(bad)) << "byte " << i;
            }
        }
    }
}

TEST(StoreEntry, TruncatedExtendedAndForeignValuesAreRejected) {
    std::string good = encode_entry(error_entry());
    EXPECT_FALSE(entry_problem(good));
    for (std::size_t n = 0; n < good.size(); ++n) {
        EXPECT_FALSE(decode_entry(good.substr(0, n))) << n;
    }
    EXPECT_FALSE(decode_entry(good + "x"));
    EXPECT_FALSE(decode_entry(""));
    EXPECT_FALSE(decode_entry(std::string(100, '\0')));
    EXPECT_EQ(entry_problem("PCFX" + good.substr(4)), "bad format magic");
    std::string other_version = good;
    other_version[4] = 2;
    EXPECT_EQ(entry_problem(other_version), "unknown entry format version");
    std::string flipped_payload = good;
    flipped_payload.back() ^= 1;
    EXPECT_EQ(entry_problem(flipped_payload), "checksum mismatch");
}

TEST(StoreKey, BytesLayout) {
    StoreKey key;
    key.content = hash::ContentHash::of("print('hello')\n");
    key.magic = {0xcb, 0x0d, 0x0d, 0x0a};
    key.optimize = 2;
    auto b = key.bytes();
    ASSERT_EQ(b.size(), 22u);
    EXPECT_EQ(b[0], 0xcb);
    EXPECT_EQ(b[3], 0x0a);
    EXPECT_EQ(b[4], 2);
    EXPECT_EQ(b[5], k_format_version);
    EXPECT_EQ(0, std::memcmp(b.data() + 6, key.content.bytes.data(), 16));
}

TEST(StoreKey, FromBytesRoundTripAndRejects) {
    StoreKey key;
    key.content = hash::ContentHash::of("x = 1\n");
    key.magic = {0x55, 0x0d, 0x0d, 0x0a};
    key.optimize = 1;
    auto b = key.bytes();
    std::string s(reinterpret_cast<const char*>(b.data()), b.size());
    auto back = StoreKey::from_bytes(s);
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, key);

    std::string wrong_version = s;
    wrong_version[5] = static_cast<char>(k_format_version + 1);
    EXPECT_FALSE(StoreKey::from_bytes(wrong_version));
    EXPECT_FALSE(StoreKey::from_bytes(s.substr(0, 21)));
    EXPECT_FALSE(StoreKey::from_bytes(s + "x"));
    EXPECT_FALSE(StoreKey::from_bytes(""));
}

TEST(StoreKey, OneInterpretersKeysAreContiguous) {
    // Keys order by magic first, so per-interpreter listings are one range of the database.
    StoreKey a, b;
    a.magic = {0x01, 0x00, 0x0d, 0x0a};
    b.magic = {0x02, 0x00, 0x0d, 0x0a};
    a.content.bytes.fill(0xff);
    b.content.bytes.fill(0x00);
    auto ab = a.bytes(), bb = b.bytes();
    EXPECT_LT(std::memcmp(ab.data(), bb.data(), ab.size()), 0);
}
