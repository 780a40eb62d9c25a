#include "framework/paths.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

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

std::string file_digest(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return "";
  const auto mtime = fs::last_write_time(path, ec).time_since_epoch().count();
  static std::mutex mu;
  static std::map<std::string, std::string> cache;
  const std::string key = path + "|" + std::to_string(size) + "|" + std::to_string(mtime);
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  std::ifstream f(path, std::ios::binary);
  uint64_t h = 1469598103934665603ull;
  char buf[1 << 16];
  while (f.read(buf, sizeof buf) || f.gcount() > 0) {
    for (std::streamsize i = 0; i < f.gcount(); ++i) h = (h ^ static_cast<unsigned char>(buf[i])) * 1099511628211ull;
    if (!f) break;
  }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return cache[key] = out;
}

std::string default_data_dir() {
  if (const char* d = std::getenv("CACHELAB_DATA")) return d;
  return project_root() + "/data";
}

}  // namespace cachelab
