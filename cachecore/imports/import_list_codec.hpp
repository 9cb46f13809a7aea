#pragma once

#include "cachecore/imports/import_scanner.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cachecore::imports {

// What scan_imports finds for a source is a function of its bytes, so it is kept in the store
// by content hash (Store::get_imports): a walk along the import graph then reads no source it
// has scanned before. Bump when the scanner finds something else for the same bytes: lists of
// another version are not used.
constexpr unsigned char k_scanner_version = 1;

// A compact binary form (little-endian lengths, the version first).
std::string encode_import_list(const std::vector<ImportRef>& refs);
// nullopt for another version or anything malformed (a damaged entry is a miss, never a list).
std::optional<std::vector<ImportRef>> decode_import_list(std::string_view bytes);

} // namespace cachecore::imports
