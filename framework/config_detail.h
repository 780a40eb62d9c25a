// Helpers shared by config.cpp (parsing, merging) and options.cpp (reading options):
// locations, dotted paths and value formatting. Internal to the framework.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "framework/config.h"

namespace cachelab::config_detail {

extern const char* const kCommandLine;  // the file label of values given as CLI overrides
extern const size_t kMaxQuotedValue;    // longest bad value quoted verbatim in an error message

std::string join_path(const std::string& parent, const std::string& key);
std::string location(const ConfigNode& n);  // "exp.yaml:7", "<command line>" or ""
std::string prefix(const ConfigNode& n);    // "exp.yaml:7: "
std::string describe_kind(const ConfigNode& n);
void set_paths(ConfigNode& n, const std::string& path);
void set_location(ConfigNode& n, const std::string& file, int line);
bool parse_bool(const std::string& s, bool& out);
bool parse_int64(const std::string& s, long long lo, long long hi, long long& out);
bool parse_double(const std::string& s, double& out);
std::string format_value(bool v);
std::string format_value(int v);
std::string format_value(int64_t v);
std::string format_value(double v);
std::string format_value(const std::string& v);
std::string render_inline(const std::string& s);

template <class T>
ConfigNode make_list(const std::vector<T>& values, const std::string& path) {
  ConfigNode n;
  n.kind = ConfigNode::Kind::Seq;
  n.path = path;
  for (size_t i = 0; i < values.size(); ++i)
    n.seq.push_back(
        ConfigNode::make_scalar(format_value(values[i]), join_path(path, std::to_string(i))));
  return n;
}

template <class T>
std::string render_list(const std::vector<T>& values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) s += ", ";
    s += render_inline(format_value(values[i]));
  }
  return s + "]";
}

}  // namespace cachelab::config_detail
