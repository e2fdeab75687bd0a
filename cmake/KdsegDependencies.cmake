# Finds every dependency once and records what was found in KDSEG_HAVE_* variables.

# A CUDA LibTorch's config looks for the NVTX3 headers only in its own source tree, then falls
# back to the nvToolsExt library that CUDA 12.9 and later no longer ship. Point it at the
# toolkit's headers first (no effect with a CPU LibTorch).
if(NOT nvtx3_dir)
  find_path(nvtx3_dir NAMES nvtx3/nvToolsExt.h HINTS ENV CUDA_HOME ENV CUDA_PATH /usr/local/cuda PATH_SUFFIXES include)
endif()
find_package(Torch REQUIRED)
# LibTorch's headers require C++20 from the 2.12-2.14 releases on (they stop with #error under
# C++17). kdseg builds and passes its tests as C++17 and as C++20.
if(KDSEG_DEFAULT_CXX_STANDARD AND Torch_VERSION VERSION_GREATER_EQUAL 2.12)
  set(CMAKE_CXX_STANDARD 20)
endif()
find_package(Threads REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(Boost 1.71 REQUIRED COMPONENTS program_options)
find_package(NIfTI REQUIRED)
find_package(PNG REQUIRED)
find_package(Libdeflate REQUIRED)
find_package(ZLIB REQUIRED)

# LibTorch's imported targets are system headers (no warnings from them); the libraries
# and compile definitions it requires travel with kdseg::torch.
add_library(kdseg_torch INTERFACE)
target_include_directories(kdseg_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
# Projects that use the installed package compile with at least this standard.
target_compile_features(kdseg_torch INTERFACE cxx_std_${CMAKE_CXX_STANDARD})
# LibTorch 2.x wheels link parts of libstdc++ statically and export them (std::filesystem among
# them; pytorch/pytorch#133437). The dynamic linker binds each symbol to the first library that
# defines it, so kdseg's std::filesystem calls reached LibTorch's copy, built against other
# headers, and crashed (remove_all segfaulted). Listing libstdc++ before LibTorch binds them to
# the system's copy, which matches the headers kdseg is compiled with.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND NOT APPLE)
  # One linker flag, not a library item: CMake leaves flags in place and never drops them as
  # implicit libraries of the language.
  target_link_libraries(kdseg_torch INTERFACE "-Wl,--push-state,--no-as-needed,-lstdc++,--pop-state")
endif()
target_link_libraries(kdseg_torch INTERFACE ${TORCH_LIBRARIES})
# LibTorch 2.x ships its own, newer {fmt} headers in its include folder. spdlog must compile
# against the {fmt} it was built with, so that one's headers come before LibTorch's.
if(TARGET fmt::fmt)
  get_target_property(_fmt_includes fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
  if(_fmt_includes)
    target_include_directories(kdseg_torch SYSTEM BEFORE INTERFACE ${_fmt_includes})
  endif()
endif()

set(KDSEG_HAVE_CUDA OFF)
if(TARGET torch_cuda OR "${TORCH_LIBRARIES}" MATCHES "torch_cuda" OR CAFFE2_USE_CUDA)
  set(KDSEG_HAVE_CUDA ON)
  find_package(CUDAToolkit REQUIRED)
endif()

set(KDSEG_HAVE_MPI OFF)
if(KDSEG_WITH_MPI)
  set(MPI_CXX_SKIP_MPICXX ON CACHE BOOL "Use the MPI C API from C++")
  find_package(MPI REQUIRED COMPONENTS CXX)
  set(KDSEG_HAVE_MPI ON)
endif()

set(KDSEG_HAVE_NCCL OFF)
string(TOUPPER "${KDSEG_WITH_NCCL}" _with_nccl)
if(_with_nccl STREQUAL "AUTO")
  if(KDSEG_HAVE_CUDA)
    find_package(NCCL QUIET)
    set(KDSEG_HAVE_NCCL ${NCCL_FOUND})
  endif()
elseif(_with_nccl)
  if(NOT KDSEG_HAVE_CUDA)
    message(FATAL_ERROR "KDSEG_WITH_NCCL=ON needs a LibTorch built with CUDA; this one (${Torch_DIR}) is CPU-only. "
                        "Point CMAKE_PREFIX_PATH at a CUDA LibTorch or set -DKDSEG_WITH_NCCL=OFF.")
  endif()
  if(NOT KDSEG_WITH_MPI)
    message(FATAL_ERROR "KDSEG_WITH_NCCL=ON needs KDSEG_WITH_MPI=ON: NCCL is bootstrapped over MPI.")
  endif()
  find_package(NCCL REQUIRED)
  set(KDSEG_HAVE_NCCL ON)
endif()

# CUDA runtime and NCCL headers for the status-code checks, when the toolkit is present
# even with a CPU LibTorch (compile and link only).
if(NOT KDSEG_HAVE_CUDA)
  find_package(CUDAToolkit QUIET)
  find_package(NCCL QUIET)
endif()

foreach(_v CUDA MPI NCCL)
  if(KDSEG_HAVE_${_v})
    set(KDSEG_HAVE_${_v}_01 1)
  else()
    set(KDSEG_HAVE_${_v}_01 0)
  endif()
endforeach()
message(STATUS "CUDA toolkit: ${CUDAToolkit_FOUND} ${CUDAToolkit_VERSION}; NCCL: ${NCCL_FOUND} ${NCCL_VERSION}")
