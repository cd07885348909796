// webbuild: streams over in-memory bytes, used to (de)serialize executables, shader tables and
// parameter blobs handed to the runtime as strings or ffi::Bytes.
#ifndef WEBBUILD_SUPPORT_BYTES_IO_H_
#define WEBBUILD_SUPPORT_BYTES_IO_H_

#include <tvm/support/io.h>
#include <tvm/support/serializer.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

// Reads from a buffer it does not own: the caller keeps the bytes alive while reading.
class BytesInStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  BytesInStream(const void* data, size_t size) : data_(static_cast<const char*>(data)), size_(size) {}
  // Any contiguous byte container: std::string, ffi::Bytes, ffi::String.
  template <typename Buffer>
  explicit BytesInStream(const Buffer& buffer) : BytesInStream(buffer.data(), buffer.size()) {}

  size_t Read(void* ptr, size_t size) override {
    size_t n = std::min(size, size_ - pos_);
    if (n != 0) std::memcpy(ptr, data_ + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) override { return 0; }

  size_t Tell() const { return pos_; }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Appends to a caller-owned string.
class BytesOutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit BytesOutStream(std::string* out) : out_(out) {}

  size_t Read(void*, size_t) override { return 0; }
  size_t Write(const void* ptr, size_t size) override {
    out_->append(static_cast<const char*>(ptr), size);
    return size;
  }

 private:
  std::string* out_;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_SUPPORT_BYTES_IO_H_
