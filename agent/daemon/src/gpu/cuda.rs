//! The capacity challenge's GPU prover: C = A·B with cuBLAS `cublasGemmEx` (int8 inputs,
//! int32 accumulation and output, `CUBLAS_COMPUTE_32I`: the tensor-core IMMA path), via
//! cudarc with libcuda and libcublas loaded at run time.
//!
//! cudarc panics on the first call into a library it cannot load, so [`CudaProver::new`]
//! checks both libraries with `is_culib_present()` before anything else; a host without
//! them gets an error value, never a panic. int32 accumulation of int8 products is
//! exact, so the GPU's C is bit-identical to the CPU prover's (the tests compare them
//! on a GPU host; without one they cannot run, see docs/gpus.md).
//!
//! Layout: cuBLAS is column-major. The row-major C = A·B is the column-major Cᵀ = Bᵀ·Aᵀ;
//! the IMMA kernels want the first operand transposed (`T`, `N`), so B is transposed on
//! the host (O(n²)) and passed as the first operand with `op = T`, A as the second with
//! `op = N`.

#[cfg(feature = "nvidia")]
pub use real::CudaProver;

/// Whether libcuda and libcublas can be loaded (false without the `nvidia` feature).
pub fn libraries_present() -> bool {
    #[cfg(feature = "nvidia")]
    {
        real::libraries_present()
    }
    #[cfg(not(feature = "nvidia"))]
    {
        false
    }
}

#[cfg(feature = "nvidia")]
mod real {
    use std::ffi::c_void;
    use std::sync::Arc;

    use cudarc::cublas::CudaBlas;
    use cudarc::cublas::sys::{
        cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
    };
    use cudarc::driver::{CudaContext, DevicePtr as _, DevicePtrMut as _};
    use plinth_attestation::challenge::{Prover, ProverError, ProverInfo};

    pub(super) fn libraries_present() -> bool {
        // SAFETY: is_culib_present only tries to dlopen the library by its candidate
        // names and drops the handle; it calls no function of the library.
        let driver = unsafe { cudarc::driver::sys::is_culib_present() };
        // SAFETY: as above, for libcublas.
        let cublas = unsafe { cudarc::cublas::sys::is_culib_present() };
        driver && cublas
    }

    /// The cuBLAS prover on one GPU.
    #[derive(Debug, Clone)]
    pub struct CudaProver {
        index: u32,
        model: String,
    }

    impl CudaProver {
        /// The prover on GPU `index` (its model as NVML names it), or why there is none.
        pub fn new(index: u32, model: &str) -> Result<Self, ProverError> {
            if !libraries_present() {
                return Err(ProverError::Device {
                    device: format!("gpu:{index}"),
                    detail: "libcuda or libcublas cannot be loaded (install the NVIDIA driver and the CUDA 12 cuBLAS library)".to_owned(),
                });
            }
            Ok(Self {
                index,
                model: model.to_owned(),
            })
        }

        fn device_error(&self, what: &str, err: impl std::fmt::Display) -> ProverError {
            ProverError::Device {
                device: format!("gpu:{}", self.index),
                detail: format!("{what}: {err}"),
            }
        }
    }

    impl Prover for CudaProver {
        fn info(&self) -> ProverInfo {
            ProverInfo {
                device: format!("gpu:{}", self.index),
                model: self.model.clone(),
            }
        }

        fn multiply(&self, a: &[i8], b: &[i8], n: usize) -> Result<Vec<i32>, ProverError> {
            let side = i32::try_from(n).map_err(|err| self.device_error("n", err))?;
            let mut b_transposed = vec![0i8; n * n];
            for row in 0..n {
                for column in 0..n {
                    b_transposed[column * n + row] = b[row * n + column];
                }
            }
            let context: Arc<CudaContext> = CudaContext::new(self.index as usize)
                .map_err(|err| self.device_error("cannot open the device", err))?;
            let stream = context.default_stream();
            let blas = CudaBlas::new(stream.clone())
                .map_err(|err| self.device_error("cannot create a cuBLAS handle", err))?;
            let a_device = stream
                .clone_htod(a)
                .map_err(|err| self.device_error("cannot copy A", err))?;
            let b_device = stream
                .clone_htod(&b_transposed)
                .map_err(|err| self.device_error("cannot copy B", err))?;
            let mut c_device = stream
                .alloc_zeros::<i32>(n * n)
                .map_err(|err| self.device_error("cannot allocate C", err))?;
            let alpha: i32 = 1;
            let beta: i32 = 0;
            {
                let (a_pointer, _a_record) = a_device.device_ptr(&stream);
                let (b_pointer, _b_record) = b_device.device_ptr(&stream);
                let (c_pointer, _c_record) = c_device.device_ptr_mut(&stream);
                // SAFETY: the three device buffers hold n·n elements of the types named
                // (i8, i8, i32) and live until the end of this block, after the
                // stream's synchronisation below; alpha and beta are host i32s (the
                // handle's default host pointer mode) that outlive the call; the
                // leading dimensions are n for square n × n matrices.
                unsafe {
                    cudarc::cublas::result::gemm_ex(
                        *blas.handle(),
                        cublasOperation_t::CUBLAS_OP_T,
                        cublasOperation_t::CUBLAS_OP_N,
                        side,
                        side,
                        side,
                        (&alpha as *const i32).cast::<c_void>(),
                        b_pointer as *const c_void,
                        cudaDataType_t::CUDA_R_8I,
                        side,
                        a_pointer as *const c_void,
                        cudaDataType_t::CUDA_R_8I,
                        side,
                        (&beta as *const i32).cast::<c_void>(),
                        c_pointer as *mut c_void,
                        cudaDataType_t::CUDA_R_32I,
                        side,
                        cublasComputeType_t::CUBLAS_COMPUTE_32I,
                        cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
                    )
                }
                .map_err(|err| self.device_error("cublasGemmEx failed", err))?;
            }
            stream
                .synchronize()
                .map_err(|err| self.device_error("the product did not complete", err))?;
            stream
                .clone_dtoh(&c_device)
                .map_err(|err| self.device_error("cannot copy C back", err))
        }
    }
}
