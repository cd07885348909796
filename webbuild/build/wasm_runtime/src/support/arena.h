// webbuild: a bump allocator for the RPC endpoint's per-message scratch memory. Allocations stay
// valid until RecycleAll(), which keeps the standard pages for reuse and frees oversized ones.
#ifndef WEBBUILD_SUPPORT_ARENA_H_
#define WEBBUILD_SUPPORT_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace tvm {
namespace support {

class Arena {
 public:
  static constexpr size_t kPageSize = 16 << 10;

  template <typename T>
  T* allocate_(size_t count = 1) {
    return static_cast<T*>(Allocate(sizeof(T) * count, alignof(T)));
  }

  void RecycleAll() {
    oversized_.clear();
    page_ = 0;
    offset_ = 0;
  }

 private:
  void* Allocate(size_t size, size_t align) {
    if (size + align > kPageSize) {
      // Over-allocate so the returned pointer can be aligned.
      oversized_.emplace_back(new std::max_align_t[(size + align) / sizeof(std::max_align_t) + 1]);
      return AlignUp(reinterpret_cast<uintptr_t>(oversized_.back().get()), align);
    }
    while (true) {
      if (page_ == pages_.size()) {
        pages_.emplace_back(new std::max_align_t[kPageSize / sizeof(std::max_align_t)]);
        offset_ = 0;
      }
      uintptr_t base = reinterpret_cast<uintptr_t>(pages_[page_].get());
      uintptr_t start = reinterpret_cast<uintptr_t>(AlignUp(base + offset_, align));
      if (start + size <= base + kPageSize) {
        offset_ = start + size - base;
        return reinterpret_cast<void*>(start);
      }
      ++page_;
      offset_ = 0;
    }
  }

  static void* AlignUp(uintptr_t ptr, size_t align) {
    return reinterpret_cast<void*>((ptr + align - 1) / align * align);
  }

  std::vector<std::unique_ptr<std::max_align_t[]>> pages_;
  std::vector<std::unique_ptr<std::max_align_t[]>> oversized_;
  size_t page_ = 0;
  size_t offset_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_SUPPORT_ARENA_H_
