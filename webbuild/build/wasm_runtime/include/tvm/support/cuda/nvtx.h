// webbuild: NVTX profiling ranges compile to nothing in the browser runtime (there is no CUDA).
#ifndef WEBBUILD_TVM_SUPPORT_CUDA_NVTX_H_
#define WEBBUILD_TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_TVM_SUPPORT_CUDA_NVTX_H_
