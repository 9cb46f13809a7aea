#pragma once

#include <lmdb.h>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace cachecore::store::lmdb {

// An LMDB call failed: carries the code so callers can tell MDB_MAP_FULL from ENOSPC.
struct Failure : std::runtime_error {
    Failure(int rc, const std::string& what)
        : std::runtime_error(what + ": " + mdb_strerror(rc)), code(rc) {}
    int code;
};

inline void check(int rc, const char* what) {
    if (rc != 0) throw Failure(rc, what);
}

inline MDB_val to_val(std::string_view s) {
    return MDB_val{s.size(), const_cast<char*>(s.data())};
}

inline std::string_view view(const MDB_val& v) {
    return {static_cast<const char*>(v.mv_data), v.mv_size};
}

// Owns a transaction: aborted unless committed.
class Txn {
public:
    Txn() = default;
    explicit Txn(MDB_txn* txn) : m_txn(txn) {}
    Txn(const Txn&) = delete;
    Txn& operator=(const Txn&) = delete;
    Txn(Txn&& other) noexcept : m_txn(std::exchange(other.m_txn, nullptr)) {}
    ~Txn() {
        if (m_txn) mdb_txn_abort(m_txn);
    }

    MDB_txn* get() const { return m_txn; }
    // Returns the LMDB code; the transaction is gone either way.
    int commit() { return mdb_txn_commit(std::exchange(m_txn, nullptr)); }

private:
    MDB_txn* m_txn = nullptr;
};

// Owns a cursor; closed before its transaction ends.
class Cursor {
public:
    Cursor(MDB_txn* txn, MDB_dbi dbi) { check(mdb_cursor_open(txn, dbi, &m_cursor), "cursor"); }
    Cursor(const Cursor&) = delete;
    Cursor& operator=(const Cursor&) = delete;
    ~Cursor() { mdb_cursor_close(m_cursor); }

    MDB_cursor* get() const { return m_cursor; }
    // Moves with `op`; false at the end. Other failures throw.
    bool move(MDB_val& key, MDB_val& value, MDB_cursor_op op) {
        int rc = mdb_cursor_get(m_cursor, &key, &value, op);
        if (rc == MDB_NOTFOUND) return false;
        check(rc, "cursor get");
        return true;
    }

private:
    MDB_cursor* m_cursor = nullptr;
};

} // namespace cachecore::store::lmdb
