// webbuild: Serializer specialisations for tvm::support::Stream.
// The byte layout must match what the TVM compiler writes (VM executables, WebGPU shader tables,
// parameter blobs): little-endian scalars; strings, vectors, arrays and maps as a uint64 count
// followed by their elements (raw bytes for scalar vectors); DLDataType as u8 code, u8 bits,
// u16 lanes; DLDevice as two int32.
#ifndef WEBBUILD_TVM_SUPPORT_SERIALIZER_H_
#define WEBBUILD_TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/endian.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

// wasm32 and the x86/arm hosts that write these blobs are all little-endian, so scalars are raw
// copies; refuse to build anywhere that would need byte swapping rather than misread silently.
static_assert(TVM_FFI_IO_NO_ENDIAN_SWAP, "webbuild's serializer assumes a little-endian target");

namespace tvm {
namespace support {

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const T& v) { s->Write(&v, sizeof(T)); }
  static bool Read(Stream* s, T* v) { return s->Read(v, sizeof(T)) == sizeof(T); }
};

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_enum_v<T>>> {
  static constexpr bool enabled = true;
  using Raw = std::underlying_type_t<T>;
  static void Write(Stream* s, const T& v) { Serializer<Raw>::Write(s, static_cast<Raw>(v)); }
  static bool Read(Stream* s, T* v) {
    Raw raw;
    if (!Serializer<Raw>::Read(s, &raw)) return false;
    *v = static_cast<T>(raw);
    return true;
  }
};

namespace detail {
// Count prefix shared by every container below.
inline void WriteCount(Stream* s, size_t n) { Serializer<uint64_t>::Write(s, static_cast<uint64_t>(n)); }
inline bool ReadCount(Stream* s, size_t* n) {
  uint64_t raw;
  if (!Serializer<uint64_t>::Read(s, &raw)) return false;
  *n = static_cast<size_t>(raw);
  return true;
}
inline bool ReadChars(Stream* s, std::string* out) {
  size_t n;
  if (!ReadCount(s, &n)) return false;
  out->resize(n);
  return n == 0 || s->Read(&(*out)[0], n) == n;
}
}  // namespace detail

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::string& v) {
    detail::WriteCount(s, v.size());
    if (!v.empty()) s->Write(v.data(), v.size());
  }
  static bool Read(Stream* s, std::string* v) { return detail::ReadChars(s, v); }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::String& v) {
    detail::WriteCount(s, v.size());
    if (v.size() != 0) s->Write(v.data(), v.size());
  }
  static bool Read(Stream* s, ffi::String* v) {
    std::string chars;
    if (!detail::ReadChars(s, &chars)) return false;
    *v = ffi::String(std::move(chars));
    return true;
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::vector<T>& v) {
    detail::WriteCount(s, v.size());
    if constexpr (std::is_arithmetic_v<T>) {
      if (!v.empty()) s->Write(v.data(), v.size() * sizeof(T));
    } else {
      for (const T& item : v) Serializer<T>::Write(s, item);
    }
  }
  static bool Read(Stream* s, std::vector<T>* v) {
    size_t n;
    if (!detail::ReadCount(s, &n)) return false;
    v->resize(n);
    if constexpr (std::is_arithmetic_v<T>) {
      return n == 0 || s->Read(v->data(), n * sizeof(T)) == n * sizeof(T);
    } else {
      for (T& item : *v) {
        if (!Serializer<T>::Read(s, &item)) return false;
      }
      return true;
    }
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::pair<A, B>& v) {
    Serializer<A>::Write(s, v.first);
    Serializer<B>::Write(s, v.second);
  }
  static bool Read(Stream* s, std::pair<A, B>* v) {
    return Serializer<A>::Read(s, &v->first) && Serializer<B>::Read(s, &v->second);
  }
};

template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::unordered_map<K, V>& v) {
    detail::WriteCount(s, v.size());
    for (const auto& kv : v) {
      Serializer<K>::Write(s, kv.first);
      Serializer<V>::Write(s, kv.second);
    }
  }
  static bool Read(Stream* s, std::unordered_map<K, V>* v) {
    size_t n;
    if (!detail::ReadCount(s, &n)) return false;
    v->clear();
    for (size_t i = 0; i < n; ++i) {
      K key;
      V value;
      if (!Serializer<K>::Read(s, &key) || !Serializer<V>::Read(s, &value)) return false;
      (*v)[std::move(key)] = std::move(value);
    }
    return true;
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::Array<T>& v) {
    detail::WriteCount(s, v.size());
    for (const T& item : v) Serializer<T>::Write(s, item);
  }
  static bool Read(Stream* s, ffi::Array<T>* v) {
    size_t n;
    if (!detail::ReadCount(s, &n)) return false;
    ffi::Array<T> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      T item;
      if (!Serializer<T>::Read(s, &item)) return false;
      out.push_back(std::move(item));
    }
    *v = std::move(out);
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::Map<K, V>& v) {
    detail::WriteCount(s, v.size());
    for (const auto& kv : v) {
      Serializer<K>::Write(s, kv.first);
      Serializer<V>::Write(s, kv.second);
    }
  }
  static bool Read(Stream* s, ffi::Map<K, V>* v) {
    size_t n;
    if (!detail::ReadCount(s, &n)) return false;
    ffi::Map<K, V> out;
    for (size_t i = 0; i < n; ++i) {
      K key;
      V value;
      if (!Serializer<K>::Read(s, &key) || !Serializer<V>::Read(s, &value)) return false;
      out.Set(std::move(key), std::move(value));
    }
    *v = std::move(out);
    return true;
  }
};

template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const DLDataType& v) {
    Serializer<uint8_t>::Write(s, v.code);
    Serializer<uint8_t>::Write(s, v.bits);
    Serializer<uint16_t>::Write(s, v.lanes);
  }
  static bool Read(Stream* s, DLDataType* v) {
    return Serializer<uint8_t>::Read(s, &v->code) && Serializer<uint8_t>::Read(s, &v->bits) &&
           Serializer<uint16_t>::Read(s, &v->lanes);
  }
};

template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const DLDevice& v) {
    Serializer<int32_t>::Write(s, static_cast<int32_t>(v.device_type));
    Serializer<int32_t>::Write(s, v.device_id);
  }
  static bool Read(Stream* s, DLDevice* v) {
    int32_t type;
    if (!Serializer<int32_t>::Read(s, &type) || !Serializer<int32_t>::Read(s, &v->device_id)) return false;
    v->device_type = static_cast<DLDeviceType>(type);
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_TVM_SUPPORT_SERIALIZER_H_
