// The native bfloat16 Linear kernels (Sources/CKernels/bf16_gemm.c) beside OpenBLAS sgemm on one shape, one thread,
// best of 20: forward x[M,K]·w[N,K]ᵀ, dx = dy·w, dW += dyᵀ·x. Needs a CPU with AVX512_BF16.
//   clang -O2 -ISources/CKernels/include scripts/bench/bf16_vs_sgemm.c Sources/CKernels/bf16_gemm.c -lopenblas -lm \
//       -o /tmp/bf16_vs_sgemm && OPENBLAS_NUM_THREADS=1 /tmp/bf16_vs_sgemm 64 2048 2048      (M K N)
// (Swift's clang, /opt/swift/usr/bin/clang: the kernels are compiled only under clang.) On a CPU whose OpenBLAS
// falls back to generic kernels set OPENBLAS_CORETYPE (e.g. SkylakeX) as speechain-mpi would.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cblas.h>
#include "BF16GEMM.h"
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: %s M K N\n", argv[0]); return 2; }
  if (!bf16_gemm_supported()) { printf("this CPU has no AVX512_BF16\n"); return 0; }
  size_t M=atoi(argv[1]),K=atoi(argv[2]),N=atoi(argv[3]);
  float *x=aligned_alloc(64,M*K*4),*w=aligned_alloc(64,N*K*4),*y=aligned_alloc(64,M*N*4),*g=aligned_alloc(64,N*K*4),*dy=aligned_alloc(64,M*N*4),*dx=aligned_alloc(64,M*K*4);
  for(size_t i=0;i<M*K;i++)x[i]=(rand()%100-50)*0.01f; for(size_t i=0;i<N*K;i++){w[i]=(rand()%100-50)*0.01f;g[i]=0;} for(size_t i=0;i<M*N;i++)dy[i]=(rand()%100-50)*0.01f;
  void*ws=aligned_alloc(64,(bf16_linear_workspace_bytes(M,K,N)+63)/64*64);
  double fl=2.0*M*N*K; double b[6]={1e9,1e9,1e9,1e9,1e9,1e9};
  for(int r=0;r<20;r++){
    double t=now(); bf16_linear_forward(x,w,NULL,y,M,K,N,ws); t=now()-t; if(t<b[0])b[0]=t;
    t=now(); bf16_linear_input_gradient(dy,w,dx,M,K,N,ws); t=now()-t; if(t<b[1])b[1]=t;
    t=now(); bf16_linear_accumulate_weight_gradient(dy,x,g,M,K,N,ws); t=now()-t; if(t<b[2])b[2]=t;
    t=now(); cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,M,N,K,1,x,K,w,K,0,y,N); t=now()-t; if(t<b[3])b[3]=t;
    t=now(); cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,M,K,N,1,dy,N,w,K,0,dx,K); t=now()-t; if(t<b[4])b[4]=t;
    t=now(); cblas_sgemm(CblasRowMajor,CblasTrans,CblasNoTrans,N,K,M,1,dy,N,x,K,1,g,K); t=now()-t; if(t<b[5])b[5]=t;
  }
  const char*nm[6]={"bf16 fwd","bf16 dx","bf16 dW","sgemm fwd","sgemm dx","sgemm dW"};
  for(int i=0;i<6;i++) printf("%s %zux%zux%zu: %.3f ms %.1f GFLOP/s\n",nm[i],M,K,N,b[i]*1e3,fl/b[i]/1e9);
}
