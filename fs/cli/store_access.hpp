#pragma once

#include "cachecore/store/store.hpp"
#include "fs/cli/commands.hpp"

#include <memory>
#include <optional>
#include <string>

namespace fs::cli {

// Configuration for a command without -o (warm, stats, gc, ...): prints the error and returns
// nullopt when a file, variable or option is invalid. Also applies log_level.
std::optional<MountOptions> resolve_command_options(const Settings& cli);

// Opens the configured store. `must_exist`: a directory without a store is an error (stats, gc,
// verify do not create stores). Prints the error (naming the fix) and returns null on failure.
std::unique_ptr<cachecore::store::Store> open_store(const MountOptions& options, bool must_exist);

} // namespace fs::cli
