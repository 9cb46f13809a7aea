#pragma once

#include <sys/stat.h>
#include <sys/types.h>

namespace fs::overlay {

// Whether a user may read a file, decided from its owner, group and mode as the kernel does
// (no ACLs: a tree relying on them for secrecy gets the mode's answer). `in_group(gid)` is asked
// only when the answer depends on the group, since finding a process's groups costs a read of
// /proc.
template <class InGroup>
bool may_read(uid_t uid, gid_t gid, const struct stat& st, InGroup in_group) {
    if (uid == 0) return true;
    if (uid == st.st_uid) return st.st_mode & S_IRUSR;
    const bool group_bit = st.st_mode & S_IRGRP;
    const bool other_bit = st.st_mode & S_IROTH;
    // Group membership only matters when the group bits say something else than "other".
    if (group_bit == other_bit) return other_bit;
    if (gid == st.st_gid || in_group(st.st_gid)) return group_bit;
    return other_bit;
}

} // namespace fs::overlay
