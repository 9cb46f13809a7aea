#pragma once

#include "cachecore/util/unique_fd.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <sys/stat.h>

namespace cachecore::pyc {

class PycFileDir;

// One materialized pyc: removed when the last owner lets go (the kernel no longer links to it).
class PycFile {
public:
    PycFile(std::shared_ptr<PycFileDir> dir, std::string name);
    ~PycFile();
    PycFile(const PycFile&) = delete;
    PycFile& operator=(const PycFile&) = delete;

    const std::string& path() const { return m_path; }

private:
    friend class PycFileDir;
    std::shared_ptr<PycFileDir> m_dir;
    std::string m_name;
    std::string m_path;
    std::uint64_t m_bytes;
    bool m_written = false;
};

// A private directory, on a memory filesystem, of real pyc files a mount links to, so that an
// importer opens and reads a pyc without a single FUSE round trip (CPython <= 3.13 sends an
// ioctl(TCGETS) on every open, which a FUSE regular file always forwards to the daemon).
//
// Each file gets the source's owner, group, permission bits (& 0444) and POSIX access ACL, so
// the kernel's own permission check on the pyc is the check it makes on the source: a pyc is
// never readable by someone who cannot read its source. Files are immutable once written (where
// the filesystem supports it) and never rewritten: a new source version gets a new file.
// The directory belongs to one daemon, which holds a lock on it; directories no daemon holds
// any more (one was killed) are removed when the next one starts.
class PycFileDir : public std::enable_shared_from_this<PycFileDir> {
public:
    // Creates `<base>/pycachefs.<pid>.XXXXXX` (mode 0711: traversable, not listable; `base` must
    // exist). `exact_owner`: give files the source's owner (needs CAP_CHOWN); otherwise files
    // belong to this process and only its user can use them. Throws std::runtime_error.
    static std::shared_ptr<PycFileDir> create(const std::string& base, bool exact_owner);
    ~PycFileDir();
    PycFileDir(const PycFileDir&) = delete;
    PycFileDir& operator=(const PycFileDir&) = delete;

    // Writes `bytes` as a new file for a source with stat `source_st` (its ACL read from
    // `source_path`, a path naming the source): complete, with its final owner, mode and ACL, and
    // immutable. nullptr and `err` (an errno; nothing is left behind) on failure: the caller
    // serves the pyc another way.
    std::shared_ptr<PycFile> write(std::string_view bytes, const struct stat& source_st,
                                   const std::string& source_path, int& err);

    const std::string& path() const { return m_path; }
    std::uint64_t files() const { return m_files.load(std::memory_order_relaxed); }
    std::uint64_t bytes() const { return m_bytes.load(std::memory_order_relaxed); }
    std::uint64_t written() const { return m_written.load(std::memory_order_relaxed); }

    // Removes directories named pycachefs.* under `base` that belong to this user and that no
    // live daemon holds (each holds a lock on its own). Returns how many were removed.
    static int sweep_stale(const std::string& base);

private:
    friend class PycFile;
    std::shared_ptr<PycFile> reserve(); // an unguessable name, not created yet
    int fill(PycFile& file, std::string_view bytes, const struct stat& source_st,
             const std::string& source_path);
    PycFileDir(std::string path, util::UniqueFd fd, bool exact_owner);
    void remove(const std::string& name, std::uint64_t bytes);

    std::string m_path;
    util::UniqueFd m_fd;
    bool m_exact_owner;
    std::atomic<std::uint64_t> m_files{0};
    std::atomic<std::uint64_t> m_bytes{0};
    std::atomic<std::uint64_t> m_written{0};
};

} // namespace cachecore::pyc
