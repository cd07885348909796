// webbuild: IEEE-754 widening between binary formats, under the name TVM's sort kernels call
// (`__extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>` turns half bits into a float).
// Only widening is provided: it is all the web runtime reaches.
#ifndef WEBBUILD_BUILTIN_FP16_H_
#define WEBBUILD_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

// SrcT/DstT: the value types; SrcRepT/DstRepT: same-width unsigned integers holding their bits;
// SrcSigBits/DstSigBits: stored significand bits (10 for half, 23 for float, 52 for double).
template <typename SrcT, typename SrcRepT, int SrcSigBits, typename DstT, typename DstRepT, int DstSigBits>
inline DstT __extendXfYf2__(SrcT value) {
  static_assert(sizeof(SrcT) == sizeof(SrcRepT) && sizeof(DstT) == sizeof(DstRepT), "bit widths");
  static_assert(DstSigBits >= SrcSigBits && sizeof(DstRepT) >= sizeof(SrcRepT), "only widening");
  constexpr int kSrcBits = static_cast<int>(sizeof(SrcRepT) * 8);
  constexpr int kDstBits = static_cast<int>(sizeof(DstRepT) * 8);
  constexpr int kSrcExpBits = kSrcBits - SrcSigBits - 1;
  constexpr int kDstExpBits = kDstBits - DstSigBits - 1;
  constexpr int kSrcBias = (1 << (kSrcExpBits - 1)) - 1;
  constexpr int kDstBias = (1 << (kDstExpBits - 1)) - 1;
  constexpr SrcRepT kSrcExpMax = static_cast<SrcRepT>((1u << kSrcExpBits) - 1);
  constexpr DstRepT kDstExpMax = static_cast<DstRepT>((DstRepT{1} << kDstExpBits) - 1);
  constexpr SrcRepT kSrcSigMask = static_cast<SrcRepT>((SrcRepT{1} << SrcSigBits) - 1);

  SrcRepT bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const DstRepT sign = static_cast<DstRepT>(bits >> (kSrcBits - 1));
  const SrcRepT exp = static_cast<SrcRepT>((bits >> SrcSigBits) & kSrcExpMax);
  SrcRepT sig = static_cast<SrcRepT>(bits & kSrcSigMask);

  DstRepT out_exp = 0;
  DstRepT out_sig = 0;
  if (exp == kSrcExpMax) {  // inf / nan keep their payload
    out_exp = kDstExpMax;
    out_sig = static_cast<DstRepT>(sig) << (DstSigBits - SrcSigBits);
  } else if (exp != 0) {  // normal
    out_exp = static_cast<DstRepT>(static_cast<int>(exp) - kSrcBias + kDstBias);
    out_sig = static_cast<DstRepT>(sig) << (DstSigBits - SrcSigBits);
  } else if (sig != 0) {  // subnormal source: normal in the wider format
    int e = 1 - kSrcBias;
    while ((sig & (SrcRepT{1} << SrcSigBits)) == 0) {
      sig = static_cast<SrcRepT>(sig << 1);
      --e;
    }
    out_exp = static_cast<DstRepT>(e + kDstBias);
    out_sig = static_cast<DstRepT>(sig & kSrcSigMask) << (DstSigBits - SrcSigBits);
  }
  const DstRepT out = (sign << (kDstBits - 1)) | (out_exp << DstSigBits) | out_sig;
  DstT result;
  std::memcpy(&result, &out, sizeof(result));
  return result;
}

#endif  // WEBBUILD_BUILTIN_FP16_H_
