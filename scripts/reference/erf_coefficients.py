#!/usr/bin/env python3
"""Coefficients of the vectorised erf in Sources/CKernels/VectorKernelsBody.h (numpy 2.x, mpmath 1.3).

|x| < 0.5: erf(x) = x * sum_{n<=8} c_n x^(2n), c_n = (2/sqrt(pi)) (-1)^n / (n! (2n+1)) (Taylor; truncation < 3e-13).
0.5 <= |x| <= 4: a degree-20 Chebyshev least-squares fit of erf in t = (|x| - 2.25) / 1.75 on 4000 Chebyshev nodes,
converted to monomials in t (largest coefficient ~1, so Horner in double is stable); max error about 5e-11.
Prints C hex-float literals, highest degree first, as the Horner loops use them, and the measured error of the
double Horner evaluation on a fine grid against mpmath.
"""
import mpmath as mp
import numpy as np
from numpy.polynomial import chebyshev as C

mp.mp.dps = 50
small = [float(2 / mp.sqrt(mp.pi) * (-1) ** n / (mp.factorial(n) * (2 * n + 1))) for n in range(9)]
lo, hi, degree, nodes = 0.5, 4.0, 20, 4000
center, half = (lo + hi) / 2, (hi - lo) / 2
t = np.cos(np.pi * (np.arange(nodes) + 0.5) / nodes)
y = np.array([float(mp.erf(mp.mpf(center) + mp.mpf(half) * mp.mpf(v))) for v in t])
large = C.cheb2poly(C.chebfit(t, y, degree))

print("small (x^16 ... x^0):", ", ".join(float(c).hex() for c in reversed(small)))
print("large (t^20 ... t^0):", ", ".join(float(c).hex() for c in reversed(large)))
print("t = |x| *", (1 / half).hex(), "-", (center / half).hex())

worst = 0.0
for x in np.linspace(lo, hi, 20001):
    tv = x * (1 / half) - center / half
    p = float(large[-1])
    for c in reversed(large[:-1]):
        p = p * tv + float(c)
    worst = max(worst, abs(float(p - mp.erf(mp.mpf(x)))))
print("max |error| on [0.5, 4]:", worst)
