#include "framework/paths.h"

#include <cstdlib>

namespace cachelab {

std::string project_root() {
  if (const char* r = std::getenv("CACHELAB_ROOT")) return r;
#ifdef CACHELAB_SOURCE_DIR
  return CACHELAB_SOURCE_DIR;
#else
  return ".";
#endif
}

std::string resolve_path(const std::string& p) {
  if (p.rfind("~/", 0) == 0 && std::getenv("HOME")) return std::string(std::getenv("HOME")) + p.substr(1);
  return p.empty() || p[0] == '/' ? p : project_root() + "/" + p;
}

std::string default_data_dir() {
  if (const char* d = std::getenv("CACHELAB_DATA")) return d;
  return project_root() + "/data";
}

}  // namespace cachelab
