/*
 * simd.hpp: the x86 intrinsics for the core's kernels (distance.cpp,
 * rabitq.cpp, rotation.cpp), included after internal.hpp (VIDX_X86).
 */
#ifndef VIDX_CORE_SIMD_HPP
#define VIDX_CORE_SIMD_HPP

#ifdef VIDX_X86
#include <immintrin.h>
#endif

/* GCC 12's AVX-512 headers trip false (maybe-)uninitialized warnings (_mm512_undefined). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#endif /* VIDX_CORE_SIMD_HPP */
