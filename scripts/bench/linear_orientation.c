/* Linear's float32 forward in both orientations OpenBLAS can be asked for: y = x·Wᵀ ([rows, out], W packed
   transposed) and yᵀ = W·xᵀ ([out, rows]); and dX = dy·W in two forms. Median of 21 calls per shape, one thread.
   Build: gcc -O2 scripts/bench/linear_orientation.c -o /tmp/linear_orientation -lopenblas
   Run:   OPENBLAS_NUM_THREADS=1 /tmp/linear_orientation IN OUT ROWS   (e.g. 2048 2048 64) */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cblas.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int cmp(const void*a,const void*b){double x=*(const double*)a,y=*(const double*)b;return x<y?-1:x>y;}
#define T(label, call) { double t[21]; for(int r=0;r<21;r++){double t0=now(); call; t[r]=now()-t0;} \
  qsort(t,21,sizeof(double),cmp); printf("%-36s %.3f ms %.1f GFLOP/s\n",label,t[10]*1e3,2.0*B*in*out/t[10]/1e9);}
int main(int argc,char**argv){
  if(argc<4){fprintf(stderr,"usage: %s IN OUT ROWS\n",argv[0]);return 2;}
  int in=atoi(argv[1]), out=atoi(argv[2]), B=atoi(argv[3]);
  size_t big=(size_t)(in>out?in:out)*(size_t)(in>out?in:out), act=(size_t)B*(in>out?in:out);
  float *w=malloc(4*big),*x=malloc(4*act),*c=malloc(4*(act>big?act:big));
  for(size_t i=0;i<big;i++) w[i]=(float)rand()/RAND_MAX-0.5f;
  for(size_t i=0;i<act;i++) x[i]=(float)rand()/RAND_MAX-0.5f;
  T("forward y = x.W^T", cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,B,out,in,1,x,in,w,in,0,c,out));
  T("forward y^T = W.x^T", cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,out,B,in,1,w,in,x,in,0,c,B));
  T("input gradient dx = dy.W", cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,B,in,out,1,x,out,w,in,0,c,in));
  T("input gradient dx^T = W^T.dy^T", cblas_sgemm(CblasRowMajor,CblasTrans,CblasTrans,in,B,out,1,w,in,x,out,0,c,B));
  return 0;}
