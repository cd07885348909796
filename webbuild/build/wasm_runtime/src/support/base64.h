// webbuild: base64 (RFC 4648 alphabet, '=' padding) stream adaptors; the runtime uses them for
// tensors embedded in JSON (`__data_to_json__` / `__data_from_json__`).
#ifndef WEBBUILD_SUPPORT_BASE64_H_
#define WEBBUILD_SUPPORT_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/support/io.h>

#include <cctype>
#include <cstdint>
#include <string>

namespace tvm {
namespace support {

namespace base64_detail {
inline const char* Alphabet() { return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"; }
// Value of a base64 digit, or -1 for anything else (padding included).
inline int DigitValue(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace base64_detail

// Encodes everything written into `sink`; call Finish() once at the end to flush padding.
class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64OutStream(Stream* sink) : sink_(sink) {}

  size_t Read(void*, size_t) override { return 0; }
  size_t Write(const void* ptr, size_t size) override {
    const unsigned char* bytes = static_cast<const unsigned char*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      pending_[npending_++] = bytes[i];
      if (npending_ == 3) EmitGroup();
    }
    return size;
  }

  void Finish() {
    if (npending_ != 0) EmitGroup();
    if (!out_.empty()) {
      sink_->Write(out_.data(), out_.size());
      out_.clear();
    }
  }

 private:
  void EmitGroup() {
    const char* abc = base64_detail::Alphabet();
    uint32_t word = (uint32_t{pending_[0]} << 16) | (uint32_t{pending_[1]} << 8) | pending_[2];
    if (npending_ < 3) word &= npending_ == 1 ? 0xFF0000u : 0xFFFF00u;
    out_.push_back(abc[(word >> 18) & 63]);
    out_.push_back(abc[(word >> 12) & 63]);
    out_.push_back(npending_ > 1 ? abc[(word >> 6) & 63] : '=');
    out_.push_back(npending_ > 2 ? abc[word & 63] : '=');
    npending_ = 0;
    pending_[0] = pending_[1] = pending_[2] = 0;
    if (out_.size() >= 4096) {
      sink_->Write(out_.data(), out_.size());
      out_.clear();
    }
  }

  Stream* sink_;
  unsigned char pending_[3] = {0, 0, 0};
  int npending_ = 0;
  std::string out_;
};

// Decodes base64 text read from `source`. InitPosition() skips leading whitespace.
class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64InStream(Stream* source) : source_(source) {}

  void InitPosition() {
    char c;
    while (source_->Read(&c, 1) == 1) {
      if (!std::isspace(static_cast<unsigned char>(c))) {
        peeked_ = c;
        has_peeked_ = true;
        return;
      }
    }
  }

  size_t Read(void* ptr, size_t size) override {
    unsigned char* out = static_cast<unsigned char*>(ptr);
    size_t n = 0;
    while (n < size) {
      if (ready_pos_ == ready_len_ && !DecodeGroup()) break;
      out[n++] = ready_[ready_pos_++];
    }
    return n;
  }
  size_t Write(const void*, size_t) override { return 0; }

 private:
  bool NextChar(char* c) {
    if (has_peeked_) {
      has_peeked_ = false;
      *c = peeked_;
      return true;
    }
    return source_->Read(c, 1) == 1;
  }

  // Decodes the next four digits into up to three bytes; false at the end of the data.
  bool DecodeGroup() {
    if (finished_) return false;
    int values[4];
    int ndigits = 0;
    char c;
    while (ndigits < 4 && NextChar(&c)) {
      if (c == '=') {
        finished_ = true;
        break;
      }
      int v = base64_detail::DigitValue(static_cast<unsigned char>(c));
      if (v < 0) {
        if (std::isspace(static_cast<unsigned char>(c))) continue;
        // Anything else (e.g. a closing quote) ends the payload.
        finished_ = true;
        break;
      }
      values[ndigits++] = v;
    }
    if (ndigits == 0) return false;
    TVM_FFI_ICHECK_GE(ndigits, 2) << "truncated base64 data";
    for (int i = ndigits; i < 4; ++i) values[i] = 0;
    uint32_t word = (static_cast<uint32_t>(values[0]) << 18) | (static_cast<uint32_t>(values[1]) << 12) |
                    (static_cast<uint32_t>(values[2]) << 6) | static_cast<uint32_t>(values[3]);
    ready_[0] = static_cast<unsigned char>(word >> 16);
    ready_[1] = static_cast<unsigned char>(word >> 8);
    ready_[2] = static_cast<unsigned char>(word);
    ready_len_ = static_cast<size_t>(ndigits - 1);
    ready_pos_ = 0;
    if (ndigits < 4) finished_ = true;
    return true;
  }

  Stream* source_;
  char peeked_ = 0;
  bool has_peeked_ = false;
  bool finished_ = false;
  unsigned char ready_[3] = {0, 0, 0};
  size_t ready_len_ = 0;
  size_t ready_pos_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_SUPPORT_BASE64_H_
