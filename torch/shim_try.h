// What the shim's C++ entry points (shim.cc, dist/dist.cc) share
// to keep every C++ exception on their side of the C interface: an error is
// returned as a malloc'd string (dt_err), freed by the Go side.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace dimtorch {

// dup copies s into a malloc'd C string (nullptr when out of memory).
inline char *dup(const std::string &s) {
  char *p = static_cast<char *>(std::malloc(s.size() + 1));
  if (p) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

}  // namespace dimtorch

// An entry point's body goes between DT_TRY and DT_CATCH(component): an
// exception becomes its message (libtorch's without the C++ backtrace), and
// the function otherwise returns nullptr (no error).
#define DT_TRY try {
#define DT_CATCH(component)                                          \
  }                                                                  \
  catch (const c10::Error &e) {                                      \
    return dimtorch::dup(e.what_without_backtrace());                \
  }                                                                  \
  catch (const std::exception &e) {                                  \
    return dimtorch::dup(e.what());                                  \
  }                                                                  \
  catch (...) {                                                      \
    return dimtorch::dup("unknown C++ exception in " component);     \
  }                                                                  \
  return nullptr;
