// webbuild: a growable circular byte queue; the RPC endpoint buffers incoming and outgoing
// packets in two of these.
#ifndef WEBBUILD_SUPPORT_RING_BUFFER_H_
#define WEBBUILD_SUPPORT_RING_BUFFER_H_

#include <tvm/ffi/error.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace tvm {
namespace support {

class RingBuffer {
 public:
  RingBuffer() : buf_(kInitialCapacity) {}

  size_t bytes_available() const { return size_; }
  size_t capacity() const { return buf_.size(); }

  // Makes room for at least `n` queued bytes, keeping the queued data in order.
  void Reserve(size_t n) {
    if (n <= buf_.size()) return;
    std::vector<char> grown(std::max(n, buf_.size() * 2));
    CopyOut(grown.data(), size_);
    buf_.swap(grown);
    head_ = 0;
  }

  // Pops `size` bytes into `data`; the caller checks bytes_available() first.
  void Read(void* data, size_t size) {
    TVM_FFI_ICHECK_LE(size, size_) << "RingBuffer underflow";
    CopyOut(static_cast<char*>(data), size);
    Consume(size);
  }

  // Pushes `size` bytes, growing as needed.
  void Write(const void* data, size_t size) {
    Reserve(size_ + size);
    const char* src = static_cast<const char*>(data);
    size_t tail = (head_ + size_) % buf_.size();
    size_t first = std::min(size, buf_.size() - tail);
    std::memcpy(buf_.data() + tail, src, first);
    std::memcpy(buf_.data(), src + first, size - first);
    size_ += size;
  }

  // Hands up to `max_nbytes` queued bytes (one contiguous run) to `fsend(const void*, size_t)`,
  // which returns how many it took; those are popped. Returns that count.
  template <typename FSend>
  size_t ReadWithCallback(FSend fsend, size_t max_nbytes) {
    size_t run = std::min({max_nbytes, size_, buf_.size() - head_});
    size_t n = fsend(buf_.data() + head_, run);
    Consume(n);
    return n;
  }

  // Lets `frecv(void*, size_t)` fill up to `max_nbytes` of free space (one contiguous run);
  // it returns how many bytes it wrote, which become queued. Returns that count.
  template <typename FRecv>
  size_t WriteWithCallback(FRecv frecv, size_t max_nbytes) {
    Reserve(size_ + max_nbytes);
    size_t tail = (head_ + size_) % buf_.size();
    size_t run = std::min(max_nbytes, buf_.size() - tail);
    size_t n = frecv(buf_.data() + tail, run);
    size_ += n;
    return n;
  }

 private:
  static constexpr size_t kInitialCapacity = 1024;

  void CopyOut(char* dst, size_t size) const {
    size_t first = std::min(size, buf_.size() - head_);
    std::memcpy(dst, buf_.data() + head_, first);
    std::memcpy(dst + first, buf_.data(), size - first);
  }

  void Consume(size_t n) {
    head_ = (head_ + n) % buf_.size();
    size_ -= n;
    if (size_ == 0) head_ = 0;
  }

  std::vector<char> buf_;
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_SUPPORT_RING_BUFFER_H_
