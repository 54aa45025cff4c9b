/*
 * gpu_model: the teacher on the GPU (kernels/forward.cu), the twin of
 * model_forward and model_logits in lib/. A GpuModel holds the model's
 * weights as bf16 on the device and activation buffers for up to
 * max_tokens tokens (B*T) per call.
 */
#ifndef DASH_GPU_MODEL_H
#define DASH_GPU_MODEL_H

#ifdef __cplusplus
extern "C" {
#endif
#include "model.h"
#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct GpuModel GpuModel;

/* gpu_model_new uploads m (which must outlive the GpuModel); dies when the
 * model needs what the CUDA backend does not have (head dims other than 64
 * and 128, MLP biases) */
GpuModel *gpu_model_new(const Model *m, int max_tokens);
void gpu_model_free(GpuModel *g);
/* gpu_model_forward runs B sequences of T tokens (host ids) and, if logits
 * is not NULL, writes every position's logits (B*T, V) to host memory */
void gpu_model_forward(GpuModel *g, const int32_t *ids, int B, int T, float *logits);

/* A GpuGradHook sees, going backwards, the device gradient dL/da (n, C)
 * of layer l's attention output. */
typedef void (*GpuGradHook)(void *ctx, int l, const uint16_t *d_da, int n, int C);

/* gpu_model_backward: the twin of model_backward. dhidden (B*T, C) and dx0
 * (or NULL) are host float32; the rest stays on the device. */
void gpu_model_backward(GpuModel *g, const int32_t *ids, int B, int T, const float *dhidden,
                        GpuGradHook grad_hook, void *ctx, float *dx0);

#ifdef __cplusplus
}
#endif
#endif
