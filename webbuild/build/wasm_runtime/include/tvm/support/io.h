// webbuild: a minimal binary stream for TVM's web runtime sources.
// The wheel ships the runtime sources without this header; this version provides only what
// web/emcc/{wasm_runtime,webgpu_runtime,tvmjs_support}.cc reach.
#ifndef WEBBUILD_TVM_SUPPORT_IO_H_
#define WEBBUILD_TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

// Specialised per type in serializer.h (and by runtime headers for their own records).
// A specialisation sets `enabled = true` and has static Write(Stream*, const T&) / Read(Stream*, T*).
template <typename T, typename Enable = void>
struct Serializer {
  static constexpr bool enabled = false;
};

// Byte stream with typed helpers. Subclasses implement the two raw calls and re-export the
// typed overloads with `using Stream::Read; using Stream::Write;`.
class Stream {
 public:
  virtual ~Stream() = default;
  // Returns the number of bytes actually read (0 at end of stream).
  virtual size_t Read(void* ptr, size_t size) = 0;
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  void Write(const T& value) {
    static_assert(Serializer<T>::enabled, "no tvm::support::Serializer for this type");
    Serializer<T>::Write(this, value);
  }

  template <typename T>
  bool Read(T* out) {
    static_assert(Serializer<T>::enabled, "no tvm::support::Serializer for this type");
    return Serializer<T>::Read(this, out);
  }

  template <typename T>
  void WriteArray(const T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) Write<T>(values[i]);
  }

  template <typename T>
  bool ReadArray(T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      if (!Read<T>(values + i)) return false;
    }
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_TVM_SUPPORT_IO_H_
