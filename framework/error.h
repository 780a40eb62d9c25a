// One error type for all of cachelab, raised through one check macro.
// Library code throws; only main() prints and chooses the exit code.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace cachelab {

// what(): the message a user reads. origin(): where in cachelab's source it was raised
// (`check `expr` failed at framework/config.cpp:12`), printed only with CACHELAB_DEBUG=1.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, std::string origin = "")
      : std::runtime_error(what), origin_(std::move(origin)) {}
  const std::string& origin() const { return origin_; }

 private:
  std::string origin_;
};

namespace detail {
[[noreturn]] void raise(const char* expr, const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace cachelab

// CL_CHECK(cond, "message " << value << " hint"): throws cachelab::Error with the message
// (the text a user reads) followed by the failed expression and its source location.
#define CL_CHECK(cond, msg)                                                     \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::ostringstream cl_check_os_;                                          \
      cl_check_os_ << msg;                                                      \
      ::cachelab::detail::raise(#cond, __FILE__, __LINE__, cl_check_os_.str()); \
    }                                                                           \
  } while (0)

// CL_FAIL("message"): unconditional error.
#define CL_FAIL(msg) CL_CHECK(false, msg)
