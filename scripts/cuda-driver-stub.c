/* A link-time stand-in for the NVIDIA driver's libcuda.so.1, for building the CUDA backend on a
 * machine without a driver (docs/gpu.md): the driver API functions ggml-cuda calls directly (its
 * virtual memory pool; `nm -D --undefined-only libggml-cuda.so | grep ' cu[A-Z]'`). It is never
 * loaded at run time: a real driver is, and without one the backend reports the library missing.
 * Were it loaded, every call fails with CUDA_ERROR_NO_DEVICE. */
typedef int CUresult;
#define NO_DEVICE(name) \
  CUresult name(void) { return 100; }
NO_DEVICE(cuDeviceGet)
NO_DEVICE(cuDeviceGetAttribute)
NO_DEVICE(cuMemAddressFree)
NO_DEVICE(cuMemAddressReserve)
NO_DEVICE(cuMemCreate)
NO_DEVICE(cuMemGetAllocationGranularity)
NO_DEVICE(cuMemMap)
NO_DEVICE(cuMemRelease)
NO_DEVICE(cuMemSetAccess)
NO_DEVICE(cuMemUnmap)
CUresult cuGetErrorString(int error, const char** text) {
  (void)error;
  *text = "no CUDA driver (link-time stub)";
  return 0;
}
