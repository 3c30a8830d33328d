#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cblas.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
/* The bench MLP's GEMMs at batch 64: forward Yᵀ = W·Xᵀ (Linear's orientation for batches of ≤ 256 rows), backward dX = dY·W and dW = dYᵀ·X, for layers
   512→2048, 2048→2048, 2048→2048, 2048→512. Reports GFLOP/s over one whole step's GEMMs (median of 15). */
int main(void){
  int dims[5]={512,2048,2048,2048,512}, B=64;
  float *a=malloc(4*2048*2048),*b=malloc(4*2048*2048),*c=malloc(4*2048*2048);
  for(int i=0;i<2048*2048;i++){a[i]=(float)rand()/RAND_MAX-0.5f;b[i]=(float)rand()/RAND_MAX-0.5f;c[i]=0;}
  double best[15]; double flops=0;
  for(int r=0;r<18;r++){ double t0=now(); flops=0;
    for(int l=0;l<4;l++){int in=dims[l],out=dims[l+1];
      cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,out,B,in,1,b,in,a,in,0,c,B);  /* Y^T = W.X^T, as Linear for <= 256 rows */
      cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,B,in,out,1,a,out,b,in,0,c,in);
      cblas_sgemm(CblasRowMajor,CblasTrans,CblasNoTrans,out,in,B,1,a,out,b,in,1,c,in);
      flops+=3*2.0*B*in*out;}
    if(r>=3) best[r-3]=now()-t0; }
  for(int i=0;i<15;i++)for(int j=i+1;j<15;j++)if(best[j]<best[i]){double t=best[i];best[i]=best[j];best[j]=t;}
  printf("%.1f", flops/best[7]/1e9);
  return 0;}
