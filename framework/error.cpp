#include "framework/error.h"

#include <cstring>

namespace cachelab {
namespace detail {

namespace {

// "/work/main/framework/config.cpp" -> "framework/config.cpp": enough to find the source
// without leaking the build machine's layout into every message.
std::string short_source_path(const char* file) {
  std::string path = file ? file : "?";
  size_t last = path.find_last_of('/');
  if (last == std::string::npos || last == 0) return path;
  size_t previous = path.find_last_of('/', last - 1);
  return previous == std::string::npos ? path : path.substr(previous + 1);
}

}  // namespace

void raise(const char* expr, const char* file, int line, const std::string& msg) {
  std::ostringstream os;
  // CL_FAIL passes the literal `false`: there is no condition worth quoting.
  if (expr == nullptr || std::strcmp(expr, "false") == 0)
    os << "raised at " << short_source_path(file) << ":" << line;
  else
    os << "check `" << expr << "` failed at " << short_source_path(file) << ":" << line;
  throw Error(msg, os.str());
}

}  // namespace detail
}  // namespace cachelab
