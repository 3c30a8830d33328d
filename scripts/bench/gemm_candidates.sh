#!/usr/bin/env bash
# The BLAS candidates side by side on the bench step's own GEMM shapes (scripts/bench/gemm_shapes.c: batch 64,
# forward and both backward products of 512→2048→2048→2048→512), one thread, ROUNDS alternated rounds:
# OpenBLAS with its own kernel choice, with OPENBLAS_CORETYPE=SkylakeX / Cooperlake / Haswell, BLIS 0.9
# (libblis-dev) and oneDNN 2.6's dnnl_sgemm (libdnnl-dev). Installs nothing; a candidate whose library is missing
# is skipped. Not part of CI.   scripts/bench/gemm_candidates.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-3}; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
inc=/usr/include/x86_64-linux-gnu/openblas-pthread
gcc -O2 gemm_shapes.c -I"$inc" -lopenblas -o "$tmp/openblas"
[ -e /usr/lib/x86_64-linux-gnu/libblis.so.4 ] && gcc -O2 gemm_shapes.c -I"$inc" /usr/lib/x86_64-linux-gnu/libblis.so.4 -o "$tmp/blis"
if [ -e /usr/include/oneapi/dnnl/dnnl.h ]; then
    # the same program with cblas_sgemm mapped onto dnnl_sgemm (row-major, as cblas's CblasRowMajor)
    sed 's|#include <cblas.h>|#include <oneapi/dnnl/dnnl.h>\nenum { CblasRowMajor, CblasNoTrans = 0, CblasTrans = 1 };\nstatic void cblas_sgemm(int o, int ta, int tb, int m, int n, int k, float al, const float *a, int lda, const float *b, int ldb, float be, float *c, int ldc) { (void)o; dnnl_sgemm(ta ? 0x54 : 0x4E, tb ? 0x54 : 0x4E, m, n, k, al, a, lda, b, ldb, be, c, ldc); }|' \
        gemm_shapes.c > "$tmp/dnnl.c"
    gcc -O2 "$tmp/dnnl.c" -ldnnl -o "$tmp/dnnl"
fi
echo "$(lscpu | sed -n 's/^Model name: *//p'), family $(lscpu | sed -n 's/^CPU family: *//p') model $(lscpu | sed -n 's/^Model: *//p'); OpenBLAS's own choice: $(env -u OPENBLAS_CORETYPE python3 -c 'import ctypes; l=ctypes.CDLL("libopenblas.so.0"); l.openblas_get_corename.restype=ctypes.c_char_p; print(l.openblas_get_corename().decode())')"
for r in $(seq 1 "$rounds"); do
    printf 'round %s  openblas-own %s' "$r" "$(env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 "$tmp/openblas")"
    for c in SkylakeX Cooperlake Haswell; do printf ' | %s %s' "$c" "$(OPENBLAS_CORETYPE=$c OPENBLAS_NUM_THREADS=1 "$tmp/openblas")"; done
    [ -x "$tmp/blis" ] && printf ' | blis %s' "$(BLIS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$tmp/blis")"
    [ -x "$tmp/dnnl" ] && printf ' | onednn %s' "$(OMP_NUM_THREADS=1 "$tmp/dnnl")"
    echo
done
