// Where cachelab finds things: the project root, the data folder, paths from configs.
// Torch-free.
#pragma once
#include <string>

namespace cachelab {

// The project root: CACHELAB_ROOT if set, else the source dir the binary was built from.
std::string project_root();
// <root>/data unless CACHELAB_DATA is set.
std::string default_data_dir();
// A path from a config: `~/x` is under $HOME, a relative path is under the project root.
std::string resolve_path(const std::string& path);

// 16 hex digits of a 64-bit FNV-1a hash of the file's bytes ("" if it cannot be read);
// cached per (path, size, modification time) within the process.
std::string file_digest(const std::string& path);

}  // namespace cachelab
