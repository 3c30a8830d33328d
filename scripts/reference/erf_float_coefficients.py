#!/usr/bin/env python3
"""Coefficients of the float32 erf that GELU uses (erf_f in Sources/CKernels/VectorKernelsBody.h); numpy 2.x, mpmath 1.3.

|x| < 0.5: erf(x) = x * sum_{n<=6} c_n x^(2n), c_n = (2/sqrt(pi)) (-1)^n / (n! (2n+1)) (Taylor; truncation < 5e-10
relative), evaluated as x*c_0 + (x*x^2)*(c_1 + c_2 x^2 + ...). 0.5 <= |x| < 1.5 and 1.5 <= |x| < 4: degree-12 Chebyshev least-squares fits of erf in t = (|x| - c)/h on
each piece (2000 Chebyshev nodes), converted to monomials and rounded to float32. |x| >= 4: +-1 (erf(4) = 1 - 1.5e-8
rounds to 1 in float32). Prints C hex-float literals, highest degree first, and the error of the float32 Horner
evaluation (numpy float32: every operation rounded, no fused multiply-add, as the kernel computes) against mpmath
on a grid, in ulps of the float32 result.
"""
import mpmath as mp
import numpy as np
from numpy.polynomial import chebyshev as C

mp.mp.dps = 40
f32 = np.float32
DEGREE = 12
PIECES = [(0.5, 1.5), (1.5, 4.0)]


def fit(lo, hi):
    center, half = (lo + hi) / 2, (hi - lo) / 2
    nodes = 2000
    t = np.cos(np.pi * (np.arange(nodes) + 0.5) / nodes)
    y = np.array([float(mp.erf(mp.mpf(center) + mp.mpf(half) * mp.mpf(v))) for v in t])
    mono = C.cheb2poly(C.chebfit(t, y, DEGREE))
    return [f32(c) for c in reversed(mono)], f32(1 / half), f32(center / half)


small = [f32(float(2 / mp.sqrt(mp.pi) * (-1) ** n / (mp.factorial(n) * (2 * n + 1)))) for n in range(7)][::-1]
pieces = [fit(lo, hi) for lo, hi in PIECES]


def erf_f(x):
    """The kernel's operations in float32, element by element."""
    x = f32(x)
    a, s = f32(abs(x)), f32(x * x)
    if a < f32(0.5):
        # x·c0 + (x·s)·(c1 + c2·s + ...): the leading term rounds once, the rest is a small correction
        q = small[0]
        for c in small[1:-1]:
            q = f32(f32(q * s) + c)
        return f32(f32(x * small[-1]) + f32(f32(x * s) * q))
    if a >= f32(4.0):
        return f32(np.copysign(1.0, x))
    cf, scale, shift = pieces[0] if a < f32(1.5) else pieces[1]
    t = f32(f32(a * scale) - shift)
    p = cf[0]
    for c in cf[1:]:
        p = f32(f32(p * t) + c)
    return f32(np.copysign(p, x))


def hexes(values):
    return ", ".join(float(v).hex() + "f" for v in values)


print("small (x^12 ... x^0 in x^2):", hexes(small))
for (lo, hi), (cf, scale, shift) in zip(PIECES, pieces):
    print(f"[{lo}, {hi}): t = |x| * {float(scale).hex()}f - {float(shift).hex()}f; t^{DEGREE} ... t^0:", hexes(cf))

worst = (0.0, 0.0)
grid = np.concatenate([np.linspace(0.0, 4.2, 84001), np.geomspace(1e-30, 0.5, 2000)]).astype(f32)
for x in grid:
    exact = mp.erf(mp.mpf(float(x)))
    got = erf_f(x)
    ulp = float(np.spacing(f32(float(exact)))) if float(exact) != 0 else 2.0 ** -149
    err = abs(float(got) - float(exact)) / ulp
    if err > worst[0]:
        worst = (err, float(x))
print(f"max error on [0, 4.2]: {worst[0]:.3f} ulp at {worst[1]}")
