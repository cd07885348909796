// webbuild: the one string helper the runtime's RPC endpoint uses.
#ifndef WEBBUILD_SUPPORT_UTILS_H_
#define WEBBUILD_SUPPORT_UTILS_H_

#include <string>

namespace tvm {
namespace support {

inline bool StartsWith(const std::string& text, const std::string& prefix) {
  return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_SUPPORT_UTILS_H_
